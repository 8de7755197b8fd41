"""jelm.io.plots: what the archive heatmaps and the metric curves show, and the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jelm.io import plots


def test_projections_take_the_best_fitness_over_the_other_axes():
    grid = (2, 3, 4)
    fitness = np.full(24, -np.inf)
    cube = fitness.reshape(grid)
    cube[1, 2, 0] = 5.0
    cube[1, 2, 3] = 7.0  # same (height, width) column: the best, 7, wins
    cube[0, 0, 1] = -1.0
    (ab, ac, bc) = plots.projections(fitness, grid)
    assert [(a, b) for a, b, _ in (ab, ac, bc)] == [(0, 1), (0, 2), (1, 2)]
    assert ab[2].shape == (2, 3) and ab[2][1, 2] == 7.0 and ab[2][0, 0] == -1.0
    assert np.isnan(ab[2][0, 1]) and np.isnan(ab[2][1, 0])
    assert ac[2][1, 0] == 5.0 and ac[2][1, 3] == 7.0 and ac[2][0, 1] == -1.0
    assert bc[2][2, 3] == 7.0 and np.isnan(bc[2]).sum() == 12 - 3
    (strip,) = plots.projections(np.array([1.0, -np.inf, 3.0]), (3,))
    assert strip[2].shape == (3, 1) and np.isnan(strip[2][1, 0])


def test_series_skips_rows_without_the_metric():
    rows = [
        {"evaluations": 4, "qd_score": 1.0},
        {"evaluations": 8},
        {"evaluations": 12, "qd_score": 3.0},
    ]
    assert plots.series(rows, "qd_score") == ([4, 12], [1.0, 3.0])


@pytest.mark.parametrize("grid", [(4, 4, 4), (5, 3), (6,)])
def test_heatmaps_and_curves_are_written(tmp_path: Path, grid):
    rng = np.random.default_rng(0)
    fitness = np.where(
        rng.random(int(np.prod(grid))) < 0.3, rng.normal(size=np.prod(grid)), -np.inf
    )
    path = plots.archive_heatmaps(
        fitness, grid, [0.0] * len(grid), [1.0] * len(grid), tmp_path / "a.png", names=None
    )
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert width > 200 and height > 200 and pixels.std() > 10  # not a blank page
    panels = len(plots.projections(fitness, grid))
    assert width > panels * 250  # one panel per pair of axes side by side
    rows = [
        {"evaluations": k, "qd_score": k * 2.0, "coverage": 0.1, "max_fitness": 1.0}
        for k in range(5)
    ]
    curves = plots.curves({"gp": rows, "lm_diff": rows}, tmp_path / "c.png")
    with Image.open(curves) as image:
        assert image.size[0] > 600
