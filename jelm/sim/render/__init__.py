"""Pictures of Sodarace walkers: a still (PNG), a rollout (animated GIF), a contact sheet.

Walkers in the ELM paper's dict layout (Lehman et al. 2022, appendix "Sodarace") or any
object with ``to_dict()``. Only Pillow and NumPy are used, so ``jelm.sim`` stays light to
import. The drawing conventions (y up, equal aspect, colours, degenerate input) are in
``jelm/sim/README.md``, "Renders".
"""

from jelm.sim.render.rollout import render_rollout
from jelm.sim.render.still import render_grid, render_walker
from jelm.sim.render.style import (
    BACKGROUND,
    BONE_COLOR,
    CEILING_COLOR,
    GRID_COLOR,
    GROUND_COLOR,
    GROUND_EDGE_COLOR,
    JOINT_COLOR,
    MARGIN,
    MAX_AMPLITUDE,
    MIN_EXTENT,
    MUSCLE_COLOR,
    NOTE_COLOR,
    TEXT_COLOR,
    TICK_TEXT_COLOR,
    WALL_COLOR,
)

__all__ = [
    "BACKGROUND",
    "BONE_COLOR",
    "CEILING_COLOR",
    "GRID_COLOR",
    "GROUND_COLOR",
    "GROUND_EDGE_COLOR",
    "JOINT_COLOR",
    "MARGIN",
    "MAX_AMPLITUDE",
    "MIN_EXTENT",
    "MUSCLE_COLOR",
    "NOTE_COLOR",
    "TEXT_COLOR",
    "TICK_TEXT_COLOR",
    "WALL_COLOR",
    "render_grid",
    "render_rollout",
    "render_walker",
]
