"""Tests for jelm.domains.sodarace.corpus: the diff model's training corpus (ELM §3.1, §4).

Every check runs the real thing: the children are executed with the real walker API and
validated, the diffs are applied with the real applier (``jelm.programs.diff``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import time
from collections import Counter

import numpy as np
import pytest

from jelm.domains.sodarace.api import DEFAULT_LIMITS
from jelm.domains.sodarace.corpus import (
    KINDS,
    MSG_PARAMS,
    MSG_SMALL,
    MSG_STRUCT,
    Example,
    generate_corpus,
    make_corpus,
    run_program,
    training_text,
)
from jelm.domains.sodarace.prompts import COMMIT_MESSAGES
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.mutation.base import unified_diff
from jelm.programs.diff import apply_diff, elm_prompt

N = 1500


@pytest.fixture(scope="module")
def made():
    t0 = time.perf_counter()
    examples, stats = generate_corpus(N, seed=7)
    seconds = time.perf_counter() - t0
    print(f"\ncorpus: {N} examples in {seconds:.2f} s ({N / seconds:.0f}/s), {stats.to_dict()}")
    return examples, stats


@pytest.fixture(scope="module")
def examples(made) -> list[Example]:
    return made[0]


def walker_key(walker):
    return walker.joints, walker.muscles


def test_size_types_and_determinism(examples):
    assert len(examples) == N
    assert all(isinstance(e, Example) for e in examples)
    again = make_corpus(200, seed=7)
    assert again == make_corpus(200, seed=7)
    assert again != make_corpus(200, seed=8)
    # a shorter corpus is the same lineages, cut earlier, then shuffled
    assert set(again) <= set(examples)
    assert make_corpus(0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        make_corpus(-1)


#: sha256 of make_corpus(200, seed=7): the corpus the shipped diff model's data came from.
GOLDEN_CORPUS = "e5a03263fbc943a87f6b9b8ff8a0a474f4562c9ace4ff89cff0da7a8d9120ef8"


def test_corpus_is_the_recorded_one():
    """Every example of a small corpus, byte for byte: a change here changes the diff
    model's training data; update the digest only for a change that is meant."""
    h = hashlib.sha256()
    for e in make_corpus(200, seed=7):
        h.update("\0".join((e.parent, e.child, e.message, e.diff, e.kind)).encode())
    assert h.hexdigest() == GOLDEN_CORPUS


@pytest.mark.slow
def test_workers_do_not_change_the_corpus():
    assert make_corpus(150, seed=3, workers=2) == make_corpus(150, seed=3)


def test_every_diff_applies_and_gives_the_child(examples):
    for e in examples:
        assert e.parent != e.child
        assert e.diff == unified_diff(e.parent, e.child, "walker.py")
        applied = apply_diff(e.parent, e.diff, fuzzy=False)
        assert applied.exact and applied.program == e.child


def test_every_child_builds_a_valid_walker_that_differs_from_its_parent(examples):
    cache = {}
    for e in examples:
        for text in (e.parent, e.child):
            if text not in cache:
                walker = run_program(text)
                assert walker is not None, text
                walker.validate(DEFAULT_LIMITS)
                cache[text] = walker_key(walker)
        assert cache[e.parent] != cache[e.child]


def test_edits_are_textual_and_keep_comments_and_formatting(examples):
    for e in examples:
        # the module docstring and the import survive every edit, byte for byte
        doc = ast.get_docstring(ast.parse(e.parent), clean=False)
        assert doc is not None and doc in e.child
        assert "from jelm.programs.walker_api import walker_creator\n" in e.child
        # nothing outside the changed lines moves: every hunk is small
        changed = [line for line in e.diff.splitlines()[2:] if line[:1] in "+-"]
        assert 1 <= len(changed) <= 24, e.diff
    # comments are kept: a comment line disappears only when the diff removes it
    for e in examples:
        removed = sum("#" in line for line in e.diff.splitlines()[2:] if line[:1] == "-")
        assert e.child.count("#") >= e.parent.count("#") - removed
    assert np.mean([e.child.count("\n#") + e.child.count("  #") for e in examples]) > 4


