"""jelm.programs.check: what reading a program says it will fail on, without running it."""

from __future__ import annotations

from pathlib import Path

import pytest

from jelm.domains import make_domain
from jelm.programs.check import static_problem

HELDOUT = Path(__file__).parents[2] / "jelm" / "domains" / "sodarace" / "heldout"


@pytest.mark.parametrize("domain", ["sodarace", "image"])
def test_every_seed_program_passes(domain):
    d = make_domain(domain)
    for name in d.seed_names():
        assert static_problem(d.seed_program(name), d.program.file_name) is None, name


def test_every_heldout_program_passes():
    programs = sorted(HELDOUT.glob("*.py"))
    assert len(programs) >= 12
    for path in programs:
        assert static_problem(path.read_text()) is None, path.name


@pytest.mark.parametrize(
    ("program", "problem"),
    [
        ("def f(:\n    pass\n", "SyntaxError: invalid syntax (line 1)"),
        ("def f():\nreturn 1\n", "IndentationError"),
        ("x = '\0'\n", "null bytes"),
        ("def f():\n    return knee2\n", "undefined name 'knee2' (line 2)"),
        ("def f():\n    x = x + 1\n    return x\n", "undefined name 'x' (line 2)"),
        ("import math\nclass A:\n    def g(self):\n        return mth.pi\n", "'mth' (line 4)"),
    ],
)
def test_a_program_that_cannot_run_is_named_with_its_line(program, problem):
    found = static_problem(program, "walker.py")
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "program",
    [
        "import math\n\ndef f():\n    return math.pi + len([1])\n",
        # defined later in the module, used inside a function: fine when the function runs
        "def f():\n    return g()\n\ndef g():\n    return 1\n",
        # comprehension and loop variables, globals, builtins
        "N = 3\ndef f():\n    return [i * N for i in range(N)] + [abs(-1)]\n",
        # with a star import any name may be defined
        "from math import *\ndef f():\n    return tau\n",
        # a wrong call is the sandbox's to find, not the reader's
        "def f():\n    return len(1, 2, 3)\n",
    ],
)
def test_a_program_that_may_run_passes(program):
    assert static_problem(program) is None


def test_the_program_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    program = f"open({str(marker)!r}, 'w').write('x')\nprint(undefined)\n"
    assert static_problem(program) == "undefined name 'undefined' (line 2)"
    assert not marker.exists()
