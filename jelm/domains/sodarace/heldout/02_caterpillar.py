"""Caterpillar: a low chain of boxes; a wave of squeezes runs from head to tail."""

from jelm.programs.walker_api import walker_creator


def make_walker():
    wc = walker_creator()
    segs = list(range(9))
    xs = [1.8 * i for i in segs]
    belly = []
    back = []
    for i in segs:
        belly.append(wc.add_joint(xs[i], 0.0))
        back.append(wc.add_joint(xs[i] + 0.4, 2.0 + 0.3 * (i % 2)))
    # struts between belly and back keep every ring upright
    for i in segs:
        wc.add_muscle(belly[i], back[i])
    # the back is stiff, the belly contracts in a travelling wave
    for i in segs[:-1]:
        j = i + 1
        wc.add_muscle(back[i], back[j])
        lag = (0.33 * (len(segs) - i)) % 1.0
        wc.add_muscle(belly[i], belly[j], False, 8.0, lag)
        wc.add_muscle(belly[i], back[j], False, 5.0, (lag + 0.25) % 1.0)
    return wc.get_walker()
