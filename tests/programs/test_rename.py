"""Renaming what a program defines keeps what it does, and touches nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from jelm.domains import make_domain
from jelm.programs.rename import RenameError, defined_names, fresh_names, rename
from jelm.programs.sandbox import execute

HELDOUT = Path(__file__).resolve().parents[2] / "jelm/domains/sodarace/heldout"


def renamed(source: str, seed: int) -> tuple[str, dict[str, str]]:
    names = defined_names(source, keep=("make_walker",))
    mapping = fresh_names(names, np.random.default_rng(seed), avoid=names)
    return rename(source, mapping), mapping


def test_renamed_programs_build_the_same_walkers():
    domain = make_domain("sodarace")
    programs = [domain.seed_program(s) for s in domain.seed_names()]
    programs += [p.read_text() for p in sorted(HELDOUT.glob("*.py"))]
    assert len(programs) >= 19
    variants = []
    for k, source in enumerate(programs):
        new, mapping = renamed(source, k)
        assert len(mapping) >= 3 and new != source
        assert "def make_walker(" in new
        old_tree, new_tree = ast.parse(source), ast.parse(new)
        assert len(list(ast.walk(old_tree))) == len(list(ast.walk(new_tree)))
        variants.append(new)
    before = execute(programs, program=domain.program)
    after = execute(variants, program=domain.program)
    for b, a in zip(before, after, strict=True):
        assert str(b.status) == str(a.status) == "ok"
        assert a.value == b.value


def test_only_the_programs_own_names_change():
    source = (
        "import math\n"
        "from api import creator\n"
        "SIZE = 2  # SIZE in a comment stays\n"
        "def helper(wc, size=SIZE):\n"
        "    label = 'size SIZE'\n"
        "    return wc.add_joint(x=size, y=math.pi)\n"
        "def make_walker():\n"
        "    wc = creator()\n"
        "    for k in range(SIZE):\n"
        "        helper(wc, size=k)\n"
        "    return wc.get_walker()\n"
    )
    names = defined_names(source, keep=("make_walker",))
    assert set(names) == {"SIZE", "helper", "label", "wc", "k", "size"}
    # ``x`` and ``y`` are keywords of a call the program does not define: kept
    assert "x" not in names and "y" not in names
    mapping = {"SIZE": "N", "helper": "h", "label": "tag", "wc": "c", "k": "i", "size": "s"}
    out = rename(source, mapping)
    assert "N = 2  # SIZE in a comment stays" in out
    assert "def h(c, s=N):" in out and "'size SIZE'" in out
    assert "c.add_joint(x=s, y=math.pi)" in out  # the attribute and math stay
    assert "h(c, s=i)" in out and "c.get_walker()" in out and "creator()" in out
    fresh = fresh_names(["SIZE", "Body", "leg_count"], np.random.default_rng(0))
    assert fresh["SIZE"].isupper() and fresh["Body"][0].isupper()
    assert fresh["leg_count"] == fresh["leg_count"].lower()


def test_programs_that_cannot_be_renamed_safely():
    with pytest.raises(RenameError, match="f-strings"):
        rename("x = 1\nprint(f'{x}')\n", {"x": "y"})
    with pytest.raises(RenameError, match="does not parse"):
        defined_names("def broken(:\n")
    assert rename("x = 1\n", {}) == "x = 1\n"