def test_kinds_messages_and_odds(made):
    examples, stats = made
    assert set(KINDS.values()) == {MSG_STRUCT, MSG_PARAMS, MSG_SMALL}
    kinds = Counter(e.kind for e in examples)
    assert set(kinds) == set(KINDS), set(KINDS) - set(kinds)
    for e in examples:
        assert e.message == KINDS[e.kind]
    counts = Counter(e.message for e in examples)
    for message, odds in COMMIT_MESSAGES:
        assert abs(counts[message] / N - odds) < 0.04, (message, counts[message] / N)
    # a small change is one literal on one line
    for e in examples:
        if e.message == MSG_SMALL:
            body = e.diff.splitlines()[2:]
            assert sum(line.startswith("-") for line in body) == 1, e.diff
            assert sum(line.startswith("+") for line in body) == 1, e.diff
    assert stats.examples == N and sum(stats.messages.values()) == N


def test_structural_kinds_do_what_they_say(examples):
    by_kind: dict[str, list[Example]] = {}
    for e in examples:
        by_kind.setdefault(e.kind, []).append(e)

    def counts(text):
        w = run_program(text)
        return w.n_joints, w.n_links

    for e in by_kind["add_limb"][:30]:
        (pj, pl), (cj, cl) = counts(e.parent), counts(e.child)
        assert cj in (pj + 1, pj + 2) and cl in (pl + 2, pl + 3)
        assert "wc.add_joint(" in e.diff
    for e in by_kind["add_link"][:30]:
        (pj, pl), (cj, cl) = counts(e.parent), counts(e.child)
        assert cj == pj and cl == pl + 1
    for e in by_kind["remove_muscle"][:30]:
        removed = [line for line in e.diff.splitlines()[2:] if line.startswith("-")]
        assert any("wc.add_muscle(" in line for line in removed)
        assert not any(line.startswith("+") for line in e.diff.splitlines()[2:])
    for e in by_kind["tweak_number"][:30]:
        assert counts(e.parent)[0] == counts(e.child)[0] or "range" in e.parent


def test_parents_are_diverse_chains_of_edits(made):
    examples, stats = made
    assert set(stats.depths) == set(range(11))
    # depths are roughly uniform: no depth has more than twice its share
    assert max(stats.depths.values()) < 2 * N / 11
    parents = {e.parent for e in examples}
    assert len(parents) > N // 2
    seeds = {seed_source(name) for name in SEED_NAMES}
    assert 0.03 < sum(e.parent in seeds for e in examples) / N < 0.2
    assert {name for name in SEED_NAMES if any(e.parent == seed_source(name) for e in examples)}
    assert max(len(e.parent) for e in examples) <= 5000
    assert max(len(e.child) for e in examples) <= 5000


def test_rejections_are_counted(made):
    _, stats = made
    assert stats.candidates > N
    assert 0.0 < stats.rejection_rate < 0.3
    assert sum(stats.rejected.values()) == sum(stats.rejected_by_kind.values())


def test_training_text_is_the_elm_format(examples):
    e = examples[0]
    prompt, target = training_text(e)
    assert prompt == elm_prompt(e.parent, e.message, "walker.py")
    assert prompt.startswith("<NME> walker.py\n<BEF> ") and prompt.endswith("\n<DFF> ")
    assert f"\n<MSG> {e.message}\n" in prompt
    assert target == e.diff and target.startswith("--- walker.py\n+++ walker.py\n@@ ")


def test_seeds_may_be_sources_and_bad_seeds_are_refused():
    source = seed_source("radial")
    corpus = make_corpus(40, seed=1, seeds=[source])
    assert len(corpus) == 40
    assert all("N_RIM" in e.parent for e in corpus)
    with pytest.raises(ValueError, match="unknown seed"):
        make_corpus(5, seeds=["no_such_seed"])
    broken = source.replace("return wc.get_walker()", "return None")
    with pytest.raises(ValueError, match="valid walker"):
        make_corpus(5, seeds=[broken])
    with pytest.raises(ValueError, match="no seeds"):
        make_corpus(5, seeds=[])


