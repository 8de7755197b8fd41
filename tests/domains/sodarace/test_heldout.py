"""Tests for the held-out Sodarace programs in jelm/domains/sodarace/heldout.

They are parents the diff model never saw: each must run in the sandbox to a valid walker,
stay small enough for a prompt, and share no real line of code with any seed.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from jelm.domains.sodarace.program import PROGRAM
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.programs.sandbox import Sandbox

HELDOUT = resources.files("jelm.domains.sodarace").joinpath("heldout")
#: Shorter lines ("wc = walker_creator()", "for k in range(n):") are too generic to count.
MIN_SHARED_LINE = 25
BOILERPLATE = re.compile(
    r"(import .*|from \S+ import .*|def make_walker\(\):|return \w+\.get_walker\(\))"
)


def heldout_programs() -> dict[str, str]:
    return {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted(HELDOUT.iterdir(), key=lambda p: p.name)
        if p.name.endswith(".py")
    }


def significant_lines(source: str) -> set[str]:
    """The lines of ``source`` with whitespace normalised, boilerplate and short ones left out."""
    lines = {" ".join(line.split()) for line in source.splitlines()}
    return {s for s in lines if len(s) >= MIN_SHARED_LINE and not BOILERPLATE.fullmatch(s)}


@pytest.fixture(scope="module")
def results():
    programs = heldout_programs()
    with Sandbox(program=PROGRAM, workers=2) as sandbox:
        return dict(zip(programs, sandbox.execute(list(programs.values())), strict=True))


def test_twelve_numbered_programs_listed_in_the_readme():
    names = list(heldout_programs())
    assert len(names) == 12
    assert [name[:3] for name in names] == [f"{k:02d}_" for k in range(1, 13)]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.py", name) for name in names)
    readme = HELDOUT.joinpath("README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in names)


def test_programs_fit_in_a_prompt():
    for name, source in heldout_programs().items():
        assert "def make_walker():" in source, name
        assert len(source) <= 2000, name
        assert source.count("\n") <= 60, name


def test_every_program_runs_to_a_valid_walker(results):
    assert {name: str(r.status) for name, r in results.items()} == {name: "ok" for name in results}
    for name, r in results.items():
        assert len(r.value["joints"]) <= 30, name
        links = r.value["muscles"]
        muscles = [p for _, _, p in links if p["type"] == "muscle"]
        assert len(muscles) >= 3, name
        assert len({round(p["phase"], 6) for p in muscles}) >= 2, name


def test_significant_lines_ignores_boilerplate():
    source = (
        "from jelm.programs.walker_api import walker_creator\n"
        "def make_walker():\n"
        "    wc = walker_creator()\n"
        "    wc.add_muscle(first,   second, False, 6.0, 0.25)\n"
        "    return wc.get_walker()\n"
    )
    assert significant_lines(source) == {"wc.add_muscle(first, second, False, 6.0, 0.25)"}


def test_no_line_is_copied_from_a_seed():
    seed_lines = {name: significant_lines(seed_source(name)) for name in SEED_NAMES}
    assert all(seed_lines.values()), "every seed has lines to compare"
    shared = {
        (program, seed, line)
        for program, source in heldout_programs().items()
        for seed, lines in seed_lines.items()
        for line in significant_lines(source) & lines
    }
    assert shared == set()
