"""Five-pointed star. `star_outline` only computes geometry and returns
(points, edges); `assemble` turns any such pair into a walker."""

import math

from jelm.programs.walker_api import walker_creator


def star_outline(tips=5, outer=6.0, inner=2.4):
    pts = []
    for n in range(2 * tips):
        r = outer if n % 2 == 0 else inner
        a = math.pi / 2 + math.pi * n / tips
        pts.append((r * math.cos(a), r * math.sin(a)))
    floor = min(p[1] for p in pts)
    pts = [(px, py - floor) for px, py in pts]
    pts.append((0.0, -floor))  # the middle of the star
    mid = len(pts) - 1
    edges = [(n, (n + 1) % (2 * tips), 0.0, 0.0) for n in range(2 * tips)]
    edges += [(n, mid, 0.0, 0.0) for n in range(1, 2 * tips, 2)]
    edges += [(n, mid, 6.0, (-n / tips) % 1.0) for n in range(0, 2 * tips, 2)]
    return pts, edges


def assemble(points, edges):
    wc = walker_creator()
    handles = [wc.add_joint(px, py) for px, py in points]
    for i, j, amp, ph in edges:
        if amp > 0:
            wc.add_muscle(handles[i], handles[j], amp, ph)
        else:
            wc.add_muscle(handles[i], handles[j])
    return wc.get_walker()


def make_walker():
    points, edges = star_outline()
    return assemble(points, edges)
