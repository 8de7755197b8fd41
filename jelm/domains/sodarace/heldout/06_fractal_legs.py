"""Fractal legs: a recursive binary tree hangs from a crossbar, its leaves are feet.

Each fork is a triangle: two bones to the children and a muscle between them that
opens and shuts the fork. Each fork is offset in phase from its parent, so a
ripple runs down to the feet.
"""

from jelm.programs.walker_api import walker_creator

DROP = 3.0  # height lost at each level of the tree


def fork(wc, node, spread, level, timing):
    """Hang two children under `node`, then a smaller fork under each child."""
    if level == 0:
        return
    x, y = node
    kids = [wc.add_joint(x - spread, y - DROP), wc.add_joint(x + spread, y - DROP)]
    for kid in kids:
        wc.add_muscle(node, kid)
    wc.add_muscle(kids[0], kids[1], False, 6.0, timing % 1.0)
    for side, kid in enumerate(kids):
        fork(wc, kid, spread / 2, level - 1, timing + 0.3 + 0.5 * side)


def make_walker():
    wc = walker_creator()
    depth = 2
    left = wc.add_joint(-3.0, DROP * depth)
    right = wc.add_joint(3.0, DROP * depth)
    crest = wc.add_joint(0.0, DROP * depth + 2.0)
    wc.add_muscle(left, right)
    wc.add_muscle(left, crest)
    wc.add_muscle(right, crest)
    fork(wc, left, 2.4, depth, 0.0)
    fork(wc, right, 2.4, depth, 0.5)
    return wc.get_walker()
