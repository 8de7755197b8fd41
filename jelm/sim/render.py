"""Pictures of Sodarace walkers: a still (PNG), a rollout (animated GIF), a contact sheet.

Walkers come in the paper's dict layout (ELM paper, Lehman et al. 2022, appendix
"Sodarace")::

    {"joints": [[x, y], ...],
     "muscles": [[i, j, {"type": "distance" | "muscle", "amplitude": a, "phase": p}], ...]}

or as any object with ``to_dict()`` (e.g. ``jelm.domains.sodarace.api.Walker``). Only Pillow
and NumPy are used, so ``jelm.sim`` stays light to import (no matplotlib).

Conventions (choices written down here, as DESIGN.md asks):

* World y is up; one world unit has the same size in x and y (no anisotropic scaling).
* Passive bones are dark grey lines; muscles are red lines whose width grows with
  ``|amplitude| / 10`` (10 is the paper's amplitude cap); joints are small blue discs.
  The colours are module constants (``BONE_COLOR`` ...) so tests and callers can find them.
* Terrain: the ground heightfield is drawn filled (brown) from the terrain's own grid
  (``x0 + k * dx``, flat beyond the grid, as the simulator sees it); a ceiling is drawn
  filled (slate) where it is below ``NO_SURFACE / 2``; walls likewise fill the solid side.
* Degenerate input never crashes a render: links with bad indices and joints with
  non-finite coordinates are skipped (and a rollout notes NaN joints on the frame and with a
  ``RuntimeWarning``); a walker smaller than ``MIN_EXTENT`` units is shown at that size.
  An empty trajectory is an error (``ValueError``): there is nothing to animate.
* The centre of mass used by :func:`render_rollout` is the mean of the walker's finite joint
  positions (equal joint masses); it is a camera and label aid, not the fitness.
* Lines are not antialiased, so every drawn colour appears exactly in the PNG (and survives
  GIF palette quantisation); text is antialiased.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jelm.sim.terrain import NO_SURFACE, Terrain
from jelm.sim.walker import _as_dict

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


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Shape:
    """A walker's drawable parts: joint positions and links (lenient, never raises on data)."""

    joints: np.ndarray  # (n, 2) float64, NaN where a joint was unreadable
    links: np.ndarray  # (m, 2) int64, indices checked to lie in 0..n-1
    muscle: np.ndarray  # (m,) bool
    amplitude: np.ndarray  # (m,) float64, 0 for bones


def _shape(walker: Any) -> _Shape:
    """Read a walker dict (or ``to_dict()`` object) for drawing; skip malformed links."""
    d = _as_dict(walker)
    try:
        joints_in = d["joints"]
        links_in = d["muscles"]
    except (KeyError, TypeError):
        raise ValueError("walker dict needs 'joints' and 'muscles'") from None
    n = len(joints_in)
    joints = np.full((n, 2), np.nan, dtype=np.float64)
    for k, p in enumerate(joints_in):
        with contextlib.suppress(TypeError, ValueError, IndexError):  # else NaN: not drawn
            joints[k] = (float(p[0]), float(p[1]))
    links: list[tuple[int, int]] = []
    muscle: list[bool] = []
    amplitude: list[float] = []
    for link in links_in:
        try:
            i, j = int(link[0]), int(link[1])
            props = link[2] if len(link) > 2 else {}
            if not isinstance(props, Mapping):
                props = {}
            is_muscle = props.get("type", "distance") == "muscle"
            amp = float(props.get("amplitude", 0.0)) if is_muscle else 0.0
        except (TypeError, ValueError, IndexError):
            continue
        if not (0 <= i < n and 0 <= j < n):
            continue
        links.append((i, j))
        muscle.append(is_muscle)
        amplitude.append(amp if math.isfinite(amp) else 0.0)
    return _Shape(
        joints=joints,
        links=np.asarray(links, dtype=np.int64).reshape(-1, 2),
        muscle=np.asarray(muscle, dtype=bool),
        amplitude=np.asarray(amplitude, dtype=np.float64),
    )


