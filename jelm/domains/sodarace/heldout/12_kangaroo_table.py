"""Kangaroo: the body is written as a plain-text table and parsed.

Lines starting with `j` are joints (x y); `b` lines are bones (i j); `m` lines are
muscles (i j amplitude phase), with joints numbered in the order they appear.
"""

from jelm.programs.walker_api import walker_creator

BLUEPRINT = """
j 0 6      j 3 7.5    j 5.5 10   j 2 4
j 4 3      j 1.5 0    j 4.5 0    j -4 3
b 0 1      b 1 2      b 0 3      b 1 3
b 3 4      b 4 6      b 3 5      b 0 7
b 1 4
m 0 4 7 0      m 1 5 6 0.25   m 3 6 5 0.5
m 7 3 6 0.75   m 2 0 5 0.4
"""


def make_walker():
    kit = walker_creator()
    tokens = BLUEPRINT.split()
    joints = []
    pos = 0
    while pos < len(tokens):
        kind = tokens[pos]
        if kind == "j":
            joints.append(kit.add_joint(float(tokens[pos + 1]), float(tokens[pos + 2])))
            pos += 3
        elif kind == "b":
            kit.add_muscle(joints[int(tokens[pos + 1])], joints[int(tokens[pos + 2])])
            pos += 3
        else:
            a, b, amp, ph = tokens[pos + 1 : pos + 5]
            kit.add_muscle(joints[int(a)], joints[int(b)], False, float(amp), float(ph))
            pos += 5
    return kit.get_walker()
