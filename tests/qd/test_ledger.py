"""jelm.qd.ledger on real SQLite files: round trips, ids, atomic generations, kill -9 crash
safety (real subprocesses), bad files, concurrent readers, throughput."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from jelm.qd.ledger import CandidateRecord, Improvement, Ledger, LedgerError

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def rec(**kw) -> CandidateRecord:
    base = dict(operator="gp", program="def make_walker():\n    pass\n", status="ok")
    base.update(kw)
    return CandidateRecord(**base)


def assert_no_sqlite_chain(e: BaseException) -> None:
    """The error prints as one readable line, not over a chained sqlite3 traceback."""
    assert not isinstance(e, sqlite3.Error)
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)


def check_whole_generations(path: Path) -> list[int]:
    """Every generation row has exactly n_candidates rows, and no candidate is orphaned."""
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute(
            "SELECT g.generation, g.n_candidates, "
            "(SELECT count(*) FROM candidates c WHERE c.generation = g.generation) "
            "FROM generations g ORDER BY g.generation"
        ).fetchall()
        for g, n, actual in rows:
            assert n == actual, f"generation {g}: row says {n} candidates, found {actual}"
        orphans = db.execute(
            "SELECT count(*) FROM candidates WHERE generation NOT IN "
            "(SELECT generation FROM generations)"
        ).fetchone()[0]
        assert orphans == 0
        # ids grow with the generation
        spans = db.execute(
            "SELECT generation, min(id), max(id) FROM candidates GROUP BY generation "
            "ORDER BY generation"
        ).fetchall()
        for (_, _, hi), (_, lo, _) in itertools.pairwise(spans):
            assert lo > hi
        return [g for g, _, _ in rows]
    finally:
        db.close()


# -- round trip ----------------------------------------------------------------------------


def test_round_trip_every_column(tmp_path):
    full = CandidateRecord(
        parent_ids=(3, 1),
        operator="lm_crossover",
        message="Changed parameters in make_walker function.",
        diff="--- walker.py\n+++ walker.py\n@@ -1 +1 @@\n-a\n+b\n",
        program="def make_walker():\n    return 'ünïcode ✓'\n",
        status="ok",
        error="warning: nothing",
        fitness=-12.25,
        descriptors={"height": 0.5, "width": 1e-300, "mass": 7.0},
        niche=1727,
        accepted=True,
        created=1_700_000_000.125,
        elapsed_s=0.031,
    )
    empty = CandidateRecord(operator="gp", status="syntax_error", error="SyntaxError: x")
    nan = rec(
        fitness=float("nan"),
        descriptors={"height": np.nan, "width": np.float32("nan")},
        elapsed_s=math.nan,
    )
    inf = rec(fitness=-math.inf, descriptors={"mass": math.inf})
    numpy_typed = rec(
        parent_ids=(np.int64(1),),
        fitness=np.float32(1.5),
        descriptors={"height": np.float64(2.5)},
        niche=np.int32(4),
        accepted=np.bool_(True),
    )
    with Ledger(tmp_path / "l.sqlite", descriptors=("height", "width", "mass")) as led:
        with led.generation(0) as gen:
            ids = gen.add_many([full, empty, nan, inf, numpy_typed])
        assert ids == [1, 2, 3, 4, 5]
    with Ledger(tmp_path / "l.sqlite") as led:
        got = led.get(1)
        assert got == CandidateRecord(**{**full.__dict__, "id": 1, "generation": 0})
        assert led.descriptor_names == ("height", "width", "mass")
        e = led.get(2)
        assert (e.program, e.fitness, e.niche, e.accepted) == (None, None, None, 0)
        assert e.descriptors == {"height": None, "width": None, "mass": None}
        assert e.parent_ids == () and e.status == "syntax_error" and e.created > 1e9
        # NaN is stored as NULL and reads back as None ("no value"); inf is kept
        n = led.get(3)
        assert (n.fitness, n.descriptors["height"], n.descriptors["width"], n.elapsed_s) == (
            None,
            None,
            None,
            None,
        )
        i = led.get(4)
        assert i.fitness == -math.inf and i.descriptors["mass"] == math.inf
        t = led.get(5)
        assert t.parent_ids == (1,) and t.fitness == 1.5 and t.niche == 4 and t.accepted is True
        assert type(t.niche) is int and type(t.fitness) is float
        with pytest.raises(KeyError, match="no candidate 99"):
            led.get(99)


def test_record_from_child():
    from jelm.mutation.base import Child

    ok = Child(parent_ids=(4,), operator="gp", program="x = 1\n", message="m", diff="d")
    bad = Child(parent_ids=(4,), operator="lm_diff", program=None, error="diff did not apply")
    r = CandidateRecord.from_child(ok, fitness=2.0, status="ok")
    assert (r.parent_ids, r.program, r.status, r.fitness, r.message) == (
        (4,),
        "x = 1\n",
        "ok",
        2.0,
        "m",
    )
    b = CandidateRecord.from_child(bad)
    assert b.status == "mutation_failed" and b.error == "diff did not apply"


def test_queries_programs_filters_metrics_export(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        assert led.last_generation() is None and led.count() == 0
        with led.generation(0, metrics={"qd_score": np.float32(1.5), "grid": np.arange(3)}) as g:
            seeds = g.add_many(
                [rec(program=f"seed{k}", fitness=1.0, accepted=True) for k in range(3)]
            )
        with led.generation(1) as g:
            g.add(rec(parent_ids=(seeds[0],), program="c", fitness=math.nan, status="timeout"))
            g.add(rec(parent_ids=(seeds[1],), program="d", fitness=3.0, accepted=True))
            g.metrics["coverage"] = 0.25
        assert led.last_generation() == 1
        assert led.count() == 5 and led.count(generation=1) == 2
        assert led.count(accepted=True) == 4 and led.count(status=["timeout", "ok"]) == 5
        assert [r.program for r in led.iter_candidates(status="timeout")] == ["c"]
        assert [r.id for r in led.iter_candidates(generation=0, accepted=True)] == seeds
        assert led.programs([seeds[2], np.int64(seeds[0])]) == {
            seeds[2]: "seed2",
            seeds[0]: "seed0",
        }
        with pytest.raises(KeyError, match="99"):
            led.programs([seeds[0], 99])
        assert led.generation_metrics() == {
            0: {"qd_score": 1.5, "grid": [0, 1, 2]},
            1: {"coverage": 0.25},
        }
        infos = led.generations()
        assert [(i.generation, i.n_candidates) for i in infos] == [(0, 3), (1, 2)]
        n = led.export_jsonl(tmp_path / "out.jsonl", generation=1)
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert n == 2 == len(lines)
        first = json.loads(lines[0])  # strict JSON: NaN became null
        assert first["fitness"] is None and first["parent_ids"] == [seeds[0]]
        assert first["status"] == "timeout" and first["generation"] == 1
        assert not list(tmp_path.glob(".out.jsonl.tmp*"))


def test_improvements(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        with led.generation(0) as g:
            a, b, nofit = g.add_many(
                [rec(program="A", fitness=1.0), rec(program="B", fitness=5.0), rec(program="N")]
            )
        with led.generation(1) as g:
            win = g.add(
                rec(
                    parent_ids=(a,),
                    program="A2",
                    fitness=3.5,
                    diff="dA",
                    message="mA",
                    accepted=True,
                )
            )
            g.add(rec(parent_ids=(a,), program="A3", fitness=0.5, diff="loss", accepted=True))
            g.add(rec(parent_ids=(a,), program="A4", fitness=9.0, accepted=False))  # rejected
            g.add(rec(parent_ids=(a, b), program="X", fitness=9.0, accepted=True))  # crossover
            g.add(rec(parent_ids=(nofit,), program="N2", fitness=9.0, accepted=True))
            g.add(rec(parent_ids=(b,), program="B2", fitness=None, accepted=True))
            small = g.add(rec(parent_ids=(b,), program="B3", fitness=5.5, accepted=True))
        led_rows = list(led.iter_improvements())
        assert led_rows == [
            Improvement("A", "A2", "dA", "mA", 2.5),
            Improvement("B", "B3", "", "", 0.5),
        ]
        assert win < small
        assert [r.child_program for r in led.iter_improvements(min_fitness_gain=1.0)] == ["A2"]
        assert {r.child_program for r in led.iter_improvements(-math.inf)} == {"A2", "A3", "B3"}


def test_accepted_is_false_unless_set(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led, led.generation(0) as g:
        g.add(rec(accepted=True))
        g.add(rec())
    with Ledger(tmp_path / "l.sqlite") as led:
        assert led.count(accepted=True) == 1 and led.count(accepted=False) == 1


# -- ids and transactions ------------------------------------------------------------------


def test_ids_monotonic_across_generations_rollback_and_reopen(tmp_path):
    path = tmp_path / "l.sqlite"
    with Ledger(path) as led:
        with led.generation(0) as g:
            assert g.add_many([rec(), rec(), rec()]) == [1, 2, 3]
        with led.generation(1) as g:
            assert g.add(rec()) == 4
            assert g.add_many([rec(), rec()]) == [5, 6]
        with pytest.raises(RuntimeError, match="boom"), led.generation(2) as g:
            rolled_back = g.add_many([rec()] * 5)
            raise RuntimeError("boom")
        assert rolled_back == [7, 8, 9, 10, 11]
        with led.generation(2) as g:
            assert g.add(rec()) == 12  # ids of the rolled-back generation are not reused
    with Ledger(path) as led:
        with led.generation(3) as g:
            ids = g.add_many([rec(), rec()])
        assert ids == [13, 14]
        all_ids = [r.id for r in led.iter_candidates()]
        assert all_ids == sorted(all_ids) == [1, 2, 3, 4, 5, 6, 12, 13, 14]
    check_whole_generations(path)


def test_rollback_leaves_no_trace(tmp_path):
    path = tmp_path / "l.sqlite"
    with Ledger(path) as led:
        with led.generation(0) as g:
            g.add(rec(program="seed"))
        with pytest.raises(ValueError, match="operator crashed"), led.generation(1) as g:
            g.add_many([rec(program=f"p{k}") for k in range(100)])
            g.metrics["qd_score"] = 3.0
            raise ValueError("operator crashed")
        assert led.last_generation() == 0 and led.count() == 1
        assert led.generation_metrics() == {0: {}}
        assert [r.program for r in led.iter_candidates()] == ["seed"]
        # and the same generation can then be written
        with led.generation(1) as g:
            g.add(rec(program="again"))
    with Ledger(path) as led:
        assert [r.program for r in led.iter_candidates()] == ["seed", "again"]
    check_whole_generations(path)


def test_duplicate_or_earlier_generation_refused(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        with led.generation(0) as g:
            g.add(rec())
        with led.generation(1) as g:
            g.add(rec())
        with pytest.raises(LedgerError, match="generation 1 is already committed"):
            led.generation(1).__enter__()
        with (
            pytest.raises(LedgerError, match="generation 0 is already committed"),
            led.generation(0) as g,
        ):
            g.add(rec())
        # gaps are allowed (an empty generation is a valid commit too); going back is not
        with led.generation(3):
            pass
        assert led.generations()[-1].n_candidates == 0
        with pytest.raises(LedgerError, match="generation 2 is not after the last \\(3\\)"):
            led.generation(2).__enter__()
        # no transaction was left open by the refusals
        with led.generation(4) as g:
            g.add(rec())
        assert led.count() == 3 and led.last_generation() == 4
        assert [i.generation for i in led.generations()] == [0, 1, 3, 4]


def test_misuse_is_refused(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        with led.generation(0) as g:
            g.add(rec())
        with pytest.raises(LedgerError, match="outside"):
            g.add(rec())
        with led.generation(1) as g:
            with pytest.raises(LedgerError, match="still open"), led.generation(2):
                pass
            with pytest.raises(LedgerError, match="assigned by the ledger"):
                g.add(rec(id=5))
            with pytest.raises(LedgerError, match="generation 7"):
                g.add(rec(generation=7))
            g.add(rec(generation=1))
        assert led.count(generation=1) == 1
    with pytest.raises(LedgerError, match="closed"):
        led.count()


def test_readonly_refuses_writes_and_missing_file(tmp_path):
    with pytest.raises(LedgerError, match="no such file"):
        Ledger(tmp_path / "missing.sqlite", readonly=True)
    with Ledger(tmp_path / "l.sqlite") as led, led.generation(0) as g:
        g.add(rec())
    with Ledger(tmp_path / "l.sqlite", readonly=True) as ro:
        assert ro.count() == 1
        with pytest.raises(LedgerError, match="read-only"):
            ro.generation(1)


# -- config and bad files ------------------------------------------------------------------


def test_run_config_hash(tmp_path):
    path = tmp_path / "l.sqlite"
    cfg = {"qd": {"grid": [12, 12, 12], "bounds": np.array([0.0, 1.0])}, "mutation": "gp"}
    Ledger(path, run_config=cfg).close()
    same_other_order = {"mutation": "gp", "qd": {"bounds": [0.0, 1.0], "grid": [12, 12, 12]}}
    Ledger(path, run_config=same_other_order).close()
    Ledger(path).close()  # no config: readers skip the check
    with pytest.raises(LedgerError) as info:
        Ledger(path, run_config={**cfg, "qd": {**cfg["qd"], "grid": [8, 8, 8]}})
    msg = str(info.value)
    assert "different config" in msg and "qd.grid" in msg and "[8, 8, 8]" in msg
    assert_no_sqlite_chain(info.value)
    # a ledger created without a config adopts the first one given
    Ledger(tmp_path / "b.sqlite").close()
    Ledger(tmp_path / "b.sqlite", run_config={"a": 1}).close()
    with pytest.raises(LedgerError, match="a: 1 -> 2"):
        Ledger(tmp_path / "b.sqlite", run_config={"a": 2})


def _make_ledger(path: Path, n: int = 2000) -> None:
    with Ledger(path) as led, led.generation(0) as g:
        g.add_many([rec(program="x" * 400 + str(k)) for k in range(n)])
    assert not Path(str(path) + "-wal").exists()  # closed cleanly: one self-contained file


@pytest.mark.parametrize("kind", ["random", "truncated_half", "header_only", "text", "sqlite"])
def test_bad_files_give_a_readable_error(tmp_path, kind):
    path = tmp_path / "l.sqlite"
    rng = np.random.default_rng(0)
    if kind == "random":
        path.write_bytes(rng.bytes(3 * 4096))
    elif kind == "text":
        path.write_text("run_dir: /tmp/x\n" * 100)
    elif kind == "sqlite":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE something (x)")
        db.commit()
        db.close()
    else:
        _make_ledger(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "truncated_half" else data[:100])
    with pytest.raises(LedgerError) as info:
        Ledger(path)
    msg = str(info.value)
    assert msg.startswith(f"{path} is not a jelm ledger (")
    assert_no_sqlite_chain(info.value)
    with pytest.raises(LedgerError, match="is not a jelm ledger"):
        Ledger(path, readonly=True)


def test_descriptor_columns_come_from_the_domain(tmp_path):
    """A ledger has one column per descriptor of the domain that wrote it; reopening with
    other descriptors, or adding a record with a descriptor it does not record, fails."""
    path = tmp_path / "img.sqlite"
    with Ledger(path, descriptors=("hue", "brightness")) as led, led.generation(0) as g:
        g.add(rec(descriptors={"hue": 0.25, "brightness": 0.5}))
    db = sqlite3.connect(path)
    columns = [r[1] for r in db.execute("PRAGMA table_info(candidates)")]
    db.close()
    assert columns[-2:] == ["hue", "brightness"] and "height" not in columns
    with Ledger(path) as led:  # a reader takes whatever the ledger records
        assert led.descriptor_names == ("hue", "brightness")
        assert led.get(1).descriptors == {"hue": 0.25, "brightness": 0.5}
        out = tmp_path / "x.jsonl"
        led.export_jsonl(out)
        assert json.loads(out.read_text())["descriptors"] == {"hue": 0.25, "brightness": 0.5}
    with pytest.raises(LedgerError, match=r"records the descriptors \['hue', 'brightness'\]"):
        Ledger(path, descriptors=("height", "width", "mass"))
    with (
        Ledger(path) as led,
        pytest.raises(LedgerError, match="does not record"),
        led.generation(1) as g,
    ):
        g.add(rec(descriptors={"mass": 1.0}))
    for bad in (("Height",), ("a b",), ("fitness",), ("x", "x")):
        with pytest.raises(LedgerError, match="cannot be ledger columns"):
            Ledger(tmp_path / "bad.sqlite", descriptors=bad)


def test_a_version_1_ledger_reads_as_sodarace_descriptors(tmp_path):
    """Ledgers of schema version 1 had the Sodarace columns and no descriptor list."""
    path = tmp_path / "v1.sqlite"
    with Ledger(path, descriptors=("height", "width", "mass")) as led, led.generation(0) as g:
        g.add(rec(descriptors={"height": 1.0, "width": 2.0, "mass": 3.0}))
    db = sqlite3.connect(path)
    db.execute("DELETE FROM meta WHERE key = 'descriptor_names'")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with Ledger(path, readonly=True) as led:
        assert led.descriptor_names == ("height", "width", "mass")
        assert led.get(1).descriptors == {"height": 1.0, "width": 2.0, "mass": 3.0}


def test_schema_version_mismatch(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="schema version 99; this jelm reads versions 1, 2"):
        Ledger(path)


def test_directory_is_refused(tmp_path):
    with pytest.raises(LedgerError, match="is a directory"):
        Ledger(tmp_path)


# -- crash safety and concurrency (real processes) -----------------------------------------

WRITER = textwrap.dedent(
    """
    import random, sys
    from jelm.qd.ledger import CandidateRecord, Ledger
    path, seed = sys.argv[1], int(sys.argv[2])
    rnd = random.Random(seed)
    log = open(sys.argv[3], "a", buffering=1)
    with Ledger(path, run_config={"seed": 0}) as led:
        g = (led.last_generation() or 0) + 1
        log.write("ready\\n")
        while True:
            log.write(f"begin {g}\\n")
            with led.generation(g, metrics={"g": g}) as gen:
                for _ in range(rnd.randint(1, 8)):
                    gen.add_many([
                        CandidateRecord(parent_ids=(1,), operator="gp", status="ok",
                                        program="x = %d\\n" % k * rnd.randint(1, 60),
                                        fitness=rnd.random())
                        for k in range(rnd.randint(1, 80))
                    ])
            log.write(f"committed {g}\\n")
            g += 1
    """
)


def _wait_for(logfile: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if logfile.exists() and text in logfile.read_text():
            return
        time.sleep(0.005)
    raise AssertionError(f"child never wrote {text!r}")


def test_kill_9_leaves_only_whole_generations(tmp_path):
    rng = np.random.default_rng(1234)
    path = tmp_path / "l.sqlite"
    log = tmp_path / "log.txt"
    with Ledger(path, run_config={"seed": 0}) as led, led.generation(0) as g:
        g.add(rec(program="seed", fitness=0.0, accepted=True))
    killed_mid_transaction = 0
    trials = 6
    for trial in range(trials):
        log.write_text("")
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(trial), str(log)], env=ENV
        )
        _wait_for(log, "ready")
        time.sleep(float(rng.uniform(0.05, 0.4)))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        words = [line.split() for line in log.read_text().splitlines()]
        committed = {int(w[1]) for w in words if w[0] == "committed"}
        begun = [int(w[1]) for w in words if w[0] == "begin"]
        assert committed, "the writer committed nothing before the kill; trial too short"
        gens = check_whole_generations(path)
        assert gens == list(range(len(gens))), "generations are contiguous"
        # nothing the writer saw committed is lost
        assert committed <= set(gens)
        # the generation being written at the kill is all there (the kill came after its
        # COMMIT) or not there at all (check_whole_generations); count the second case
        if begun and begun[-1] not in gens:
            killed_mid_transaction += 1
        with Ledger(path, run_config={"seed": 0}) as led:
            assert led.last_generation() == gens[-1]
            assert led.generation_metrics()[gens[-1]] == {"g": gens[-1]}
    print(f"kill -9: {trials} trials, {killed_mid_transaction} killed inside a generation")
    assert killed_mid_transaction >= 1, "no trial hit an open transaction; the test proved little"
    # and the ledger goes on with ids above everything before
    with Ledger(path, run_config={"seed": 0}) as led:
        top = max(r.id for r in led.iter_candidates())
        with led.generation(led.last_generation() + 1) as g:
            assert g.add(rec()) > top


def test_reader_in_another_process_reads_while_writer_writes(tmp_path):
    path = tmp_path / "l.sqlite"
    with Ledger(path, run_config={"seed": 0}) as led, led.generation(0) as g:
        g.add_many([rec(program=f"seed{k}") for k in range(10)])

    # 1. deterministic: the writer holds generation 1 open; a reader is not blocked and sees
    #    only committed generations
    holder = textwrap.dedent(
        """
        import sys
        from jelm.qd.ledger import CandidateRecord, Ledger
        with Ledger(sys.argv[1]) as led, led.generation(1) as gen:
            gen.add_many([CandidateRecord(operator="gp", status="ok") for _ in range(500)])
            print("open", flush=True)
            sys.stdin.readline()
        print("committed", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "open"
        t0 = time.perf_counter()
        with Ledger(path, readonly=True) as ro:
            assert ro.count() == 10 and ro.last_generation() == 0
            assert len(list(ro.iter_candidates())) == 10
        with Ledger(path) as rw:  # a read-write opener is not blocked either
            assert rw.count() == 10
        assert time.perf_counter() - t0 < 2.0
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "committed"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    with Ledger(path, readonly=True) as ro:
        assert ro.count() == 510 and ro.last_generation() == 1

    # 2. continuous: a writer commits generations in a loop; the reader polls and always sees
    #    whole generations, and sees them grow
    log = tmp_path / "log.txt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "7", str(log)], env=ENV)
    seen = []
    try:
        _wait_for(log, "ready")
        with Ledger(path, readonly=True) as ro:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                t = time.perf_counter()
                infos = ro.generations()
                for info in infos[-3:]:
                    assert ro.count(generation=info.generation) == info.n_candidates
                assert time.perf_counter() - t < 1.0
                seen.append(infos[-1].generation)
    finally:
        proc.kill()
        proc.wait()
    assert seen == sorted(seen) and seen[-1] > seen[0] + 3, seen[:: max(1, len(seen) // 10)]
    print(f"reader: {len(seen)} polls while the writer went from gen {seen[0]} to {seen[-1]}")
    check_whole_generations(path)


# -- throughput ----------------------------------------------------------------------------


def test_throughput_10k_candidates_one_generation(tmp_path):
    program = "def make_walker():\n" + "    wc.add_joint(1.0, 2.0)\n" * 30
    records = [
        rec(
            parent_ids=(1,),
            program=program,
            diff="@@ -1 +1 @@\n-a\n+b\n",
            message="Changed make_walker function.",
            fitness=float(k),
            descriptors={"height": 1.0, "width": 2.0, "mass": 3.0},
            niche=k % 1728,
            accepted=k % 7 == 0,
        )
        for k in range(10_000)
    ]
    with Ledger(tmp_path / "l.sqlite", descriptors=("height", "width", "mass")) as led:
        with led.generation(0) as g:
            g.add(rec())
        t0 = time.perf_counter()
        with led.generation(1) as g:
            ids = g.add_many(records)
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k in range(2, 22):
            with led.generation(k) as g:
                g.add(rec())
        commit = (time.perf_counter() - t0) / 20
        t0 = time.perf_counter()
        progs = led.programs(ids[::10])
        read = time.perf_counter() - t0
        assert len(ids) == 10_000 and len(progs) == 1000 and led.count(generation=1) == 10_000
    print(
        f"ledger: 10,000 candidates (~{len(program)} B programs) in one generation: "
        f"{dt * 1e3:.0f} ms; a 1-candidate generation commit: {commit * 1e3:.2f} ms; "
        f"programs() of 1,000 ids: {read * 1e3:.1f} ms"
    )
    assert dt < 5.0


def test_set_outcome_records_the_archive_verdict_before_commit(tmp_path):
    """Ids come first (the archive stores them), the archive's verdict after; both land in
    the same transaction, and ids of another generation are refused."""
    from jelm.qd.ledger import CandidateRecord, Ledger, LedgerError

    with Ledger(tmp_path / "l.sqlite") as led:
        with led.generation(0) as gen:
            ids = gen.add_many([CandidateRecord(status="ok", fitness=1.0) for _ in range(3)])
            gen.set_outcome(ids, [True, False, True], [5, None, 7])
        got = [led.get(i) for i in ids]
        assert [r.accepted for r in got] == [True, False, True]
        assert [r.niche for r in got] == [5, None, 7]
        with led.generation(1) as gen:
            gen.add(CandidateRecord(status="ok"))
            with pytest.raises(LedgerError, match="were not added"):
                gen.set_outcome([ids[0]], [True], [1])
