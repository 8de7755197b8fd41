"""Tests for jelm.domains.sodarace.corpus.styles: freshly written walker programs for the
corpus's lineages to start from (ELM §3.1, §4).

Every program is run with the real walker API (the corpus's trusted runner) and validated
with the default limits; the corpus built from them is checked with the real diff applier.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter

import numpy as np
import pytest

from jelm.domains.sodarace.api import DEFAULT_LIMITS
from jelm.domains.sodarace.corpus import generate_corpus
from jelm.domains.sodarace.corpus.plans import PLANS
from jelm.domains.sodarace.corpus.program import build
from jelm.domains.sodarace.corpus.run import make_runner
from jelm.domains.sodarace.corpus.styles import (
    MAX_PROGRAM_CHARS,
    STYLES,
    draw_program,
    random_program,
)
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.mutation.base import unified_diff
from jelm.programs.diff import apply_diff

N = 300
_NUMBER = re.compile(r"(?<![\w.])\d+(\.\d+)?")


@pytest.fixture(scope="module")
def drawn():
    """(text, plan, style) of the programs of generators 0..N-1."""
    return [draw_program(np.random.default_rng(i)) for i in range(N)]


@pytest.fixture(scope="module")
def texts(drawn):
    return [text for text, _, _ in drawn]


def trivial(line: str) -> bool:
    """Lines every walker program may share: blank, imports, ``def make_walker():``, the
    return, docstring quotes, lone brackets, ``else:``/``continue``."""
    s = line.strip()
    return (
        not s
        or s.startswith(("import ", "from ", "return "))
        or s in ('"""', "def make_walker():", "else:", "continue")
        or not re.search(r"[A-Za-z_]", s)
    )


def test_random_program_is_random_program_of_draw_program(drawn):
    assert random_program(np.random.default_rng(7)) == drawn[7][0]


def test_every_program_builds_a_valid_moving_walker_within_the_size_cap(drawn):
    runner = make_runner(1.0)
    for i, (text, plan, style) in enumerate(drawn):
        assert len(text) <= MAX_PROGRAM_CHARS, (i, len(text))
        prog, reason = build(text, 0, DEFAULT_LIMITS, runner)
        assert prog is not None, (i, plan.kind, style, reason, text)
        walker = prog.walker
        walker.validate(DEFAULT_LIMITS)
        amps = [m[2]["amplitude"] for m in walker.muscles if m[2]["type"] == "muscle"]
        assert any(a != 0 for a in amps), (i, text)
        # the program builds the plan it was drawn from (spelt-out numbers are rounded)
        assert len(walker.joints) == len(plan.joints), (i, text)
        for (x, y), (px, py) in zip(walker.joints, plan.joints, strict=True):
            assert abs(x - px) < 6e-3 and abs(y - py) < 6e-3, (i, text)
        built = sorted(
            (
                min(a, b),
                max(a, b),
                d["type"],
                round(d["amplitude"], 1) if d["type"] == "muscle" else 0,
            )
            for a, b, d in walker.muscles
        )
        planned = sorted(
            (min(a, b), max(a, b), "muscle" if amp else "distance", round(amp, 1) if amp else 0)
            for a, b, amp, _, _ in plan.links
        )
        assert built == planned, (i, text)


def test_programs_import_only_the_walker_api_and_return_its_walker(texts):
    for text in texts:
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert [a.name for a in node.names] == ["math"], text
            elif isinstance(node, ast.ImportFrom):
                assert node.module == "jelm.programs.walker_api", text
                assert [a.name for a in node.names] == ["walker_creator"], text
        (make,) = [
            n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_walker"
        ]
        ret = make.body[-1]
        assert isinstance(ret, ast.Return) and isinstance(ret.value, ast.Call), text
        call = ret.value.func
        assert isinstance(call, ast.Attribute) and call.attr == "get_walker", text
        assert isinstance(call.value, ast.Name), text


def test_same_generator_state_same_text():
    for i in (0, 11, 123):
        assert random_program(np.random.default_rng(i)) == random_program(np.random.default_rng(i))
    rng = np.random.default_rng(5)
    a, b = random_program(rng), random_program(rng)
    assert a != b


