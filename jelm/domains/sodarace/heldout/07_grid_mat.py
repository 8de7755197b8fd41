"""Mat: a lattice of joints made with nested comprehensions. Rungs are bones,
rails and cross braces are muscles whose phase drifts along the mat."""

from jelm.programs.walker_api import walker_creator


def make_walker():
    wc = walker_creator()
    cols, rows, pitch = 6, 3, 2.2
    node = [[wc.add_joint(c * pitch, r * pitch) for c in range(cols)] for r in range(rows)]
    rungs = [(node[r][c], node[r + 1][c]) for r in range(rows - 1) for c in range(cols)]
    rails = [(node[r][c], node[r][c + 1], r, c) for r in range(rows) for c in range(cols - 1)]
    braces = [(node[r][c], node[r + 1][c + 1], c) for r in range(rows - 1) for c in range(cols - 1)]
    for a, b in rungs:
        wc.add_muscle(a, b)
    for a, b, r, c in rails:
        wc.add_muscle(a, b, False, 4.0 + 2.0 * (r == 0), (0.9 - 0.2 * c + 0.5 * r) % 1.0)
    for a, b, c in braces:
        wc.add_muscle(a, b, False, 7.0, (0.65 - 0.2 * c) % 1.0)
    return wc.get_walker()
