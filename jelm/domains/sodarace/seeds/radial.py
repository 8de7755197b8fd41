"""Radial: a ring of joints around a centre joint.

Neighbouring rim joints are joined by bones; every spoke from the centre to the rim
is a muscle whose phase follows its angle around the circle, so a wave of
contraction travels around the body.
"""

import math

from jelm.programs.walker_api import walker_creator

N_RIM = 8  # joints on the rim (the centre links to all of them: keep it <= 10)
RADIUS = 6.0  # distance from the centre to the rim
AMPLITUDE = 5.0  # how strongly each spoke contracts (up to 10)
DIRECTION = -1  # which way the wave runs around the ring (+1 or -1)


def make_walker():
    wc = walker_creator()

    # The centre sits one radius above the ground, so the lowest rim joint touches it.
    cx, cy = 0.0, RADIUS
    center = wc.add_joint(cx, cy)

    rim = []
    for k in range(N_RIM):
        angle = 2 * math.pi * k / N_RIM
        rim.append(wc.add_joint(cx + RADIUS * math.cos(angle), cy + RADIUS * math.sin(angle)))

    # Rim: bones between neighbours close the ring.
    for k in range(N_RIM):
        wc.add_muscle(rim[k], rim[(k + 1) % N_RIM])

    # Spokes: muscles, phased by their position around the circle (phase in cycles).
    for k in range(N_RIM):
        phase = (DIRECTION * k / N_RIM) % 1.0
        wc.add_muscle(center, rim[k], False, AMPLITUDE, phase)

    return wc.get_walker()
