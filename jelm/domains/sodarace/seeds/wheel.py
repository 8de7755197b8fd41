"""Wheel: a rigid hub inside a rim, joined by spokes that are muscles.

The hub (a centre joint and a small inner ring) is held together by bones. Each rim
joint hangs from the two nearest hub joints by muscles. The muscles fire in turn
around the wheel, so a bulge travels round the rim and the wheel rolls; DIRECTION
picks which way the wave (and so the wheel) goes.
"""

import math

from jelm.programs.walker_api import walker_creator

N_HUB = 6  # joints of the inner ring
N_RIM = 12  # joints of the outer rim (twice the hub, so each hub joint serves two)
HUB_RADIUS = 2.0
RIM_RADIUS = 6.0
AMPLITUDE = 6.0
DIRECTION = -1  # -1 or +1: which way the wave of contraction runs round the rim


def ring(wc, cx, cy, radius, n):
    """Add n joints evenly spaced on a circle and return them in angle order."""
    joints = []
    for k in range(n):
        angle = 2 * math.pi * k / n
        joints.append(wc.add_joint(cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return joints


def close_ring(wc, joints):
    """Join each joint of a ring to the next with a bone."""
    for k in range(len(joints)):
        wc.add_muscle(joints[k], joints[(k + 1) % len(joints)])


def make_walker():
    wc = walker_creator()
    cx, cy = 0.0, RIM_RADIUS  # the wheel stands on the ground

    # Rigid hub: a centre joint with bones to an inner ring.
    center = wc.add_joint(cx, cy)
    hub = ring(wc, cx, cy, HUB_RADIUS, N_HUB)
    close_ring(wc, hub)
    for joint in hub:
        wc.add_muscle(center, joint)

    # The rim: a ring of bones.
    rim = ring(wc, cx, cy, RIM_RADIUS, N_RIM)
    close_ring(wc, rim)

    # Spokes: each rim joint is held by the two hub joints nearest to it.
    # The phase (in cycles) follows the rim joint's angle, so contraction runs round the rim.
    for k in range(N_RIM):
        phase = (DIRECTION * k / N_RIM) % 1.0
        first = hub[(k // 2) % N_HUB]
        second = hub[(k // 2 + 1) % N_HUB] if k % 2 else hub[(k // 2 - 1) % N_HUB]
        wc.add_muscle(first, rim[k], False, AMPLITUDE, phase)
        wc.add_muscle(second, rim[k], False, AMPLITUDE, phase)

    return wc.get_walker()
