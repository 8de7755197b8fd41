"""Figures of a run: archive heatmaps for each pair of descriptors, QD-score and coverage
curves (matplotlib, Agg backend; imported only when a run writes its plots)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

DESCRIPTORS = ("height", "width", "mass")


def archive_heatmaps(
    fitness: np.ndarray,
    grid: Sequence[int],
    lower: Sequence[float],
    upper: Sequence[float],
    path: str | Path,
    title: str = "",
) -> Path:
    """One heatmap per pair of descriptors of a grid archive: each pixel is the best
    fitness over the third axis (blank where no cell of that column is filled).

    ``fitness`` is the repertoire's ``(cells,)`` fitness, -inf for empty cells, cells in
    C-order over ``grid``.
    """
    cube = np.asarray(fitness, np.float64).reshape(tuple(grid))
    pairs = list(itertools.combinations(range(len(grid)), 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    finite = cube[np.isfinite(cube)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    image = None
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        other = tuple(k for k in range(len(grid)) if k not in (a, b))
        best = cube.max(axis=other) if other else cube
        best = np.where(np.isfinite(best), best, np.nan)
        image = ax.imshow(
            best.T,
            origin="lower",
            extent=(lower[a], upper[a], lower[b], upper[b]),
            aspect="auto",
            vmin=vmin,
            vmax=vmax,
            cmap="viridis",
        )
        ax.set_xlabel(DESCRIPTORS[a] if a < 3 else f"d{a}")
        ax.set_ylabel(DESCRIPTORS[b] if b < 3 else f"d{b}")
    return _finish(fig, axes, image, "best fitness (COM x displacement)", title, path)


def _finish(fig: Any, axes: Any, mappable: Any, label: str, title: str, path: str | Path) -> Path:
    """Colour bar, title, save, close."""
    if mappable is not None:
        fig.colorbar(mappable, ax=axes[0].tolist(), label=label)
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def cvt_scatter(
    fitness: np.ndarray, centroids: np.ndarray, path: str | Path, title: str = ""
) -> Path:
    """Filled CVT cells as points (for each pair of descriptors), coloured by fitness."""
    fitness = np.asarray(fitness, np.float64)
    filled = np.isfinite(fitness)
    pairs = list(itertools.combinations(range(centroids.shape[1]), 2))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    sc = None
    for ax, (a, b) in zip(axes[0], pairs, strict=True):
        ax.scatter(centroids[~filled, a], centroids[~filled, b], s=3, c="0.85")
        sc = ax.scatter(
            centroids[filled, a], centroids[filled, b], s=12, c=fitness[filled], cmap="viridis"
        )
        ax.set_xlabel(DESCRIPTORS[a])
        ax.set_ylabel(DESCRIPTORS[b])
    return _finish(fig, axes, sc, "fitness", title, path)


def curves(
    runs: dict[str, list[dict[str, Any]]],
    path: str | Path,
    keys: Sequence[str] = ("qd_score", "coverage", "max_fitness"),
    x: str = "evaluations",
) -> Path:
    """Metric curves of one or more runs (``{label: metrics rows}``) against ``x``."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, rows in runs.items():
            xs = [r.get(x) for r in rows if r.get(key) is not None]
            ys = [r[key] for r in rows if r.get(key) is not None]
            ax.plot(xs, ys, label=label)
        ax.set_xlabel(x)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0][0].legend(fontsize=7)
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
