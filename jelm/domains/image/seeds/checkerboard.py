"""Checkerboard: green and white squares, four pixels wide."""

SIZE = 32


def draw():
    """Return the picture: SIZE rows of SIZE pixels, each [r, g, b] in [0, 1]."""
    dark = [0.1, 0.5, 0.2]
    light = [0.95, 0.95, 0.9]
    side = 4
    pic = []
    for y in range(SIZE):
        row = []
        for x in range(SIZE):
            if (x // side + y // side) % 2 == 0:
                row.append(list(dark))
            else:
                row.append(list(light))
        pic.append(row)
    return pic
