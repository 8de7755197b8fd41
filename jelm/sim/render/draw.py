"""Drawing onto a render: the terrain, the distance grid and the walker, and saving.

Terrain as the simulator sees it (ground heightfield filled from the terrain's own grid
and flat beyond it, a ceiling where it is below ``NO_SURFACE / 2``, walls filling their
solid side); bones, muscles (wider with ``|amplitude|``) and joints (ELM paper, Lehman et
al. 2022, §4).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from jelm.sim.render.layout import Shape, View
from jelm.sim.render.style import (
    BONE_COLOR,
    CEILING_COLOR,
    GRID_COLOR,
    GROUND_COLOR,
    GROUND_EDGE_COLOR,
    JOINT_COLOR,
    MAX_AMPLITUDE,
    MUSCLE_COLOR,
    TICK_TEXT_COLOR,
    WALL_COLOR,
    PathLike,
    load_font,
    unit,
)
from jelm.sim.terrain import NO_SURFACE, Terrain


def pt(p: np.ndarray) -> tuple[float, float]:
    return float(p[0]), float(p[1])


def visible_runs(
    x0: float,
    dx: float,
    heights: np.ndarray,
    present: np.ndarray,
    view: View,
) -> list[np.ndarray]:
    """Polylines (world (x, y) arrays) of a heightfield over the view, one per run of grid
    points where the surface is present; extended flat beyond the grid as the simulator
    does."""
    k = heights.size
    xl, xr = view.x_range
    pad = xr - xl
    lo = int(np.clip(math.floor((xl - x0) / dx) - 1, 0, k - 1))
    hi = int(np.clip(math.ceil((xr - x0) / dx) + 1, 0, k - 1))
    idx = np.arange(lo, hi + 1)
    mask = present[idx]
    runs = []
    start = None
    for pos in range(len(idx) + 1):
        on = pos < len(idx) and bool(mask[pos])
        if on and start is None:
            start = pos
        elif not on and start is not None:
            run = idx[start:pos]
            xs = list(x0 + dx * run.astype(np.float64))
            ys = list(heights[run])
            if run[0] == 0 and xl < xs[0]:
                xs.insert(0, xl - pad)
                ys.insert(0, float(heights[0]))
            if run[-1] == k - 1 and xr > xs[-1]:
                xs.append(xr + pad)
                ys.append(float(heights[-1]))
            if len(xs) >= 2:
                runs.append(np.column_stack([xs, ys]))
            start = None
    return runs


def draw_terrain(draw: ImageDraw.ImageDraw, view: View, terrain: Terrain) -> None:
    """Ground (filled), ceiling (filled, where present) and walls (filled solid side)."""
    if not isinstance(terrain, Terrain):
        raise TypeError(f"terrain must be a jelm.sim.terrain.Terrain, got {type(terrain)}")
    ground = np.asarray(terrain.ground, dtype=np.float64)
    if ground.ndim != 1:
        raise ValueError("render takes one terrain, not a stacked batch; index a row first")
    ceiling = np.asarray(terrain.ceiling, dtype=np.float64)
    x0, dx = float(terrain.x0), float(terrain.dx)
    xl, xr = view.x_range
    yb, yt = view.y_range
    far = (yt - yb) + (xr - xl)
    width = max(1, round(unit((view.width, view.height))))

    for run in visible_runs(x0, dx, ground, np.isfinite(ground), view):
        poly = np.vstack([run, [[run[-1, 0], yb - far], [run[0, 0], yb - far]]])
        draw.polygon([pt(p) for p in view.px(poly)], fill=GROUND_COLOR)
        draw.line([pt(p) for p in view.px(run)], fill=GROUND_EDGE_COLOR, width=width)

    present = np.isfinite(ceiling) & (ceiling < NO_SURFACE / 2)
    for run in visible_runs(x0, dx, ceiling, present, view):
        poly = np.vstack([run, [[run[-1, 0], yt + far], [run[0, 0], yt + far]]])
        draw.polygon([pt(p) for p in view.px(poly)], fill=CEILING_COLOR)
        draw.line([pt(p) for p in view.px(run)], fill=GROUND_EDGE_COLOR, width=width)

    for wall, side in ((float(terrain.left_wall), -1.0), (float(terrain.right_wall), 1.0)):
        if not abs(wall) < NO_SURFACE / 2:
            continue
        outer = wall + side * far
        box = view.px(np.array([[min(wall, outer), yt + far], [max(wall, outer), yb - far]]))
        draw.rectangle([pt(box[0]), pt(box[1])], fill=WALL_COLOR)
        edge = view.px(np.array([[wall, yb - far], [wall, yt + far]]))
        draw.line([pt(edge[0]), pt(edge[1])], fill=GROUND_EDGE_COLOR, width=width)


def nice_step(span: float, target: int = 10) -> float:
    """A 1-2-5 step giving about ``target`` grid lines over ``span``."""
    raw = max(span / target, 1e-9)
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1.0, 2.0, 5.0, 10.0) if m * base >= raw)


def grid_lines(draw: ImageDraw.ImageDraw, view: View) -> list[tuple[float, float]]:
    """Faint vertical lines at round x values; returns (pixel x, world x) for the labels."""
    xl, xr = view.x_range
    step = nice_step(xr - xl)
    out = []
    for k in range(math.ceil(xl / step), math.floor(xr / step) + 1):
        x = k * step
        px = float(view.px(np.array([x, view.cy]))[0])
        draw.line([(px, 0), (px, view.height)], fill=GRID_COLOR, width=1)
        out.append((px, x))
    return out


def grid_labels(draw: ImageDraw.ImageDraw, view: View, ticks: list[tuple[float, float]]):
    """Distance labels for the grid lines along the bottom edge (drawn over the terrain)."""
    font = load_font(max(8, round(view.height / 30)))
    for px, x in ticks:
        text = f"{x:g}"
        w = draw.textlength(text, font=font)
        top = view.height - font.size - 3 if hasattr(font, "size") else view.height - 14
        draw.line([(px, view.height - 2), (px, view.height - 6)], fill=TICK_TEXT_COLOR)
        draw.text((px - w / 2, top - 4), text, fill=TICK_TEXT_COLOR, font=font)


def draw_walker(draw: ImageDraw.ImageDraw, view: View, shape: Shape, joints: np.ndarray) -> int:
    """Bones, then muscles (thin to thick), then joints. Returns how many joints were
    skipped for non-finite coordinates (their links are skipped too)."""
    u = unit((view.width, view.height))
    finite = np.all(np.isfinite(joints), axis=1)
    pix = view.px(np.where(finite[:, None], joints, 0.0))
    order = np.lexsort((np.abs(shape.amplitude), shape.muscle))  # bones first, then by |amp|
    bone_w = max(1, round(u))
    for k in order:
        i, j = shape.links[k]
        if not (finite[i] and finite[j]):
            continue
        if shape.muscle[k]:
            strength = min(abs(float(shape.amplitude[k])) / MAX_AMPLITUDE, 1.0)
            width = max(1, round(u * (0.6 + 1.6 * strength)))
            color = MUSCLE_COLOR
        else:
            width, color = bone_w, BONE_COLOR
        draw.line([pt(pix[i]), pt(pix[j])], fill=color, width=width)
    r = max(1.5, 1.6 * u)
    for p in pix[finite]:
        x, y = pt(p)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=JOINT_COLOR)
    return int(np.count_nonzero(~finite))


def save_image(image: Image.Image, path: PathLike, **kwargs: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    image.save(p, **kwargs)