def _override(shape: _Shape, joints: Any) -> np.ndarray:
    """The first ``n`` rows of a (J, 2) joint-position override (J may be padded)."""
    arr = np.asarray(joints, dtype=np.float64)
    n = len(shape.joints)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"joints override must have shape (J, 2), got {arr.shape}")
    if arr.shape[0] < n:
        raise ValueError(f"joints override has {arr.shape[0]} rows; the walker has {n} joints")
    return arr[:n]


# ----------------------------------------------------------------------------- views


@dataclass(frozen=True)
class _View:
    """World -> pixel map: centre (cx, cy) at the image centre, ``scale`` pixels per unit."""

    cx: float
    cy: float
    scale: float
    width: int
    height: int

    def px(self, xy: np.ndarray) -> np.ndarray:
        """Pixel coordinates of world points ``(..., 2)`` (y flipped; clipped to a sane range)."""
        xy = np.asarray(xy, dtype=np.float64)
        x = (xy[..., 0] - self.cx) * self.scale + self.width / 2.0
        y = self.height / 2.0 - (xy[..., 1] - self.cy) * self.scale
        lim = 4.0 * max(self.width, self.height)
        return np.clip(np.stack([x, y], axis=-1), -lim, lim)

    @property
    def x_range(self) -> tuple[float, float]:
        half = self.width / 2.0 / self.scale
        return self.cx - half, self.cx + half

    @property
    def y_range(self) -> tuple[float, float]:
        half = self.height / 2.0 / self.scale
        return self.cy - half, self.cy + half

    def moved(self, cx: float) -> _View:
        return _View(cx, self.cy, self.scale, self.width, self.height)


def _fit(xmin: float, xmax: float, ymin: float, ymax: float, size: tuple[int, int]) -> _View:
    """The view showing the box with ``MARGIN`` free on each side, equal aspect ratio."""
    width, height = size
    w = max(xmax - xmin, MIN_EXTENT)
    h = max(ymax - ymin, MIN_EXTENT)
    scale = min(width * (1 - 2 * MARGIN) / w, height * (1 - 2 * MARGIN) / h)
    return _View((xmin + xmax) / 2.0, (ymin + ymax) / 2.0, scale, width, height)


def _bbox(points: np.ndarray) -> tuple[float, float, float, float] | None:
    """(xmin, xmax, ymin, ymax) of the finite points, or None if there are none."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        return None
    return (
        float(pts[:, 0].min()),
        float(pts[:, 0].max()),
        float(pts[:, 1].min()),
        float(pts[:, 1].max()),
    )


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    w, h = (int(v) for v in size)
    if w < 8 or h < 8:
        raise ValueError(f"image size must be at least 8 x 8 pixels, got {w} x {h}")
    return w, h


# ----------------------------------------------------------------------------- drawing


@functools.lru_cache(maxsize=16)
def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``px`` pixels (the bitmap default without FreeType)."""
    try:
        return ImageFont.load_default(size=px)
    except Exception:  # no FreeType in this Pillow build
        return ImageFont.load_default()


def _unit(size: tuple[int, int]) -> float:
    """A length in pixels that scales line widths and radii with the image size."""
    return max(1.0, min(size) / 180.0)


def _pt(p: np.ndarray) -> tuple[float, float]:
    return float(p[0]), float(p[1])


