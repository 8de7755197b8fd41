"""Rounds of self-improvement end to end, at a toy scale: real runs, a real fine-tune."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jelm.experiments.finetune import Plan, run_rounds, ship_rounds
from jelm.lm.checkpoint import load_model
from tests.lm_fixtures import make_tiny_model


@pytest.mark.slow
def test_rounds_run_finetune_and_resume(tmp_path):
    model = make_tiny_model(tmp_path / "tiny", n_ctx=2048, vocab_size=400)
    plan = Plan(
        model=str(model),
        rounds=1,
        seeds=("radial",),
        random_seeds=(0,),
        generations=1,
        batch=8,
        steps=60,
        bootstrap="gp",
        finetune_steps=2,
        corpus=0,
        rename=0.5,
    )
    out = tmp_path / "rounds"
    rows = run_rounds(plan, out, log=lambda line: None)
    assert [(r["round"], r["operator"]) for r in rows] == [
        ("bootstrap", "gp"),
        (0, "lm_diff"),
        (1, "lm_diff"),
    ]
    for r in rows:
        assert r["children"] == 8 and 0.0 <= r["valid"] <= r["applied"] <= 1.0
        assert r["niches"] >= 1 and r["qd_score"] > 0
    assert rows[0]["applied"] == 1.0  # GP always gives a program
    summary = json.loads((out / "round0/finetune/summary.json").read_text())
    assert summary["steps"] == 2 and summary["operators"].get("gp", 0) >= 1
    assert rows[2]["model"].endswith("round0/finetune/model")
    table = (out / "table.md").read_text()
    assert "| 1 | lm_diff | radial |" in table and (out / "rounds.png").stat().st_size > 0
    # again: everything is done, nothing runs twice
    assert run_rounds(plan, out, log=lambda line: None) == rows
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    with pytest.raises(SystemExit, match="another plan"):
        run_rounds(Plan(model=str(model), rounds=2), out, log=lambda line: None)
    # shipping: the last round's model, with every round's record
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "summary.json").write_text("{}")  # another model's record
    ship_rounds(out, shipped)
    params, config, _ = load_model(shipped)
    tuned, _, _ = load_model(out / "round0/finetune/model")
    assert config.n_layer == 2
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(tuned), strict=True):
        np.testing.assert_array_equal(a, b)
    record = json.loads((shipped / "finetune.json").read_text())
    assert [r["round"] for r in record["rounds"]] == [0] and record["rounds"][0]["train"]
    assert record["base"] == {"model": str(model)} and not (shipped / "summary.json").exists()
    with pytest.raises(SystemExit, match="no finished"):
        ship_rounds(tmp_path / "tiny", shipped)
