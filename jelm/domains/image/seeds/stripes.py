"""Stripes: horizontal bands of red, white and blue, four pixels tall."""

SIZE = 32


def draw():
    """Return the picture: SIZE rows of SIZE pixels, each [r, g, b] in [0, 1]."""
    colours = [[0.8, 0.1, 0.1], [1.0, 1.0, 1.0], [0.1, 0.2, 0.7]]
    height = 4
    pic = []
    for y in range(SIZE):
        colour = colours[(y // height) % len(colours)]
        pic.append([list(colour) for x in range(SIZE)])
    return pic