def _visible_runs(
    x0: float,
    dx: float,
    heights: np.ndarray,
    present: np.ndarray,
    view: _View,
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


def _draw_terrain(draw: ImageDraw.ImageDraw, view: _View, terrain: Terrain) -> None:
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
    width = max(1, round(_unit((view.width, view.height))))

    for run in _visible_runs(x0, dx, ground, np.isfinite(ground), view):
        poly = np.vstack([run, [[run[-1, 0], yb - far], [run[0, 0], yb - far]]])
        draw.polygon([_pt(p) for p in view.px(poly)], fill=GROUND_COLOR)
        draw.line([_pt(p) for p in view.px(run)], fill=GROUND_EDGE_COLOR, width=width)

    present = np.isfinite(ceiling) & (ceiling < NO_SURFACE / 2)
    for run in _visible_runs(x0, dx, ceiling, present, view):
        poly = np.vstack([run, [[run[-1, 0], yt + far], [run[0, 0], yt + far]]])
        draw.polygon([_pt(p) for p in view.px(poly)], fill=CEILING_COLOR)
        draw.line([_pt(p) for p in view.px(run)], fill=GROUND_EDGE_COLOR, width=width)

    for wall, side in ((float(terrain.left_wall), -1.0), (float(terrain.right_wall), 1.0)):
        if not abs(wall) < NO_SURFACE / 2:
            continue
        outer = wall + side * far
        box = view.px(np.array([[min(wall, outer), yt + far], [max(wall, outer), yb - far]]))
        draw.rectangle([_pt(box[0]), _pt(box[1])], fill=WALL_COLOR)
        edge = view.px(np.array([[wall, yb - far], [wall, yt + far]]))
        draw.line([_pt(edge[0]), _pt(edge[1])], fill=GROUND_EDGE_COLOR, width=width)


def _nice_step(span: float, target: int = 10) -> float:
    """A 1-2-5 step giving about ``target`` grid lines over ``span``."""
    raw = max(span / target, 1e-9)
    base = 10.0 ** math.floor(math.log10(raw))
    return next(m * base for m in (1.0, 2.0, 5.0, 10.0) if m * base >= raw)


def _grid_lines(draw: ImageDraw.ImageDraw, view: _View) -> list[tuple[float, float]]:
    """Faint vertical lines at round x values; returns (pixel x, world x) for the labels."""
    xl, xr = view.x_range
    step = _nice_step(xr - xl)
    out = []
    for k in range(math.ceil(xl / step), math.floor(xr / step) + 1):
        x = k * step
        px = float(view.px(np.array([x, view.cy]))[0])
        draw.line([(px, 0), (px, view.height)], fill=GRID_COLOR, width=1)
        out.append((px, x))
    return out


def _grid_labels(draw: ImageDraw.ImageDraw, view: _View, ticks: list[tuple[float, float]]):
    """Distance labels for the grid lines along the bottom edge (drawn over the terrain)."""
    font = _font(max(8, round(view.height / 30)))
    for px, x in ticks:
        text = f"{x:g}"
        w = draw.textlength(text, font=font)
        top = view.height - font.size - 3 if hasattr(font, "size") else view.height - 14
        draw.line([(px, view.height - 2), (px, view.height - 6)], fill=TICK_TEXT_COLOR)
        draw.text((px - w / 2, top - 4), text, fill=TICK_TEXT_COLOR, font=font)


def _draw_walker(draw: ImageDraw.ImageDraw, view: _View, shape: _Shape, joints: np.ndarray) -> int:
    """Bones, then muscles (thin to thick), then joints. Returns how many joints were
    skipped for non-finite coordinates (their links are skipped too)."""
    u = _unit((view.width, view.height))
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
        draw.line([_pt(pix[i]), _pt(pix[j])], fill=color, width=width)
    r = max(1.5, 1.6 * u)
    for p in pix[finite]:
        x, y = _pt(p)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=JOINT_COLOR)
    return int(np.count_nonzero(~finite))


