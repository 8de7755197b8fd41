"""Gradient: a sky that fades from dark blue at the top to orange at the bottom."""

SIZE = 32


def mix(a, b, t):
    """The colour a fraction t of the way from colour a to colour b."""
    return [a[k] + (b[k] - a[k]) * t for k in range(3)]


def draw():
    """Return the picture: SIZE rows of SIZE pixels, each [r, g, b] in [0, 1]."""
    top = [0.1, 0.1, 0.4]
    bottom = [0.9, 0.5, 0.2]
    pic = []
    for y in range(SIZE):
        colour = mix(top, bottom, (y + 0.5) / SIZE)
        pic.append([list(colour) for x in range(SIZE)])
    return pic
