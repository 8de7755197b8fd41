"""Inchworm: an arched body between a rear sucker and a front sucker.

# Each foot is a small triangle so it has two ground contacts.
# The arch is a chain of bones with a muscle under every pair of links,
# and the muscles near the tail fire before those near the head.
"""

from jelm.programs.walker_api import walker_creator


def make_walker():
    wc = walker_creator()

    # --- the arch: seven joints on a hump, highest in the middle --------------
    hump = [(0.0, 1.0), (1.5, 3.0), (3.5, 4.5), (6.0, 5.0), (8.5, 4.5), (10.5, 3.0), (12.0, 1.0)]
    arch = [wc.add_joint(x, y) for x, y in hump]

    # --- the two suckers: a pad of two ground joints under each end ----------
    tail_pad = [wc.add_joint(-1.0, 0.0), wc.add_joint(1.0, 0.0)]
    head_pad = [wc.add_joint(11.0, 0.0), wc.add_joint(13.0, 0.0)]

    # bones: the spine of the arch ...
    for k in range(1, len(arch)):
        wc.add_muscle(arch[k - 1], arch[k])
    # ... and each pad braced to its end of the arch (a rigid triangle)
    for pad, end in ((tail_pad, arch[0]), (head_pad, arch[-1])):
        wc.add_muscle(pad[0], pad[1])
        wc.add_muscle(pad[0], end)
        wc.add_muscle(pad[1], end)

    # muscles: a chord under each bend of the arch; contraction curls the body
    # amplitude 8 out of 10; phase in cycles, later towards the head
    for k in range(len(arch) - 2):
        wc.add_muscle(arch[k], arch[k + 2], False, 8.0, 0.12 * k)

    # one long muscle from tail pad to head pad pulls the two feet together
    wc.add_muscle(tail_pad[1], head_pad[0], False, 9.0, 0.3)

    return wc.get_walker()
