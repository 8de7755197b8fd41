"""Animations of simulated Sodarace rollouts (GIF), to watch how a walker moves.

The camera can follow the centre of mass (the mean of the walker's finite joint
positions, a camera and label aid, not the fitness); frames show the terrain, a distance
grid, the time and the centre of mass's displacement (ELM paper, Lehman et al. 2022, §4).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from jelm.sim.render.draw import draw_terrain, draw_walker, grid_labels, grid_lines, save_image
from jelm.sim.render.layout import bbox, check_size, fit_view, read_shape
from jelm.sim.render.style import (
    BACKGROUND,
    MIN_EXTENT,
    NOTE_COLOR,
    TEXT_COLOR,
    PathLike,
    load_font,
)
from jelm.sim.terrain import Terrain


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
    size = check_size(size)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not frame_dt > 0:
        raise ValueError(f"frame_dt must be positive, got {frame_dt}")
    shape = read_shape(walker)
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
        base = fit_view(origin_x - half, origin_x + half, ylo, yhi, size)
        cam = np.where(np.isfinite(com_x), com_x, np.nan)
        last = origin_x  # frames without a finite COM keep the previous camera position
        for t in range(len(cam)):
            if np.isfinite(cam[t]):
                last = cam[t]
            cam[t] = last
    else:
        box = bbox(traj) or (-MIN_EXTENT / 2, MIN_EXTENT / 2, -MIN_EXTENT / 2, MIN_EXTENT / 2)
        base = fit_view(*box, size)
        cam = np.full(traj.shape[0], base.cx)

    font = load_font(max(8, round(size[1] / 26)))
    line_h = size[1] / 26 + 3
    # enough decimals that consecutive frames' times differ
    decimals = max(1, math.ceil(-math.log10(frame_dt * stride)))
    frames: list[Image.Image] = []
    nan_frames = 0
    for f, t in enumerate(rows):
        view = base.moved(float(cam[t]))
        image = Image.new("RGB", size, BACKGROUND)
        draw = ImageDraw.Draw(image)
        ticks = grid_lines(draw, view)
        if terrain is not None:
            draw_terrain(draw, view, terrain)
        grid_labels(draw, view, ticks)
        skipped = draw_walker(draw, view, shape, traj[t])
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
    save_image(
        frames[0],
        path,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=max(10, round(1000 / fps)),
        loop=0,
    )
