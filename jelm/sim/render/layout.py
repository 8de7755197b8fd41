"""What a render shows and where: a walker read for drawing, and world-to-pixel views.

Walkers come in the ELM paper's dict layout (Lehman et al. 2022, appendix "Sodarace") or
as objects with ``to_dict()``; reading is lenient, so degenerate input never crashes a
render (links with bad indices are skipped, unreadable joints become NaN).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jelm.sim.render.style import MARGIN, MIN_EXTENT
from jelm.sim.walker import _as_dict


@dataclass(frozen=True)
class Shape:
    """A walker's drawable parts: joint positions and links (lenient, never raises on data)."""

    joints: np.ndarray  # (n, 2) float64, NaN where a joint was unreadable
    links: np.ndarray  # (m, 2) int64, indices checked to lie in 0..n-1
    muscle: np.ndarray  # (m,) bool
    amplitude: np.ndarray  # (m,) float64, 0 for bones


def read_shape(walker: Any) -> Shape:
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
    return Shape(
        joints=joints,
        links=np.asarray(links, dtype=np.int64).reshape(-1, 2),
        muscle=np.asarray(muscle, dtype=bool),
        amplitude=np.asarray(amplitude, dtype=np.float64),
    )


def override_joints(shape: Shape, joints: Any) -> np.ndarray:
    """The first ``n`` rows of a (J, 2) joint-position override (J may be padded)."""
    arr = np.asarray(joints, dtype=np.float64)
    n = len(shape.joints)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"joints override must have shape (J, 2), got {arr.shape}")
    if arr.shape[0] < n:
        raise ValueError(f"joints override has {arr.shape[0]} rows; the walker has {n} joints")
    return arr[:n]


@dataclass(frozen=True)
class View:
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

    def moved(self, cx: float) -> View:
        return View(cx, self.cy, self.scale, self.width, self.height)


def fit_view(xmin: float, xmax: float, ymin: float, ymax: float, size: tuple[int, int]) -> View:
    """The view showing the box with ``MARGIN`` free on each side, equal aspect ratio."""
    width, height = size
    w = max(xmax - xmin, MIN_EXTENT)
    h = max(ymax - ymin, MIN_EXTENT)
    scale = min(width * (1 - 2 * MARGIN) / w, height * (1 - 2 * MARGIN) / h)
    return View((xmin + xmax) / 2.0, (ymin + ymax) / 2.0, scale, width, height)


def bbox(points: np.ndarray) -> tuple[float, float, float, float] | None:
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


def check_size(size: Sequence[int]) -> tuple[int, int]:
    w, h = (int(v) for v in size)
    if w < 8 or h < 8:
        raise ValueError(f"image size must be at least 8 x 8 pixels, got {w} x {h}")
    return w, h
