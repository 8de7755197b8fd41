"""The ELM host loop in a run directory (jelm.qd.loop, jelm.qd.run): ledger, archive,
metrics, checkpoints, resume after a clean stop, a kill -9 or a damaged checkpoint, and
the configuration errors that stop a run before any work."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from jelm.experiments.config import ConfigError, from_mapping
from jelm.experiments.run import evolve
from jelm.qd.loop import SeedError
from jelm.qd.run import DamagedCheckpointWarning

TINY = {
    "mutation": "gp",
    "seeds": ["square", "radial"],
    "batch": 8,
    "steps": 60,
    "bucket": [16, 64, 8],
    "qd": {"grid": [4, 4, 4]},
    "checkpoint_every": 2,
    "sandbox": {"workers": 2, "timeout_s": 1.0},
}


def _config(**over):
    return from_mapping({**TINY, **over})


def _run(path: Path, generations: int, **over) -> dict:
    _, _, state, metrics = evolve(_config(generations=generations, **over), path, log=print)
    fitness = np.asarray(state.repertoire.fitnesses[:, 0])
    ids = np.asarray(state.repertoire.genotypes["id"])
    return {"metrics": metrics, "fitness": fitness, "ids": ids}


def _ledger_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path / "ledger.sqlite") as db:
        return db.execute(
            "SELECT id, generation, parent_ids, operator, program, status, fitness, niche, "
            "accepted FROM candidates ORDER BY id"
        ).fetchall()


def test_a_run_fills_ledger_archive_metrics_and_checkpoints(tmp_path: Path):
    out = _run(tmp_path / "run", generations=3)
    rows = _ledger_rows(tmp_path / "run")
    assert len(rows) == 2 + 3 * 8  # the seeds, then a batch per generation
    assert {r[1] for r in rows} == {0, 1, 2, 3}
    assert [r[3] for r in rows[:2]] == ["seed", "seed"]
    # Every elite of the archive is an accepted ledger candidate with that fitness.
    by_id = {r[0]: r for r in rows}
    filled = np.isfinite(out["fitness"])
    assert filled.sum() >= 1
    for cell in np.flatnonzero(filled):
        row = by_id[int(out["ids"][cell])]
        assert row[8] == 1 and row[7] == cell
        assert row[6] == pytest.approx(out["fitness"][cell], rel=1e-6)
    # Children name parents that exist and were in the archive earlier.
    for r in rows[2:]:
        assert all(p in by_id and by_id[p][0] < r[0] for p in json.loads(r[2]))
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [m["generation"] for m in metrics] == [0, 1, 2, 3]
    qd = [m["qd_score"] for m in metrics]
    assert qd == sorted(qd)  # MAP-Elites never loses score
    # Each generation's wall time, split into making children and running them.
    assert all(m["mutate_s"] >= 0 and m["evaluate_s"] > 0 for m in metrics)
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["0", "2", "3"]  # every 2nd generation and the last


def test_resume_after_a_clean_stop_equals_an_uninterrupted_run(tmp_path: Path):
    whole = _run(tmp_path / "whole", generations=5)
    _run(tmp_path / "parts", generations=2)
    parts = _run(tmp_path / "parts", generations=5)  # same directory: resumes
    np.testing.assert_array_equal(whole["fitness"], parts["fitness"])
    np.testing.assert_array_equal(whole["ids"], parts["ids"])
    assert _ledger_rows(tmp_path / "whole") == _ledger_rows(tmp_path / "parts")


KILLED = textwrap.dedent(
    """
    import json, sys
    import jelm.sim
    from jelm.experiments.config import from_mapping
    from jelm.experiments.run import evolve
    config = from_mapping(json.loads(sys.argv[2]))
    evolve(config, sys.argv[1], lambda m: print(int(m["generation"]), flush=True), log=str)
    """
)


@pytest.mark.parametrize("after", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_kill_9_then_rerun_ends_identical(tmp_path: Path, after: int):
    """A real run is killed with SIGKILL after some generations (between a ledger commit
    and a checkpoint, or mid-generation); rerunning it in the same directory finishes
    with the same archive and ledger as a run never interrupted."""
    generations = after + 5  # room to land the kill before the run ends
    whole = _run(tmp_path / "whole", generations=generations)
    config = json.dumps({**TINY, "generations": generations})
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path / "killed"), config],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if int(line) >= after:
            break
    time.sleep(0.02 * after)  # land somewhere inside the next generation
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # the kill landed: the run did not finish first
    with sqlite3.connect(tmp_path / "killed" / "ledger.sqlite") as db:
        (last,) = db.execute("SELECT max(generation) FROM generations").fetchone()
    assert after <= last < generations  # the run was cut short
    resumed = _run(tmp_path / "killed", generations=generations)
    np.testing.assert_array_equal(whole["fitness"], resumed["fitness"])
    np.testing.assert_array_equal(whole["ids"], resumed["ids"])
    assert _ledger_rows(tmp_path / "whole") == _ledger_rows(tmp_path / "killed")


def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_ends_identical(tmp_path: Path):
    """A damaged newest checkpoint is moved aside with a warning; the run resumes from the
    one before and replays the ledger, ending where an uninterrupted run ends."""
    whole = _run(tmp_path / "whole", generations=4)
    _run(tmp_path / "run", generations=3)  # checkpoints 0, 2, 3
    damaged = 0
    for path in (tmp_path / "run" / "checkpoints" / "3").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\0garbage")
            damaged += 1
    assert damaged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = _run(tmp_path / "run", generations=4)
    assert any(issubclass(w.category, DamagedCheckpointWarning) for w in caught)
    assert [p.name.split("-")[:2] for p in (tmp_path / "run" / "damaged").iterdir()] == [
        ["checkpoint", "3"]
    ]
    np.testing.assert_array_equal(whole["fitness"], resumed["fitness"])
    np.testing.assert_array_equal(whole["ids"], resumed["ids"])
    assert _ledger_rows(tmp_path / "whole") == _ledger_rows(tmp_path / "run")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"mutation": "lm_magic"}, "unknown operator 'lm_magic'"),
        ({"terrain": "lava"}, "unknown terrain 'lava'"),
        ({"batch": 0}, "batch must be at least 1"),
        ({"qd": {"grid": [0, 4, 4]}}, "at least one cell"),
        ({"seeds": ["nope.py"]}, "neither a seed name"),
        ({"qd": {"lower": [0, 0, 500], "upper": [30, 30, 400]}}, "mass are inverted"),
        ({"generation": 3}, "unknown key 'generation'"),
    ],
)
def test_bad_configurations_fail_before_work(override, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping({**TINY, **override})


def test_cli_reports_a_bad_configuration_and_exits_2(tmp_path: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jelm.experiments.sodarace",
            "batch=0",
            "mutation=xyz",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "batch must be at least 1" in proc.stderr
    assert "unknown operator 'xyz'" in proc.stderr
    assert not (tmp_path / "run" / "ledger.sqlite").exists()


def test_seeds_that_fit_no_bucket_stop_the_run_clearly(tmp_path: Path):
    config = _config(seeds=["cppn_fixed"], bucket=[8, 16, 4], generations=1)
    with pytest.raises(SeedError, match=r"cppn_fixed: too_large .*bucket \[8, 16, 4\]"):
        evolve(config, tmp_path / "run", log=str)


@pytest.mark.slow
def test_cli_quick_run_writes_everything(tmp_path: Path):
    """The main job through Hydra: exit 0, and the run directory holds the config, the
    ledger, metrics, checkpoints, the plots and a render."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jelm.experiments.sodarace",
            "preset=quick",
            "generations=1",
            "steps=30",
            "progress=false",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"writing to {out}/" in proc.stdout
    for name in (
        "config.json",
        "ledger.sqlite",
        "metrics.jsonl",
        "plots/archive.png",
        "plots/curves.png",
        ".hydra/config.yaml",
    ):
        assert (out / name).is_file(), name
    assert list((out / "checkpoints").iterdir())
    assert len(list((out / "renders").glob("*.gif"))) == 1


def test_ledger_fitness_is_the_worked_out_displacement_times_the_direction(tmp_path: Path):
    """Through the loop, on the right wall (direction -1): a seed's fitness in the ledger
    is minus the x displacement of its centre of mass, worked out here from the joint
    trajectory (unit masses: the mean x of the joints, last frame minus first)."""
    from jelm.domains.sodarace.seeds import seed_walker
    from jelm.sim.physics import rollout
    from jelm.sim.terrain import make_terrain
    from jelm.sim.walker import pack

    steps = 60
    evolve(_config(generations=0, terrain="right_wall", steps=steps), tmp_path / "run", log=str)
    rows = _ledger_rows(tmp_path / "run")
    terrain = make_terrain("right_wall")
    assert terrain.direction == -1
    for name, row in zip(TINY["seeds"], rows, strict=True):
        walker = seed_walker(name).to_dict()
        frames = np.asarray(rollout(pack([walker]), terrain, steps, steps))[0]
        n = len(walker["joints"])
        moved = frames[-1, :n, 0].astype(np.float64).mean() - frames[0, :n, 0].mean()
        assert abs(moved) > 0.01  # it moves, so a wrong sign cannot pass
        assert row[6] == pytest.approx(-moved, rel=1e-4, abs=1e-5)
