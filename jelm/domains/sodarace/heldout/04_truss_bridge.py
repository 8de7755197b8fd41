"""Warren truss lying on its lower chord; the chord's members pulse one after another."""

from jelm.programs.walker_api import walker_creator

BAYS = 5
SPAN = 3.0
RISE = 2.6


def make_walker():
    wc = walker_creator()
    lower = [wc.add_joint(k * SPAN, 0.0) for k in range(BAYS + 1)]
    upper = [wc.add_joint((k + 0.5) * SPAN, RISE) for k in range(BAYS)]
    # every member as (first joint, second joint, amplitude, phase); amplitude 0 = bone
    members = [(upper[k], upper[k + 1], 0.0, 0.0) for k in range(BAYS - 1)]
    members += [(lower[k], upper[k], 0.0, 0.0) for k in range(BAYS)]
    members += [(upper[k], lower[k + 1], 0.0, 0.0) for k in range(BAYS)]
    members += [(lower[k], lower[k + 1], 9.0, 0.2 * (BAYS - k) % 1.0) for k in range(BAYS)]
    for first, second, amplitude, phase in members:
        if amplitude:
            wc.add_muscle(first, second, False, amplitude, phase)
        else:
            wc.add_muscle(first, second)
    return wc.get_walker()
