"""CPPN (fixed): a small pattern-producing function decides the body plan.

Joints sit on a regular grid. For every pair of neighbouring joints (across, up and
the two diagonals) a compositional pattern-producing network -- written out below
as plain math with fixed structure -- is queried at the middle of the pair. Its
three outputs say whether the pair is linked, how strongly the link pulls (a small
value makes a passive bone) and when (the phase). The structure of `cppn` is fixed;
its numbers are the thing to change.
"""

import math

from jelm.programs.walker_api import walker_creator

COLUMNS = 5
ROWS = 4
SPACING = 2.5
LINK_THRESHOLD = -0.2  # link a pair when the link output is above this
BONE_BELOW = 0.75  # |amplitude output| below this gives a passive bone
MAX_AMPLITUDE = 8.0  # amplitude of a muscle whose output is +-1


def cppn(x, y, dx, dy):
    """Map a link's midpoint (x, y in [-1, 1]) and direction (dx, dy) to
    (link, amplitude, phase), each in [-1, 1]."""
    h1 = math.sin(2.1 * x + 0.6 * y + 0.3)
    h2 = math.exp(-((1.4 * y + 0.5) ** 2))
    h3 = math.tanh(1.2 * x * y - 0.7 * dx + 0.4)
    h4 = math.cos(1.7 * dy + 0.9 * x)
    link = math.tanh(1.3 * h1 + 0.9 * h2 + 1.1 * h4 - 0.6 * h3 + 0.2)
    amplitude = math.tanh(1.6 * h1 - 1.1 * h2 + 0.8 * h3)
    phase = math.sin(2.5 * h1 + 1.8 * h3 - 0.9 * h4)
    return link, amplitude, phase


def make_walker():
    wc = walker_creator()

    # a COLUMNS x ROWS grid of joints, standing on y = 0
    grid = {}
    for row in range(ROWS):
        for col in range(COLUMNS):
            grid[col, row] = wc.add_joint(col * SPACING, row * SPACING)

    def normalised(col, row):
        """Grid position -> CPPN input coordinates in [-1, 1]."""
        return 2 * col / (COLUMNS - 1) - 1, 2 * row / (ROWS - 1) - 1

    # candidate links: right, up, up-right and up-left neighbours
    for (col, row), joint in grid.items():
        for dcol, drow in ((1, 0), (0, 1), (1, 1), (-1, 1)):
            other = grid.get((col + dcol, row + drow))
            if other is None:
                continue
            x0, y0 = normalised(col, row)
            x1, y1 = normalised(col + dcol, row + drow)
            link, amplitude, phase = cppn((x0 + x1) / 2, (y0 + y1) / 2, dcol, drow)
            if link <= LINK_THRESHOLD:
                continue
            if abs(amplitude) < BONE_BELOW:
                wc.add_muscle(joint, other)
            else:
                # phase output in [-1, 1] -> phase in cycles [0, 1]
                wc.add_muscle(joint, other, False, MAX_AMPLITUDE * amplitude, (phase + 1) / 2)

    return wc.get_walker()
