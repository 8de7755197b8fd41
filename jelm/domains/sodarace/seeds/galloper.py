"""Galloper: a stiff body on two pairs of legs that swing out of phase.

The body is a braced box of bones. Each leg is a thigh and a shin (bones) hanging
from the underside of the body, moved by two muscles: one from the top of the body
to the knee swings the leg, one from the hip to the foot bends the knee. The front
legs move half a cycle away from the back legs, which gives a bounding gallop.
"""

from jelm.programs.walker_api import walker_creator

BODY_LENGTH = 12.0
BODY_SECTIONS = 3  # bays of the body truss
BODY_BOTTOM = 6.0  # height of the underside of the body (the legs' hips)
BODY_TOP = 9.0
KNEE_HEIGHT = 3.0

BACK_PHASE = 0.0  # phases are in cycles (0..1)
FRONT_PHASE = 0.5  # half a cycle away from the back legs
PAIR_OFFSET = 0.9  # the second leg of a pair is a tenth of a cycle off the first
KNEE_OFFSET = 0.75  # each knee muscle is a quarter cycle off its leg's swing muscle
SWING_AMPLITUDE = 7.0
KNEE_AMPLITUDE = 4.0


def add_body(wc):
    """A box truss of bones; returns (top joints, bottom joints) from back to front."""
    step = BODY_LENGTH / BODY_SECTIONS
    top = [wc.add_joint(k * step, BODY_TOP) for k in range(BODY_SECTIONS + 1)]
    bottom = [wc.add_joint(k * step, BODY_BOTTOM) for k in range(BODY_SECTIONS + 1)]
    for k in range(BODY_SECTIONS):
        wc.add_muscle(top[k], top[k + 1])
        wc.add_muscle(bottom[k], bottom[k + 1])
        # alternate the diagonal brace so the truss is symmetric
        if k % 2 == 0:
            wc.add_muscle(bottom[k], top[k + 1])
        else:
            wc.add_muscle(top[k], bottom[k + 1])
    for k in range(BODY_SECTIONS + 1):
        wc.add_muscle(top[k], bottom[k])
    return top, bottom


def add_leg(wc, shoulder, hip, phase):
    """A two-bone leg under `hip`, swung from `shoulder` (the body joint above it)."""
    knee = wc.add_joint(hip[0] + 1.0, KNEE_HEIGHT)
    foot = wc.add_joint(hip[0], 0.0)
    wc.add_muscle(hip, knee)  # thigh
    wc.add_muscle(knee, foot)  # shin
    # swing: pulling the knee towards the shoulder moves the leg back and forth
    wc.add_muscle(shoulder, knee, False, SWING_AMPLITUDE, phase % 1.0)
    # knee: bending the leg a quarter cycle off the swing lifts the foot during one
    # half of the swing, so the leg pushes on the ground in only one direction
    wc.add_muscle(hip, foot, False, KNEE_AMPLITUDE, (phase + KNEE_OFFSET) % 1.0)
    return foot


def make_walker():
    wc = walker_creator()
    top, bottom = add_body(wc)

    # back legs under the first two hips, front legs under the last two
    add_leg(wc, top[0], bottom[0], BACK_PHASE)
    add_leg(wc, top[1], bottom[1], BACK_PHASE + PAIR_OFFSET)
    add_leg(wc, top[-2], bottom[-2], FRONT_PHASE)
    add_leg(wc, top[-1], bottom[-1], FRONT_PHASE + PAIR_OFFSET)

    return wc.get_walker()
