"""Figures of a run (ELM §4.2's archive views): heatmaps for each pair of descriptors,
QD-score and coverage curves (matplotlib, Agg backend; imported only to write plots)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    return list(names) if names is not None else [f"d{k}" for k in range(n)]


def projections(fitness: np.ndarray, grid: Sequence[int]) -> list[tuple[int, int, np.ndarray]]:
    """What :func:`archive_heatmaps` draws: for each pair of axes ``(a, b)`` of a grid
    archive, the best fitness over the other axes as a ``(grid[a], grid[b])`` array (NaN
    where no cell of that column is filled). One axis gives one ``(grid[0], 1)`` strip."""
    cube = np.asarray(fitness, np.float64).reshape(tuple(grid))
    if len(grid) == 1:
        cube = cube[:, None]
    axes = range(cube.ndim)
    out = []
    for a, b in itertools.combinations(axes, 2):
        other = tuple(k for k in axes if k not in (a, b))
        best = cube.max(axis=other) if other else cube
        out.append((a, b, np.where(np.isfinite(best), best, np.nan)))
    return out


def series(
    rows: Sequence[dict[str, Any]], key: str, x: str = "evaluations"
) -> tuple[list[Any], list[Any]]:
    """The ``(x, y)`` points of metric ``key`` of one run's metrics rows (rows without the
    metric are skipped): what :func:`curves` draws."""
    points = [(r.get(x), r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def archive_heatmaps(
    fitness: np.ndarray,
    grid: Sequence[int],
    lower: Sequence[float],
    upper: Sequence[float],
    path: str | Path,
    names: Sequence[str] | None = None,
    label: str = "best fitness",
    title: str = "",
) -> Path:
    """One heatmap per pair of descriptors of a grid archive (``names`` label the axes):
    each pixel is the best fitness over the other axes (blank where no cell of that
    column is filled); one descriptor gives a single strip.

    ``fitness`` is the repertoire's ``(cells,)`` fitness, -inf for empty cells, cells in
    C-order over ``grid``.
    """
    names = _names(names, len(grid))
    planes = projections(fitness, grid)
    if len(grid) == 1:
        lower, upper, names = (*lower, 0.0), (*upper, 1.0), [*names, ""]
    finite = np.asarray(fitness, np.float64)
    finite = finite[np.isfinite(finite)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(planes), figsize=(4.2 * len(planes), 3.8), squeeze=False)
    image = None
    for ax, (a, b, best) in zip(axes[0], planes, strict=True):
        image = ax.imshow(
            best.T,
            origin="lower",
            extent=(lower[a], upper[a], lower[b], upper[b]),
            aspect="auto",
            vmin=vmin,
            vmax=vmax,
            cmap="viridis",
        )
        ax.set_xlabel(names[a])
        ax.set_ylabel(names[b])
    return _finish(fig, axes, image, label, title, path)


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
    fitness: np.ndarray,
    centroids: np.ndarray,
    path: str | Path,
    names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Filled CVT cells as points (for each pair of descriptors, labelled by ``names``),
    coloured by fitness."""
    names = _names(names, centroids.shape[1])
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
        ax.set_xlabel(names[a])
        ax.set_ylabel(names[b])
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
            ax.plot(*series(rows, key, x), label=label)
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
