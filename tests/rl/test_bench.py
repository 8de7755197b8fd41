"""``python -m jelm.rl.bench``: the stage-3 sampler's benchmark on a tiny random model
directory prints one JSON line, and every first cache size draws the same tokens."""

from __future__ import annotations

import json

import pytest

from jelm.rl import bench
from tests.lm_fixtures import make_tiny_model


@pytest.mark.slow  # compiles the sampler at three cache schedules
def test_bench_prints_one_json_line_with_the_same_tokens_for_every_cache(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "model")
    argv = ["--model", str(model), "--rows", "3", "--max-new", "24", "--temperature", "1.0"]
    res = bench.main([*argv, "--first-caches", "4", "9", "0"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == res
    assert [r["first_cache"] for r in res["runs"]] == [4, 9, 24]
    assert res["same_tokens"] is True
    for r in res["runs"]:
        assert r["run_s"] > 0 and r["tokens_per_s"] > 0
        assert 1 <= r["mean_tokens"] <= r["longest"] <= 24
