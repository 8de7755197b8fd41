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
