"""``python -m jelm.sim.tradeoff``: the solver's speed against bone accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jelm.sim.base import ACCURATE_PARAMS, PhysicsParams
from jelm.sim.tradeoff import bone_errors, main, spearman
from tests.sim.helpers import SEEDS


def test_spearman_orders():
    a = np.array([3.0, 1.0, 2.0, 5.0])
    assert spearman(a, a * 10 - 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert -1.0 < spearman(a, np.array([1.0, 3.0, 2.0, 5.0])) < 1.0


def test_fewer_sweeps_stretch_bones_more():
    """One substep of one sweep lets the square seed's bones stretch far more than the
    accurate setting does, over the same 2 s."""
    square = [SEEDS["square"]]
    cheap = bone_errors(square, PhysicsParams(substeps=1, iterations=1), steps=120)
    accurate = bone_errors(square, ACCURATE_PARAMS, steps=120)
    assert accurate[0] < 0.01
    assert cheap[0] > 5 * accurate[0]
    p99 = bone_errors(square, PhysicsParams(substeps=1, iterations=1), steps=120, quantile=0.99)
    assert p99[0] <= cheap[0]


@pytest.mark.slow  # ~40 s: compiles the seed buckets and a rollout for three settings
def test_cli_prints_one_json_line(capsys):
    args = ["--batch", "2", "--steps", "2", "--repeats", "1", "--seconds", "0.5"]
    main([*args, "--settings", "4x16", "4x4", "1x2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    line = json.loads(out[0])
    rows = {(r["substeps"], r["iterations"]): r for r in line["results"]}
    assert (4, 4) in rows and (4, 16) in rows and (1, 2) in rows
    assert rows[(4, 4)]["speedup"] == 1.0
    assert rows[(4, 16)]["rank_correlation"] == pytest.approx(1.0)
    assert rows[(4, 16)]["fitness_mae"] == 0.0
    assert rows[(1, 2)]["bone_error_worst"] > rows[(4, 16)]["bone_error_worst"]
    assert all(r["valid"] and r["walker_steps_per_s"] > 0 for r in rows.values())


@pytest.mark.parametrize("setting", ["4", "4x", "axb", "0x4", "4x-1"])
def test_cli_refuses_a_bad_setting(setting, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--settings", setting])
    assert exc.value.code == 2
    assert "setting" in capsys.readouterr().err