def _save(image: Image.Image, path: PathLike, **kwargs: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    image.save(p, **kwargs)


# ----------------------------------------------------------------------------- public API


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
    size = _check_size(size)
    shape = _shape(walker)
    pos = shape.joints if joints is None else _override(shape, joints)
    box = _bbox(pos) or (-MIN_EXTENT / 2, MIN_EXTENT / 2, -MIN_EXTENT / 2, MIN_EXTENT / 2)
    xmin, xmax, ymin, ymax = box
    if terrain is not None:
        g = np.asarray(terrain.ground, dtype=np.float64)
        if g.ndim == 1:
            gx = float(terrain.x0) + float(terrain.dx) * np.arange(g.size)
            below = float(np.interp(np.linspace(xmin, xmax, 16), gx, g).min())
            reach = 0.5 * max(xmax - xmin, ymax - ymin, MIN_EXTENT)
            if ymin - reach <= below < ymin:
                ymin = below
    view = _fit(xmin, xmax, ymin, ymax, size)
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    ticks = _grid_lines(draw, view) if grid else []
    if terrain is not None:
        _draw_terrain(draw, view, terrain)
    if ticks:
        _grid_labels(draw, view, ticks)
    skipped = _draw_walker(draw, view, shape, pos)
    lines = [label] if label else []
    if len(shape.joints) == 0:
        lines.append("walker has no joints")
    elif skipped:
        lines.append(f"{skipped} non-finite joint(s) not drawn")
    font = _font(max(8, round(size[1] / 26)))
    for k, text in enumerate(lines):
        color = TEXT_COLOR if (label and k == 0) else NOTE_COLOR
        draw.text((6, 4 + k * (size[1] / 26 + 3)), text, fill=color, font=font)
    if path is not None:
        _save(image, path, format="PNG")
    return image


def _frame_stats(traj: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame COM x/y (mean of finite joints) and extents; NaN where no joint is finite."""
    finite = np.all(np.isfinite(traj), axis=-1)  # (T, n)
    count = finite.sum(axis=1)
    safe = np.where(finite[..., None], traj, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        com = safe.sum(axis=1) / count[:, None]
    com[count == 0] = np.nan
    x = np.where(finite, traj[..., 0], np.nan)
    y = np.where(finite, traj[..., 1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames
        half_x = np.nanmax(np.abs(x - com[:, :1]), axis=1)
        ymin = np.nanmin(y, axis=1)
        ymax = np.nanmax(y, axis=1)
    return {"com": com, "half_x": half_x, "ymin": ymin, "ymax": ymax, "finite": finite}


def _robust(values: np.ndarray, q: float, default: float) -> float:
    """``nanpercentile`` that falls back to ``default`` when every value is NaN."""
    v = values[np.isfinite(values)]
    return float(np.percentile(v, q)) if v.size else default


def render_rollout(
    walker: Any,
    trajectory: Any,
    path: PathLike,
    *,
    terrain: Terrain | None = None,
    fps: float = 30,
    size: tuple[int, int] = (480, 360),
    follow: bool = True,
    stride: int = 1,
    frame_dt: float = 1 / 30,
) -> None:
    """Animate a simulated rollout as a GIF, to watch how (and whether) a walker moves.

    ``trajectory`` is ``(T, J, 2)`` joint positions (world units, y up); ``J`` may be padded
    past the walker's ``n`` joints, only the first ``n`` are used. ``frame_dt`` is the
    simulated time between consecutive trajectory rows; every ``stride``-th row becomes a
    GIF frame shown for ``1000 / fps`` ms (GIF timing is in 10 ms steps and viewers
    clamp very short delays, so keep ``fps <= 50``). Real-time playback is
    ``fps = 1 / (frame_dt * stride)``.

    With ``follow`` the camera tracks the centre of mass horizontally at a fixed zoom (set
    from the walker's size over the rollout, 98th percentile, so it does not pulse) and a
    fixed height covering the walker's vertical range; otherwise one fixed view covers the
    whole trajectory. Each frame shows the terrain, faint x grid lines with distance labels
    (so motion is visible while following), the time and the COM x displacement from the
    first frame. Joints with non-finite positions are not drawn; the frame says so and one
    ``RuntimeWarning`` counts such frames. Raises ``ValueError`` for an empty trajectory.
    """
    size = _check_size(size)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not frame_dt > 0:
        raise ValueError(f"frame_dt must be positive, got {frame_dt}")
    shape = _shape(walker)
    n = len(shape.joints)
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim != 3 or traj.shape[-1] != 2:
        raise ValueError(f"trajectory must have shape (T, J, 2), got {traj.shape}")
    if traj.shape[0] == 0:
        raise ValueError("trajectory is empty (0 frames): nothing to render")
    if traj.shape[1] < n:
        raise ValueError(f"trajectory has {traj.shape[1]} joints per frame; the walker has {n}")
    traj = traj[:, :n]
    rows = np.arange(0, traj.shape[0], stride)
    stats = _frame_stats(traj)
    com_x = stats["com"][:, 0]
    valid = np.flatnonzero(np.isfinite(com_x))
    origin_x = float(com_x[valid[0]]) if valid.size else 0.0

    if follow:
        half = _robust(stats["half_x"], 98, MIN_EXTENT / 2)
        ylo = _robust(stats["ymin"], 2, -MIN_EXTENT / 2)
        yhi = max(_robust(stats["ymax"], 98, MIN_EXTENT / 2), ylo)
        base = _fit(origin_x - half, origin_x + half, ylo, yhi, size)
        cam = np.where(np.isfinite(com_x), com_x, np.nan)
        last = origin_x  # frames without a finite COM keep the previous camera position
        for t in range(len(cam)):
            if np.isfinite(cam[t]):
                last = cam[t]
            cam[t] = last
    else:
        box = _bbox(traj) or (-MIN_EXTENT / 2, MIN_EXTENT / 2, -MIN_EXTENT / 2, MIN_EXTENT / 2)
        base = _fit(*box, size)
        cam = np.full(traj.shape[0], base.cx)

    font = _font(max(8, round(size[1] / 26)))
    line_h = size[1] / 26 + 3
    # enough decimals that consecutive frames' times differ
    decimals = max(1, math.ceil(-math.log10(frame_dt * stride)))
    frames: list[Image.Image] = []
    nan_frames = 0
    for f, t in enumerate(rows):
        view = base.moved(float(cam[t]))
        image = Image.new("RGB", size, BACKGROUND)
        draw = ImageDraw.Draw(image)
        ticks = _grid_lines(draw, view)
        if terrain is not None:
            _draw_terrain(draw, view, terrain)
        _grid_labels(draw, view, ticks)
        skipped = _draw_walker(draw, view, shape, traj[t])
        disp = com_x[t] - origin_x
        disp_text = f"{disp:+.2f}" if np.isfinite(disp) else "n/a"
        draw.text(
            (6, 4),
            f"t = {t * frame_dt:.{decimals}f} s   COM dx = {disp_text}",
            fill=TEXT_COLOR,
            font=font,
        )
        counter = f"{f + 1}/{len(rows)}"
        draw.text(
            (size[0] - 6 - draw.textlength(counter, font=font), 4),
            counter,
            fill=TEXT_COLOR,
            font=font,
        )
        if skipped:
            nan_frames += 1
            draw.text(
                (6, 4 + line_h), f"{skipped} NaN joint(s) not drawn", fill=NOTE_COLOR, font=font
            )
        frames.append(
            image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        )
    if nan_frames:
        warnings.warn(
            f"{nan_frames} of {len(rows)} frames have non-finite joint positions; "
            "those joints and their links are not drawn",
            RuntimeWarning,
            stacklevel=2,
        )
    _save(
        frames[0],
        path,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=max(10, round(1000 / fps)),
        loop=0,
    )


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
    tw, th = _check_size(size)
    if len(walkers) == 0:
        raise ValueError("render_grid needs at least one walker")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if titles is not None and len(titles) != len(walkers):
        raise ValueError(f"{len(titles)} titles for {len(walkers)} walkers")
    font = _font(max(8, round(th / 14)))
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
        _save(sheet, path, format="PNG")
    return sheet
