"""python -m jelm.sim.bench: one JSON line in the issue's schema, for every walker set."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from jelm.sim import bench, platforms


@pytest.mark.slow
def test_bench_prints_one_json_line_in_the_schema(capsys):
    bench.main(["--batches", "1", "8", "--steps", "3", "--numpy-steps", "1", "--repeats", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert set(out) == {"device", "platform_choices", "results", "numpy_reference", "peak_rss_mb"}
    assert out["device"] == bench.device_info()
    assert out["platform_choices"] == dataclasses.asdict(platforms.choices("cpu"))
    assert out["numpy_reference"]["walker_steps_per_s"] > 0
    assert out["peak_rss_mb"] > 0
    rows = out["results"]
    seen = {(r["backend"], r["walkers"], r["batch"]) for r in rows}
    assert seen == {(b, k, n) for b in ("native", "xla") for k in bench.KINDS for n in (1, 8)}
    for r in rows:
        assert set(r) == {
            "walkers",
            "batch",
            "steps",
            "walker_steps_per_s",
            "spring_steps_per_s",
            "compile_s",
            "run_s",
            "backend",
        }
        assert r["steps"] == 3
        assert r["run_s"] > 0
        assert np.isclose(r["walker_steps_per_s"], r["batch"] * 3 / r["run_s"])
        assert r["spring_steps_per_s"] > r["walker_steps_per_s"]


def test_distinct_walkers_share_no_topology():
    """The 'distinct' set is the seed mix with each walker's links shuffled and a random
    fifth left out: at the benchmark's largest batch no two walkers have the same link
    list (so none share a lane group), and each keeps at least one link."""
    seeds = bench._seed_walkers()
    rng = np.random.default_rng(0)
    walkers = bench._distinct([seeds[k % len(seeds)] for k in range(4096)], rng)
    keys = {json.dumps(w["muscles"]) for w in walkers}
    assert len(keys) == len(walkers)
    assert all(w["muscles"] for w in walkers)
    assert all(w["joints"] == seeds[k % len(seeds)]["joints"] for k, w in enumerate(walkers))


def test_the_device_is_what_jax_sees():
    info = bench.device_info()
    assert info == {
        "platform": jax.devices()[0].platform,
        "kind": jax.devices()[0].device_kind,
        "count": jax.device_count(),
    }
    assert info["platform"] == "cpu" and info["count"] >= 1