def test_programs_differ_in_structure_not_only_in_numbers(texts):
    shapes = {_NUMBER.sub("N", t) for t in texts}
    assert len(shapes) >= 250
    per_line: Counter = Counter()
    for t in texts:
        per_line.update({line.strip() for line in t.splitlines() if not trivial(line)})
    line, count = per_line.most_common(1)[0]
    assert count <= 0.2 * N, (line, count)


def test_every_plan_and_style_occurs(drawn):
    kinds = Counter(plan.kind for _, plan, _ in drawn)
    styles = Counter(style for _, _, style in drawn)
    assert set(kinds) == set(PLANS)
    assert set(styles) == set(STYLES)
    assert max(kinds.values()) <= 0.2 * N and max(styles.values()) <= 0.6 * N


def recursive(text: str) -> bool:
    """Whether a function of ``text`` calls itself."""
    return any(
        isinstance(f, ast.FunctionDef)
        and any(
            isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == f.name
            for c in ast.walk(f)
        )
        for f in ast.walk(ast.parse(text))
    )


def test_names_and_call_forms_vary(texts):
    creators = Counter(re.search(r"(\w+) = walker_creator\(\)", t).group(1) for t in texts)
    assert len(creators) >= 10 and max(creators.values()) <= 0.2 * N, creators
    forms = Counter()
    for t in texts:
        forms["keywords"] += "amplitude=" in t
        forms["passive flag"] += ", False, " in t or "passive=False" in t
        forms["loop"] += "for " in t
        forms["while"] += "while " in t
        forms["class"] += "class " in t
        forms["comprehension"] += bool(re.search(r"\[[^\]]* for ", t))
        forms["split"] += ".split(" in t
        forms["recursion"] += recursive(t)
        forms["math"] += "math." in t
        forms["constants"] += bool(re.search(r"^[A-Z][A-Z0-9_]* = ", t, re.M))
        forms["no docstring"] += not t.startswith('"""')
    assert all(v >= 5 for v in forms.values()), forms


def test_programs_do_not_copy_the_seeds(texts):
    seed_lines = {
        line.strip()
        for name in SEED_NAMES
        for line in seed_source(name).splitlines()
        if not trivial(line) and "walker_creator()" not in line
    }
    shared = [len({line.strip() for line in t.splitlines()} & seed_lines) for t in texts]
    assert max(shared) <= 2
    assert sum(1 for s in shared if s) <= 0.1 * N


@pytest.fixture(scope="module")
def generated_corpus():
    return generate_corpus(200, seed=3, generated=1.0)


def test_a_generated_corpus_starts_from_fresh_programs_and_its_diffs_apply(generated_corpus):
    examples, stats = generated_corpus
    assert len(examples) == 200
    seeds = {seed_source(name) for name in SEED_NAMES}
    for e in examples:
        assert e.parent not in seeds
        assert e.diff == unified_diff(e.parent, e.child, "walker.py")
        applied = apply_diff(e.parent, e.diff, fuzzy=False)
        assert applied.exact and applied.program == e.child
    report = stats.to_dict()["generated"]
    assert report["examples"] == 200 and report["build_rate"] == 1.0
    assert stats.generated_roots >= 15  # 200 examples need many lineages
    assert len({e.parent for e in examples}) >= 100


def test_structural_edits_call_the_programs_own_creator(generated_corpus):
    examples, _ = generated_corpus
    added = 0
    for e in examples:
        if e.kind not in ("add_limb", "add_link", "add_loop_links"):
            continue
        creator = re.search(r"(\w+) = walker_creator\(\)", e.parent).group(1)
        new = [line[1:] for line in e.diff.splitlines() if line.startswith("+") and "add_" in line]
        assert new and all(f"{creator}.add_" in line for line in new), (creator, e.diff)
        added += creator != "wc"
    assert added >= 3


def test_generated_share_is_checked_and_zero_keeps_the_seed_corpus():
    with pytest.raises(ValueError):
        generate_corpus(5, generated=1.5)
    plain, stats = generate_corpus(60, seed=4, generated=0.0)
    assert "generated" not in stats.to_dict()
    half, stats = generate_corpus(60, seed=4, generated=0.5)
    assert 0 < stats.generated_examples < 60
    kept = set(plain)
    assert any(e in kept for e in half)  # lineages that start at a seed are unchanged


def test_cli_takes_the_generated_share(capsys):
    from jelm.domains.sodarace.corpus.cli import main

    main(["--n", "20", "--seed", "1", "--generated", "1.0"])
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 20 and report["generated"]["example_share"] == 1.0
