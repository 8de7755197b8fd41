"""Diff training sets from ledgers: selections, de-duplication, split, bad ledgers."""

from __future__ import annotations

import pytest

from jelm.domains.sodarace.prompts import COMMIT_MESSAGES
from jelm.lm.ledger_data import (
    DatasetError,
    held_out_share,
    ledger_edits,
    read_dataset,
    write_dataset,
)
from jelm.programs.diff import apply_diff
from tests.lm.ledger_fixtures import MESSAGE, write_ledger


def edits(paths, **kw):
    kw.setdefault("held_out", 0.0)
    return ledger_edits(paths, file_name="walker.py", messages=COMMIT_MESSAGES, **kw)


def test_selections_keep_the_children_they_name(tmp_path):
    led = write_ledger(tmp_path / "a.sqlite", n_parents=4)
    accepted = edits([led])
    assert len(accepted.examples) == 4
    assert {e.operator for e in accepted.examples} == {"lm_diff"}
    valid = edits([led], select="valid")
    assert len(valid.examples) == 8  # + the rejected valid gp children; unchanged ones never
    changed = edits([led], select="changed")
    assert len(changed.examples) == 12  # + the invalid ones; crossover children never
    assert {e.operator for e in edits([led], select="changed", operators=["gp"]).examples} == {"gp"}
    assert len(edits([led], select="changed", operators=["gp"]).examples) == 8


def test_each_example_is_a_diff_that_rebuilds_the_child(tmp_path):
    led = write_ledger(tmp_path / "a.sqlite", n_parents=3)
    messages = {m for m, _ in COMMIT_MESSAGES}
    for e in edits([led], select="valid").examples:
        ex = e.example
        assert apply_diff(ex.parent, ex.diff, fuzzy=False).program == ex.child
        assert ex.message in messages
        if e.operator == "lm_diff":
            assert ex.message == MESSAGE  # a message from the domain's set is kept
    again = edits([led], select="valid")
    assert [e.example for e in again.examples] == [
        e.example for e in edits([led], select="valid").examples
    ]


def test_duplicates_across_ledgers_are_dropped_and_counted(tmp_path):
    a = write_ledger(tmp_path / "a.sqlite", n_parents=4)
    b = write_ledger(tmp_path / "b.sqlite", n_parents=6)  # the same 4 programs, and 2 more
    got = edits([a, b])
    assert len(got.examples) == 6
    assert [r["selected"] for r in got.ledgers] == [4, 2]
    assert [r["duplicates"] for r in got.ledgers] == [0, 4]


def test_split_is_by_child_and_stable(tmp_path):
    a = write_ledger(tmp_path / "a.sqlite", n_parents=30)
    b = write_ledger(tmp_path / "b.sqlite", n_parents=10, offset=100)
    one = edits([a], select="changed", held_out=0.3)
    both = edits([b, a], select="changed", held_out=0.3)
    split_one = {e.example.child: e.split for e in one.examples}
    split_both = {e.example.child: e.split for e in both.examples}
    assert all(split_both[c] == s for c, s in split_one.items())
    held = [c for c, s in split_one.items() if s == "held_out"]
    assert 0 < len(held) < len(split_one)
    assert all(held_out_share(c) < 0.3 for c in held)
    assert one.split("held_out") and one.split("train")


def test_dataset_file_round_trips(tmp_path):
    got = edits([write_ledger(tmp_path / "a.sqlite", n_parents=5)], select="valid", held_out=0.5)
    sha = write_dataset(tmp_path / "d.jsonl", got)
    assert len(sha) == 64
    back = read_dataset(tmp_path / "d.jsonl")
    assert back.examples == got.examples
    (tmp_path / "bad.jsonl").write_text('{"parent": "x"}\n')
    with pytest.raises(DatasetError, match="line 1"):
        read_dataset(tmp_path / "bad.jsonl")


def test_bad_ledgers_are_reported_and_skipped(tmp_path):
    good = write_ledger(tmp_path / "good.sqlite", n_parents=2)
    (tmp_path / "empty.sqlite").write_bytes(b"")
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    run = tmp_path / "run"
    run.mkdir()  # a run directory without a ledger
    got = edits([tmp_path / "empty.sqlite", good, tmp_path / "junk.sqlite", run])
    assert len(got.examples) == 2
    errors = [r.get("error", "") for r in got.ledgers]
    assert "not a jelm ledger" in errors[0] and "not a jelm ledger" in errors[2]
    assert "no such file" in errors[3] and errors[1] == ""
    with pytest.raises(DatasetError, match="no ledger could be read"):
        edits([tmp_path / "junk.sqlite"])
    with pytest.raises(DatasetError, match="unknown selection"):
        edits([good], select="best")


def _elite_ledger(path, seeds, rows, qd=None):
    from jelm.qd.ledger import Ledger
    from jelm.qd.records import CandidateRecord

    config = {"seeds": seeds, "seed": 0, "qd": qd or {"kind": "grid", "grid": [4, 4]}}
    with Ledger(path, run_config=config) as led, led.generation(0) as g:
        for program, fitness, niche, status in rows:
            g.add(
                CandidateRecord(
                    operator="gp",
                    program=program,
                    fitness=fitness,
                    niche=niche,
                    status=status,
                    accepted=status == "ok" and program != "NOT_ADMITTED",
                )
            )
    return path


def test_elite_programs_keep_the_fit_share_of_each_niche(tmp_path):
    from jelm.lm.ledger_data import elite_programs

    a = _elite_ledger(
        tmp_path / "a.sqlite",
        ["square"],
        [("A1", 10.0, 0, "ok"), ("A2", 6.0, 0, "ok"), ("A3", 4.0, 0, "ok"), ("B1", -2.0, 1, "ok")],
    )
    b = _elite_ledger(
        tmp_path / "b.sqlite",
        ["cppn_fixed"],
        [
            ("A2", 7.0, 0, "ok"),
            ("B2", -2.5, 1, "ok"),
            ("B3", -4.0, 1, "ok"),
            ("X", 99.0, 0, "exception"),
        ],
    )
    r = _elite_ledger(tmp_path / "r.sqlite", ["radial"], [("R", 50.0, 0, "ok")])
    programs, report = elite_programs([a, b, r], share=0.5)
    got = {(p.program, p.fitness, p.niche) for p in programs}
    # niche 0: best 10 -> keep >= 5 (A2 once, at its best 7); niche 1: best -2 -> >= -3
    assert got == {("A1", 10.0, 0), ("A2", 7.0, 0), ("B1", -2.0, 1), ("B2", -2.5, 1)}
    assert report[2]["excluded"] == ["radial"] and report[0]["programs"] == 4
    strict, _ = elite_programs([a, b, r], share=0.8)
    assert {p.program for p in strict} == {"A1", "B1"}
    with_radial, _ = elite_programs([a, b, r], share=0.5, exclude_seeds=())
    assert {p.program for p in with_radial if p.niche == 0} == {"R"}  # 50 raises the bar
    other = _elite_ledger(tmp_path / "o.sqlite", ["square"], [("O", 1.0, 0, "ok")], {"grid": [8]})
    with pytest.raises(DatasetError, match="another archive"):
        elite_programs([a, other])
