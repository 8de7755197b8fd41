"""jelm.programs.sandbox.bench: one JSON line with a fixed schema (a tiny run)."""

from __future__ import annotations

import json

import pytest

from jelm.programs.sandbox import bench

#: Every key of the bench's JSON line and the type of its value.
SCHEMA = {
    "bench": str,
    "seed_programs_per_s": float,
    "hostile_programs_per_s": float,
    "seed_runs_per_s": list,
    "hostile_runs_per_s": list,
    "seed_cpu_ms_per_program": dict,
    "hostile_cpu_ms_per_program": dict,
    "seed_cpu_bound_programs_per_s": (float, type(None)),
    "n_seed": int,
    "n_hostile": int,
    "seed_statuses": dict,
    "hostile_statuses": dict,
    "domain": str,
    "n_distinct_seeds": int,
    "workers": int,
    "cpus": int,
    "isolation": dict,
    "limits": dict,
    "python": str,
}


def test_tiny_run_prints_one_json_line(capsys) -> None:
    argv = ["--n", "8", "--n-hostile", "10", "--repeats", "2", "--workers", "1"]
    out = bench.main(argv)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == json.loads(json.dumps(out, default=str))
    assert set(out) == set(SCHEMA)
    for key, kind in SCHEMA.items():
        assert isinstance(out[key], kind), (key, out[key])
    assert out["bench"] == "jelm.programs.sandbox" and out["domain"] == "sodarace"
    assert (out["n_seed"], out["n_hostile"], out["workers"]) == (8, 10, 1)
    assert len(out["seed_runs_per_s"]) == len(out["hostile_runs_per_s"]) == 2
    assert out["seed_statuses"] == {"ok": 8}
    assert sum(out["hostile_statuses"].values()) == 10 and "ok" not in out["hostile_statuses"]
    assert out["n_distinct_seeds"] == 7
    for cpu in (out["seed_cpu_ms_per_program"], out["hostile_cpu_ms_per_program"]):
        assert {"parent", "total"} <= set(cpu) and cpu["total"] >= 0
    assert out["limits"]["entry"] == "make_walker" and "missing" in out["isolation"]


def test_hostile_programs_take_the_domains_entry() -> None:
    progs = bench.hostile_programs("make_numbers")
    assert len(progs) == len(bench.HOSTILE)
    assert all("def make_numbers(" in p and "{entry}" not in p for p in progs)


def test_unknown_domain_is_refused(capsys) -> None:
    with pytest.raises(SystemExit, match="2"):
        bench.main(["--domain", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
