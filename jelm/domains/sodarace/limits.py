"""What a valid Sodarace walker must respect (ELM, arXiv 2206.08896v1, §4).

The paper's limits (links per joint, muscle amplitude, joint spacing) and jelm's hard caps
(the padded size of a simulator batch, a coordinate box). Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "WalkerLimits"]


@dataclass(frozen=True)
class WalkerLimits:
    """What a valid walker must respect.

    Attributes:
        max_links_per_joint: most links touching one joint (the paper's 10).
        max_amplitude: largest ``|amplitude|`` of a muscle (the paper's 10). Bones are
            exempt: they store an amplitude but never use it.
        min_joint_distance: smallest allowed distance between two joints; a distance equal
            to it is allowed. 0 or less turns the check off.
        max_joints: most joints (the simulator's padded joint count).
        max_links: most links (the simulator's padded link count).
        max_abs_coordinate: every coordinate must satisfy ``|x|, |y| <= max_abs_coordinate``.
    """

    max_links_per_joint: int = 10
    max_amplitude: float = 10.0
    min_joint_distance: float = 0.1
    max_joints: int = 64
    max_links: int = 256
    max_abs_coordinate: float = 100.0


DEFAULT_LIMITS = WalkerLimits()
