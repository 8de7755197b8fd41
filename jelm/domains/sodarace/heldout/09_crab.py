"""Crab: a flat shell with a pair of jointed legs splayed out on each side.
Joints live in a dict keyed by name; links are listed by those names."""

from jelm.programs.walker_api import walker_creator

LAYOUT = {
    "shell_l": (-3.0, 3.5), "shell_r": (3.0, 3.5), "dome": (0.0, 5.5), "belly": (0.0, 2.5),
    "elbow_l1": (-5.5, 4.5), "claw_l1": (-7.5, 0.0),
    "elbow_l2": (-4.0, 2.0), "claw_l2": (-4.5, 0.0),
    "elbow_r1": (5.5, 4.5), "claw_r1": (7.5, 0.0),
    "elbow_r2": (4.0, 2.0), "claw_r2": (4.5, 0.0),
}  # fmt: skip

FRAME = [
    ("shell_l", "dome"), ("dome", "shell_r"), ("shell_r", "belly"), ("belly", "shell_l"),
    ("dome", "belly"),
    ("shell_l", "elbow_l1"), ("elbow_l1", "claw_l1"), ("shell_l", "elbow_l2"),
    ("elbow_l2", "claw_l2"), ("shell_r", "elbow_r1"), ("elbow_r1", "claw_r1"),
    ("shell_r", "elbow_r2"), ("elbow_r2", "claw_r2"),
]  # fmt: skip

# (from, to, amplitude, phase in cycles)
DRIVES = [
    ("dome", "elbow_l1", 6.0, 0.0), ("belly", "claw_l1", 5.0, 0.25),
    ("belly", "elbow_l2", 6.0, 0.5), ("shell_l", "claw_l2", 4.0, 0.75),
    ("dome", "elbow_r1", 6.0, 0.1), ("belly", "claw_r1", 5.0, 0.35),
    ("belly", "elbow_r2", 6.0, 0.6), ("shell_r", "claw_r2", 4.0, 0.85),
]  # fmt: skip


def make_walker():
    wc = walker_creator()
    joint = {name: wc.add_joint(x, y) for name, (x, y) in LAYOUT.items()}
    for a, b in FRAME:
        wc.add_muscle(joint[a], joint[b])
    for a, b, amplitude, phase in DRIVES:
        wc.add_muscle(joint[a], joint[b], False, amplitude, phase)
    return wc.get_walker()
