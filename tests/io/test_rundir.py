"""Run directories: config written once and checked on resume, lock, metrics file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jelm.io.rundir import RunDir, RunDirError, config_differences

CONFIG = {"qd": {"grid": [12, 12, 12], "batch": 64}, "mutation": "gp", "generations": 10}


def test_new_run_writes_config_then_resume_checks_it(tmp_path: Path):
    with RunDir(tmp_path / "run", CONFIG) as rd:
        assert not rd.resumed
        assert json.loads((tmp_path / "run" / "config.json").read_text()) == CONFIG
        for sub in ("checkpoints", "plots", "renders"):
            assert (rd.path / sub).is_dir()
    with RunDir(tmp_path / "run", CONFIG) as rd:
        assert rd.resumed
    other = {**CONFIG, "mutation": "direct"}
    with pytest.raises(RunDirError, match=r"mutation: 'gp' -> 'direct'"):
        RunDir(tmp_path / "run", other)
    longer = {**CONFIG, "generations": 20}  # extending the budget is allowed when ignored
    with RunDir(tmp_path / "run", longer, resume_ignore=("generations",)) as rd:
        assert rd.resumed


def test_config_differences_nested():
    new = {"qd": {"grid": [8, 8, 8], "batch": 64}, "mutation": "gp"}
    diffs = config_differences(CONFIG, new)
    assert "qd.grid: [12, 12, 12] -> [8, 8, 8]" in diffs
    assert "generations: 10 -> '<absent>'" in diffs
    assert config_differences(CONFIG, CONFIG) == []


def test_unreadable_config_is_a_clear_error(tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{not json")
    with pytest.raises(RunDirError, match="unreadable"):
        RunDir(tmp_path / "run", CONFIG)


def test_a_second_process_cannot_use_the_directory(tmp_path: Path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        from jelm.io.rundir import RunDir
        rd = RunDir({str(tmp_path / "run")!r}, {CONFIG!r})
        print("holding", flush=True)
        time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(RunDirError, match="in use"):
            RunDir(tmp_path / "run", CONFIG)
    finally:
        proc.kill()
        proc.wait()
    with RunDir(tmp_path / "run", CONFIG) as rd:  # the lock died with the process
        assert rd.resumed


def test_metrics_append_read_truncate_and_torn_line(tmp_path: Path):
    with RunDir(tmp_path / "run", CONFIG) as rd:
        for g in range(5):
            rd.append_metrics({"generation": g, "qd_score": float(g), "max": float("-inf")})
        with open(rd.metrics_path, "a") as f:
            f.write('{"generation": 5, "qd_sc')  # a kill mid-write
        rows = list(rd.metrics())
        assert [r["generation"] for r in rows] == [0, 1, 2, 3, 4]
        assert rows[0]["max"] is None  # non-finite written as null
        rd.truncate_metrics(2)
        assert [r["generation"] for r in rd.metrics()] == [0, 1, 2]
