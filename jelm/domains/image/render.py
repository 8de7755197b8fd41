"""Pictures of images: one PNG per image and a labelled grid (ELM §3; a run's best images).

Channels in ``[0, 1]`` become 8-bit levels (``round(255 c)``); each image is enlarged by
a whole factor (nearest neighbour) so that it is at least :data:`MIN_TILE` pixels wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["GRID_NAME", "MIN_TILE", "grid", "scale_for", "to_uint8", "write_images"]

#: The smallest width of a written image, in pixels.
MIN_TILE = 128
#: The file name of the grid.
GRID_NAME = "grid.png"
_GAP = 4
_CAPTION = 14


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` image of channels in ``[0, 1]`` as 8-bit levels (clipped; NaN = 0)."""
    levels = np.round(np.clip(np.nan_to_num(np.asarray(image, np.float64)), 0.0, 1.0) * 255)
    return levels.astype(np.uint8)


def scale_for(width: int) -> int:
    """The whole enlargement factor that makes ``width`` at least :data:`MIN_TILE`."""
    return max(1, math.ceil(MIN_TILE / width))


def _enlarged(image: np.ndarray, scale: int) -> Image.Image:
    return Image.fromarray(to_uint8(image).repeat(scale, axis=0).repeat(scale, axis=1), "RGB")


def grid(images: Sequence[np.ndarray], labels: Sequence[str], scale: int) -> Image.Image:
    """The images enlarged ``scale`` times in a near-square grid, row by row, each with its
    label (cut to fit) underneath, on white."""
    n = len(images)
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    h, w = images[0].shape[:2]
    tile_w, tile_h = w * scale, h * scale + _CAPTION
    sheet = Image.new(
        "RGB", (columns * (tile_w + _GAP) + _GAP, rows * (tile_h + _GAP) + _GAP), "white"
    )
    draw = ImageDraw.Draw(sheet)
    chars = max(1, tile_w // 6)
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        left = _GAP + (k % columns) * (tile_w + _GAP)
        top = _GAP + (k // columns) * (tile_h + _GAP)
        sheet.paste(_enlarged(image, scale), (left, top))
        draw.text((left, top + h * scale + 1), label[:chars], fill="black")
    return sheet


def write_images(images: np.ndarray, labels: Sequence[str], out: Path) -> list[Path]:
    """``out/<label>.png`` for each ``(H, W, 3)`` image of ``images`` and ``out/grid.png``
    of them all; the paths written, the grid last. Labels must be distinct file names
    other than ``grid``."""
    images = np.asarray(images)
    if len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    names = [f"{label}.png" for label in labels]
    if len(set(names)) != len(names) or GRID_NAME in names:
        raise ValueError(f"labels must be distinct and not {GRID_NAME[:-4]!r}: {list(labels)}")
    if not names:
        return []
    out.mkdir(parents=True, exist_ok=True)
    scale = scale_for(images.shape[2])
    paths = []
    for image, name in zip(images, names, strict=True):
        path = out / name
        _enlarged(image, scale).save(path)
        paths.append(path)
    grid(list(images), labels, scale).save(out / GRID_NAME)
    return [*paths, out / GRID_NAME]