def test_max_chars_caps_programs():
    examples, stats = generate_corpus(100, seed=2, seeds=["square"], max_chars=1900)
    assert all(len(e.child) <= 1900 and len(e.parent) <= 1900 for e in examples)
    assert stats.rejected["too_long"] > 0


def test_run_program_guards():
    assert run_program(seed_source("square")) is not None
    assert run_program("def make_walker(:\n") is None
    assert run_program("x = 1\n") is None
    spin = "def make_walker():\n    while True:\n        pass\n"
    t0 = time.perf_counter()
    assert run_program(spin, timeout_s=0.2) is None
    assert time.perf_counter() - t0 < 2.0
    many = (
        "from jelm.domains.sodarace.api import walker_creator\n"
        "def make_walker():\n"
        "    wc = walker_creator()\n"
        "    for k in range(10**7):\n"
        "        wc.add_joint(k, 0)\n"
        "    return wc.get_walker()\n"
    )
    t0 = time.perf_counter()
    assert run_program(many) is None
    assert time.perf_counter() - t0 < 1.0
    invalid = seed_source("square").replace("10.0, 0.0)", "12.0, 0.0)")
    assert run_program(invalid) is None


def test_run_program_accepts_the_legacy_api_path():
    from jelm.domains.sodarace.program import LEGACY_API

    canonical = seed_source("radial").replace(LEGACY_API, "jelm.domains.sodarace.api")
    assert canonical != seed_source("radial")
    assert walker_key(run_program(canonical)) == walker_key(run_program(seed_source("radial")))


def test_walker_sites_know_the_walker_api():
    """Literals of a seed get the walker API's roles; joint expressions come from the names
    make_walker bound."""
    from jelm.domains.sodarace.corpus.program import WalkerSites, build
    from jelm.domains.sodarace.corpus.run import make_runner

    roles = {}
    for name in ("square", "galloper"):
        source = seed_source(name)
        sites = WalkerSites(source, ast.parse(source))
        roles[name] = Counter(n.role for n in sites.nums)
        for n in sites.nums:
            assert float(source[n.start : n.end].replace(" ", "")) == n.value
    assert roles["square"]["amp"] == roles["square"]["phase"] == 3
    assert roles["galloper"]["const"] >= 5 and roles["galloper"]["range"] >= 1
    assert roles["square"]["coord"] >= 2 and roles["galloper"]["coord"] >= 2
    source = seed_source("radial")
    sites = WalkerSites(source, ast.parse(source))
    assert {n.name for n in sites.nums if n.role == "const"} == {
        "N_RIM",
        "RADIUS",
        "AMPLITUDE",
        "DIRECTION",
    }
    assert len(sites.phase_exprs) == 2  # "phase = ..." and the add_muscle that uses it
    assert sites.muscles and all(c.name == "add_muscle" for c in sites.muscles)
    assert sites.ret_line is not None
    assert source.splitlines()[sites.ret_line - 1].strip() == "return wc.get_walker()"
    program, reason = build(source, 0, DEFAULT_LIMITS, make_runner(1.0))
    assert reason == "" and program is not None
    refs, lists = program.refs
    assert refs and all(0 <= j < program.walker.n_joints for _, j in refs)
    assert any(name == "rim" for name, _ in lists)


def test_cli_writes_examples(tmp_path, capsys):
    from jelm.domains.sodarace.corpus.cli import main

    out = tmp_path / "corpus.jsonl"
    main(["--n", "30", "--seed", "4", "--out", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 30 and set(report["parent_chars"]) >= {"min", "p50", "max"}
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [Example(**r) for r in rows] == make_corpus(30, seed=4)
