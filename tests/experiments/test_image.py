"""Image evolution through the same ELM loop and run directory as Sodarace
(jelm.experiments.image): ledger with the image domain's descriptors, renders of the
best pictures, resume after kill -9."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jelm.experiments.config import from_mapping
from jelm.experiments.run import evolve

SMALL = {"size": 8, "batch": 8, "generations": 4, "checkpoint_every": 2, "renders": 2}


def _run(path: Path, **over) -> tuple[np.ndarray, list[tuple]]:
    config = from_mapping({**SMALL, **over}, "image")
    _, _, state, _ = evolve(config, path, log=str)
    with sqlite3.connect(path / "ledger.sqlite") as db:
        rows = db.execute(
            "SELECT id, parent_ids, operator, status, fitness, hue, brightness, niche, accepted "
            "FROM candidates ORDER BY id"
        ).fetchall()
    return np.asarray(state.repertoire.fitnesses[:, 0]), rows


def test_a_gp_run_records_images_in_the_domains_words(tmp_path: Path):
    fitness, rows = _run(tmp_path / "run")
    assert len(rows) == 4 + 4 * 8  # the four seeds, then a batch per generation
    assert [r[2] for r in rows[:4]] == ["seed"] * 4 and {r[3] for r in rows[:4]} == {"ok"}
    ok = [r for r in rows if r[3] == "ok"]
    assert all(-1.0 <= r[4] <= 0.0 and 0 <= r[5] <= 1 and 0 <= r[6] <= 1 for r in ok)
    assert np.isfinite(fitness).sum() >= 4
    statuses = {r[3] for r in rows}
    assert "invalid_walker" not in statuses  # the image domain's words, not Sodarace's


def test_the_cli_writes_the_run_directory_and_a_grid_of_the_best(tmp_path: Path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jelm.experiments.image",
            "size=8",
            "batch=8",
            "generations=1",
            "progress=false",
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ELM on image" in proc.stdout and f"writing to {out}/" in proc.stdout
    for name in ("config.json", "ledger.sqlite", "metrics.jsonl", "plots/archive.png"):
        assert (out / name).is_file(), name
    assert (out / "renders" / "grid.png").is_file()
    assert len(list((out / "renders").glob("best*_id*.png"))) == 4
    assert json.loads((out / "config.json").read_text())["domain"] == "image"


KILLED = textwrap.dedent(
    """
    import json, sys
    from jelm.experiments.config import from_mapping
    from jelm.experiments.run import evolve
    config = from_mapping(json.loads(sys.argv[2]), "image")
    evolve(config, sys.argv[1], lambda m: print(int(m["generation"]), flush=True), log=str)
    """
)


@pytest.mark.slow
def test_kill_9_then_rerun_ends_identical(tmp_path: Path):
    generations = 6
    whole_fitness, whole_rows = _run(tmp_path / "whole", generations=generations)
    raw = json.dumps({**SMALL, "generations": generations})
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path / "killed"), raw],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if int(line) >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    with sqlite3.connect(tmp_path / "killed" / "ledger.sqlite") as db:
        (last,) = db.execute("SELECT max(generation) FROM generations").fetchone()
    assert 3 <= last < generations
    fitness, rows = _run(tmp_path / "killed", generations=generations)
    np.testing.assert_array_equal(whole_fitness, fitness)
    assert rows == whole_rows


@pytest.mark.parametrize("operator", ["direct"])
def test_sodarace_operators_are_refused_before_work(tmp_path: Path, operator: str):
    from jelm.experiments.config import ConfigError

    with pytest.raises(ConfigError, match="works on sodarace, not on 'image'"):
        from_mapping({"mutation": operator}, "image")
