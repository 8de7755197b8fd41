"""CPPN (mutable): a body plan drawn by small, separately editable functions.

Joints are placed on a grid wherever `body_shape` is positive (the default carves an
arch out of the underside, leaving legs at both ends). Neighbouring joints are
linked when `link_strength` is positive; `muscle_amplitude` and `muscle_phase`
decide how each link moves. Each of these is a little compositional
pattern-producing network built from the helper nodes below (`gaussian`,
`sigmoid`, `wave`, ...); any of them can be rewritten, rewired or given new nodes.
"""

import math

from jelm.programs.walker_api import walker_creator

COLUMNS = 7
ROWS = 5
SPACING = 2.0
MAX_AMPLITUDE = 7.0  # amplitude of a muscle whose output is +-1
BONE_BELOW = 0.75  # |muscle_amplitude| below this gives a passive bone


# --- node functions -------------------------------------------------------------


def gaussian(z):
    return math.exp(-z * z)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def wave(z):
    return math.sin(math.pi * z)


# --- hidden nodes (inputs are coordinates in [-1, 1]) ---------------------------


def hidden_stripes(x, y):
    return wave(1.5 * x + 0.5 * y)


def hidden_blob(x, y):
    return gaussian(1.2 * x) * gaussian(0.8 * (y - 0.5))


def hidden_gradient(x, y):
    return math.tanh(x - 0.5 * y)


# --- output nodes ---------------------------------------------------------------


def body_shape(x, y):
    """Positive where a joint exists: everything except an arch under the middle."""
    arch = gaussian(1.6 * x) * sigmoid(-4.0 * (y + 0.2))
    return 0.5 - arch


def link_strength(x, y, dx, dy):
    """Positive where two neighbouring joints are linked; (dx, dy) is the direction."""
    diagonal = 1.0 if dx != 0 and dy != 0 else 0.0
    return 0.6 + 0.5 * hidden_blob(x, y) - 0.8 * diagonal * hidden_stripes(x, y)


def muscle_amplitude(x, y):
    """In [-1, 1]; a small magnitude makes a passive bone."""
    return math.tanh(2.0 * hidden_stripes(x, y) - 1.0 * hidden_blob(x, y))


def muscle_phase(x, y):
    """In cycles, [0, 1)."""
    return (0.5 + 0.5 * hidden_gradient(x, y) + 0.25 * hidden_stripes(x, y)) % 1.0


# --- building the walker ------------------------------------------------------------


def to_unit(col, row):
    """Grid position -> coordinates in [-1, 1]."""
    return 2 * col / (COLUMNS - 1) - 1, 2 * row / (ROWS - 1) - 1


def make_walker():
    wc = walker_creator()

    joints = {}
    for row in range(ROWS):
        for col in range(COLUMNS):
            x, y = to_unit(col, row)
            if body_shape(x, y) > 0:
                joints[col, row] = wc.add_joint(col * SPACING, row * SPACING)

    for (col, row), joint in joints.items():
        for dcol, drow in ((1, 0), (0, 1), (1, 1), (-1, 1)):
            other = joints.get((col + dcol, row + drow))
            if other is None:
                continue
            x0, y0 = to_unit(col, row)
            x1, y1 = to_unit(col + dcol, row + drow)
            x, y = (x0 + x1) / 2, (y0 + y1) / 2
            if link_strength(x, y, dcol, drow) <= 0:
                continue
            amplitude = muscle_amplitude(x, y)
            if abs(amplitude) < BONE_BELOW:
                wc.add_muscle(joint, other)
            else:
                wc.add_muscle(joint, other, False, MAX_AMPLITUDE * amplitude, muscle_phase(x, y))

    return wc.get_walker()
