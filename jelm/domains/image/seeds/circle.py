"""Circle: a yellow disc in the middle of a black picture (OpenELM's image seed)."""

import math

SIZE = 32


def draw():
    """Return the picture: SIZE rows of SIZE pixels, each [r, g, b] in [0, 1]."""
    pic = [[[0.0, 0.0, 0.0] for x in range(SIZE)] for y in range(SIZE)]
    centre = SIZE / 2
    radius = 10 * SIZE / 32
    for y in range(SIZE):
        for x in range(SIZE):
            if math.hypot(x - centre, y - centre) <= radius:
                pic[y][x] = [1.0, 1.0, 0.0]
    return pic
