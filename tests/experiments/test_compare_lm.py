"""experiments/compare_lm.py --reuse: the table is built from the results files a
comparison wrote, without running the main job again (a real subprocess on copies of the
scripts, so the repository's own tables are not touched)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _write_run(results: Path, name: str, qd: float, speed: float | None) -> None:
    rows = [
        {
            "generation": g,
            "evaluations": 1 + 4 * g,
            "qd_score": qd * g / 2,
            "coverage": 0.001 * g,
            "max_fitness": 3.0 + g,
        }
        for g in range(3)
    ]
    (results / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rates = {
        "children": 8,
        "applied": 1.0,
        "ran": 0.75,
        "valid": 0.5,
        "statuses": {"ok": 4, "exception": 2, "invalid_walker": 2},
    }
    if speed is not None:
        rates["candidates_per_s"] = speed
    (results / f"{name}.statuses.json").write_text(json.dumps(rates) + "\n")


def _compare(where: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "compare_lm.py",
            "--reuse",
            "--operators",
            "gp",
            "--seeds",
            "square",
            "--generations",
            "2",
            "--batch",
            "4",
            "--table",
            "t",
            *args,
        ],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_reuse_builds_the_table_from_results_files(tmp_path: Path):
    where = tmp_path / "experiments"
    (where / "results").mkdir(parents=True)
    for script in ("compare_lm.py", "comparison.py"):
        shutil.copy(REPO / "experiments" / script, where / script)
    _write_run(where / "results", "lm_square_gp_0", 1000.0, 150.0)
    _write_run(where / "results", "lm_square_gp_1", 1200.0, 170.0)
    done = _compare(where, "--random-seeds", "0", "1")
    assert done.returncode == 0, done.stderr
    table = (where / "t.md").read_text()
    # the final QD-scores 1000 and 1200 and the stored candidates/s, not a new run's
    row = "| square | gp | 100 +- 0 | 75 +- 0 | 50 +- 0 | 1100 +- 100 |"
    assert row in table, table
    assert "| 160.0 +- 10.0 | - |" in table, table
    assert "- gp: ok 8, exception 4, invalid_walker 4" in table
    assert (where / "t_square.png").stat().st_size > 0

    # results written before candidates/s was kept: a clear error, no table
    _write_run(where / "results", "lm_square_gp_2", 900.0, None)
    failed = _compare(where, "--random-seeds", "2")
    assert failed.returncode != 0
    assert "lm_square_gp_2.statuses.json holds no candidates_per_s" in failed.stderr
