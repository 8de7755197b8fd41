"""Still pictures of Sodarace walkers: one walker (PNG) and a contact sheet of many.

For looking at a seed, an archive elite or one frame of a simulation (ELM paper, Lehman
et al. 2022, §4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from jelm.sim.render.draw import draw_terrain, draw_walker, grid_labels, grid_lines, save_image
from jelm.sim.render.layout import bbox, check_size, fit_view, override_joints, read_shape
from jelm.sim.render.style import (
    BACKGROUND,
    GRID_COLOR,
    MIN_EXTENT,
    NOTE_COLOR,
    TEXT_COLOR,
    PathLike,
    load_font,
)
from jelm.sim.terrain import Terrain


def render_walker(
    walker: Any,
    path: PathLike | None = None,
    *,
    size: tuple[int, int] = (480, 360),
    terrain: Terrain | None = None,
    joints: Any = None,
    grid: bool = False,
    label: str | None = None,
) -> Image.Image:
    """Draw one walker as an RGB image (and save it as a PNG if ``path`` is given).

    For looking at a walker: a seed, an archive elite, or one frame of a simulation.
    ``walker`` is a dict in the paper layout or an object with ``to_dict()``; ``joints``
    (array ``(J, 2)``, ``J >= n``; rows past the walker's ``n`` joints are ignored)
    replaces the joint positions, e.g. with a placed or simulated frame. The view is fitted
    to the walker's finite joints with a margin (equal aspect ratio); if ``terrain`` is
    given and its ground lies within half a walker size below the walker, the view is
    stretched to include it. ``grid`` adds faint x grid lines with distance labels;
    ``label`` is written in the top-left corner.
    """
    size = check_size(size)
    shape = read_shape(walker)
    pos = shape.joints if joints is None else override_joints(shape, joints)
    box = bbox(pos) or (-MIN_EXTENT / 2, MIN_EXTENT / 2, -MIN_EXTENT / 2, MIN_EXTENT / 2)
    xmin, xmax, ymin, ymax = box
    if terrain is not None:
        g = np.asarray(terrain.ground, dtype=np.float64)
        if g.ndim == 1:
            gx = float(terrain.x0) + float(terrain.dx) * np.arange(g.size)
            below = float(np.interp(np.linspace(xmin, xmax, 16), gx, g).min())
            reach = 0.5 * max(xmax - xmin, ymax - ymin, MIN_EXTENT)
            if ymin - reach <= below < ymin:
                ymin = below
    view = fit_view(xmin, xmax, ymin, ymax, size)
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    ticks = grid_lines(draw, view) if grid else []
    if terrain is not None:
        draw_terrain(draw, view, terrain)
    if ticks:
        grid_labels(draw, view, ticks)
    skipped = draw_walker(draw, view, shape, pos)
    lines = [label] if label else []
    if len(shape.joints) == 0:
        lines.append("walker has no joints")
    elif skipped:
        lines.append(f"{skipped} non-finite joint(s) not drawn")
    font = load_font(max(8, round(size[1] / 26)))
    for k, text in enumerate(lines):
        color = TEXT_COLOR if (label and k == 0) else NOTE_COLOR
        draw.text((6, 4 + k * (size[1] / 26 + 3)), text, fill=color, font=font)
    if path is not None:
        save_image(image, path, format="PNG")
    return image


def render_grid(
    walkers: Sequence[Any],
    path: PathLike | None,
    *,
    cols: int = 4,
    titles: Sequence[str] | None = None,
    size: tuple[int, int] = (240, 180),
) -> Image.Image:
    """A contact sheet: each walker in its own ``size`` tile with a title, ``cols`` per row.

    For summaries of an archive (the elites of several niches side by side). Titles default
    to the walker's index; long titles are cut to fit. Saved as PNG if ``path`` is given.
    """
    tw, th = check_size(size)
    if len(walkers) == 0:
        raise ValueError("render_grid needs at least one walker")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if titles is not None and len(titles) != len(walkers):
        raise ValueError(f"{len(titles)} titles for {len(walkers)} walkers")
    font = load_font(max(8, round(th / 14)))
    band = math.ceil(max(8, round(th / 14)) * 1.4)
    if th - band < 8:
        raise ValueError(f"tile height {th} leaves no room below the title")
    cols = min(cols, len(walkers))
    nrows = math.ceil(len(walkers) / cols)
    sheet = Image.new("RGB", (cols * tw, nrows * th), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for k, w in enumerate(walkers):
        r, c = divmod(k, cols)
        tile = render_walker(w, size=(tw, th - band))
        sheet.paste(tile, (c * tw, r * th + band))
        title = str(titles[k]) if titles is not None else f"#{k}"
        while len(title) > 1 and draw.textlength(title, font=font) > tw - 8:
            title = title[:-2] + "…"
        draw.text((c * tw + 4, r * th + 2), title, fill=TEXT_COLOR, font=font)
    for c in range(1, cols):
        draw.line([(c * tw, 0), (c * tw, sheet.height)], fill=GRID_COLOR)
    for r in range(1, nrows):
        draw.line([(0, r * th), (sheet.width, r * th)], fill=GRID_COLOR)
    if path is not None:
        save_image(sheet, path, format="PNG")
    return sheet
