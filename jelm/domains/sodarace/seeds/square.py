"""Square: a square body with a joint in its centre.

The four sides and one spoke are passive bones; the other three spokes are muscles
that pull the centre around out of phase, so the body rocks and shuffles forward.
"""

from jelm.programs.walker_api import walker_creator


def make_square(wc, x0, y0, side):
    """Add the four corners of a square with its lower-left corner at (x0, y0)."""
    bottom_left = wc.add_joint(x0, y0)
    top_left = wc.add_joint(x0, y0 + side)
    top_right = wc.add_joint(x0 + side, y0 + side)
    bottom_right = wc.add_joint(x0 + side, y0)
    return [bottom_left, top_left, top_right, bottom_right]


def make_walker():
    wc = walker_creator()

    # The body is a 10 x 10 square resting on the ground, with a joint in its centre.
    corners = make_square(wc, 0, 0, 10)
    center = wc.add_joint(5, 5)

    # The sides are passive bones.
    for k in range(len(corners)):
        wc.add_muscle(corners[k], corners[(k + 1) % len(corners)])

    # One spoke (to the bottom-left corner) is a bone that keeps the body in shape.
    wc.add_muscle(corners[0], center)

    # The other spokes are active muscles: (passive, amplitude, phase in cycles).
    # The upper-left spoke pulls half a cycle away from the two right-hand spokes, so the
    # body shears back and forth and shuffles forward (amplitudes and phases chosen by
    # scoring all 4096 combinations of a 4-level grid in jelm.sim).
    wc.add_muscle(corners[1], center, False, 10.0, 0.0)
    wc.add_muscle(corners[2], center, False, 10.0, 0.5)
    wc.add_muscle(corners[3], center, False, 10.0, 0.5)

    return wc.get_walker()
