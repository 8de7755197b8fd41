"""Runner: a long body carried by eight legs, moved by a travelling wave.

The body is a two-row truss of bones. A leg hangs under every joint of its
underside. Each leg has a swing muscle (shoulder to knee) and a lift muscle (hip to
foot) a quarter cycle apart, and the phase steps by a fixed fraction of a cycle
from one leg to the next, so a wave of steps runs along the body like a millipede's.
"""

from jelm.programs.walker_api import walker_creator

N_SEGMENTS = 8  # legs, one per segment of the body
SEGMENT_LENGTH = 2.5
HIP_HEIGHT = 4.0
SHOULDER_HEIGHT = 6.0
KNEE_HEIGHT = 2.0

WAVE = 0.25  # phase step (in cycles) from one leg to the next
LIFT_OFFSET = 0.75  # lift muscle's phase relative to its leg's swing muscle
SWING_AMPLITUDE = 6.0
LIFT_AMPLITUDE = 4.0


def add_spine(wc, x_start):
    """Two rows of joints braced into a truss; returns (shoulders, hips)."""
    shoulders = []
    hips = []
    for k in range(N_SEGMENTS):
        x = x_start + k * SEGMENT_LENGTH
        shoulders.append(wc.add_joint(x, SHOULDER_HEIGHT))
        hips.append(wc.add_joint(x, HIP_HEIGHT))
    for k in range(N_SEGMENTS):
        wc.add_muscle(shoulders[k], hips[k])
        if k + 1 < N_SEGMENTS:
            wc.add_muscle(shoulders[k], shoulders[k + 1])
            wc.add_muscle(hips[k], hips[k + 1])
            wc.add_muscle(hips[k], shoulders[k + 1])
    return shoulders, hips


def add_leg(wc, shoulder, hip, phase):
    """A knee-forward leg under `hip` with a swing and a lift muscle."""
    knee = wc.add_joint(hip[0] + 0.8, KNEE_HEIGHT)
    foot = wc.add_joint(hip[0] - 0.3, 0.0)
    wc.add_muscle(hip, knee)  # thigh (bone)
    wc.add_muscle(knee, foot)  # shin (bone)
    wc.add_muscle(shoulder, knee, False, SWING_AMPLITUDE, phase % 1.0)
    wc.add_muscle(hip, foot, False, LIFT_AMPLITUDE, (phase + LIFT_OFFSET) % 1.0)


def make_walker():
    wc = walker_creator()
    x_start = -SEGMENT_LENGTH * (N_SEGMENTS - 1) / 2  # centre the body on x = 0
    shoulders, hips = add_spine(wc, x_start)

    # the phase steps by WAVE from the front leg (largest x) to the back
    for k in range(N_SEGMENTS):
        phase = (N_SEGMENTS - 1 - k) * WAVE
        add_leg(wc, shoulders[k], hips[k], phase)

    return wc.get_walker()
