"""How renders of Sodarace walkers (ELM §4) look: colours, sizes, fonts, line widths.

The colours are module constants so that tests and callers can find them in an image
(lines are not antialiased, so every drawn colour appears exactly in a PNG and survives
GIF palette quantisation). The conventions are in ``jelm/sim/README.md``, "Renders".
"""

from __future__ import annotations

import functools
import os

from PIL import ImageFont

RGB = tuple[int, int, int]

BACKGROUND: RGB = (250, 250, 247)
GRID_COLOR: RGB = (222, 226, 233)
TICK_TEXT_COLOR: RGB = (95, 100, 110)
BONE_COLOR: RGB = (64, 64, 64)
MUSCLE_COLOR: RGB = (214, 39, 40)
JOINT_COLOR: RGB = (31, 90, 180)
GROUND_COLOR: RGB = (199, 180, 141)
GROUND_EDGE_COLOR: RGB = (122, 101, 68)
CEILING_COLOR: RGB = (112, 118, 133)
WALL_COLOR: RGB = CEILING_COLOR
TEXT_COLOR: RGB = (20, 20, 20)
NOTE_COLOR: RGB = (190, 90, 0)

#: Smallest extent (world units) a view is fitted to, so a one-joint walker still renders.
MIN_EXTENT = 2.0
#: Fraction of the image left free on each side when a view is fitted.
MARGIN = 0.12
#: The paper's amplitude cap; a muscle of this |amplitude| is drawn at full width.
MAX_AMPLITUDE = 10.0

PathLike = str | os.PathLike[str]


@functools.lru_cache(maxsize=16)
def load_font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``px`` pixels (the bitmap default without FreeType)."""
    try:
        return ImageFont.load_default(size=px)
    except Exception:  # no FreeType in this Pillow build
        return ImageFont.load_default()


def unit(size: tuple[int, int]) -> float:
    """A length in pixels that scales line widths and radii with the image size."""
    return max(1.0, min(size) / 180.0)
