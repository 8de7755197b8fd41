"""Tests for jelm.programs.trusted: running jelm's own programs in this process.

The domain here is a made-up one whose API module is the standard library's
``fractions`` (so the runner is seen to know no domain); one test runs a Sodarace seed
through the Sodarace ProgramSpec.
"""

from __future__ import annotations

import fractions
import signal
import threading
import time

import pytest

from jelm.domains.base import ProgramSpec
from jelm.programs.trusted import NoEntry, ProgramTimeout, TrustedRunner, run_trusted

SPEC = ProgramSpec(
    entry="main",
    file_name="prog.py",
    validate=lambda raw: raw,
    encode="json:dumps",
    api_module="fractions",
    module_aliases={"old.place.fractions": "fractions"},
)

PROGRAM = "from fractions import Fraction\nimport math\n\ndef main():\n    return Fraction(1, 3)\n"


def test_runs_the_entry_and_returns_its_value():
    assert run_trusted(PROGRAM, SPEC) == fractions.Fraction(1, 3)
    runner = TrustedRunner(SPEC, module_name="mine")
    assert runner.run("def main():\n    return __name__\n") == "mine"
    code = runner.compile("def main():\n    return 7\n", file_name="<seven>")
    assert code.co_filename == "<seven>"
    assert runner.run(code) == 7


def test_each_run_has_a_fresh_namespace():
    runner = TrustedRunner(SPEC)
    program = (
        "try:\n    COUNT += 1\nexcept NameError:\n    COUNT = 1\n\ndef main():\n    return COUNT\n"
    )
    assert [runner.run(program) for _ in range(3)] == [1, 1, 1]


def test_errors():
    runner = TrustedRunner(SPEC)
    with pytest.raises(NoEntry, match=r"prog\.py defines no main\(\)"):
        runner.run("x = 1\n")
    with pytest.raises(NoEntry, match="defines no main"):
        runner.run("main = 3\n")
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        runner.run("def main():\n    return 1 / 0\n")
    with pytest.raises(KeyError, match="'missing'"):
        runner.run("x = {}['missing']\n")
    with pytest.raises(SyntaxError):
        runner.run("def main(:\n")
    with pytest.raises(ValueError, match="api replacements need"):
        TrustedRunner(
            ProgramSpec(entry="main", file_name="p.py", validate=lambda r: r, encode="m:f"),
            api={"x": 1},
        )


def test_api_names_are_replaced_for_the_run_only():
    class Third(fractions.Fraction):
        pass

    runner = TrustedRunner(SPEC, api={"Fraction": Third})
    value = runner.run(PROGRAM)
    assert type(value) is Third and value == fractions.Fraction(1, 3)
    # the other names are the module's own, and the module itself is untouched
    assert runner.run("from fractions import Decimal\ndef main():\n    return Decimal\n") is (
        fractions.Decimal
    )
    assert fractions.Fraction is not Third
    assert type(run_trusted(PROGRAM, SPEC)) is fractions.Fraction
    # an alias of the API module gives the same (replaced) names
    aliased = PROGRAM.replace("from fractions", "from old.place.fractions")
    assert type(runner.run(aliased)) is Third
    assert type(run_trusted(aliased, SPEC)) is fractions.Fraction
    # other imports are untouched
    assert runner.run("import math\ndef main():\n    return math.pi\n") == pytest.approx(3.14159)


def test_timeout_stops_a_runaway_program_and_restores_the_handler():
    before = signal.getsignal(signal.SIGALRM)
    runner = TrustedRunner(SPEC, timeout_s=0.2)
    spin = "def main():\n    while True:\n        pass\n"
    t0 = time.perf_counter()
    with pytest.raises(ProgramTimeout, match=r"longer than 0\.2 s"):
        runner.run(spin)
    assert time.perf_counter() - t0 < 2.0
    # a program that catches Exception cannot swallow the timer
    stubborn = (
        "def main():\n    while True:\n        try:\n            pass\n"
        "        except Exception:\n            pass\n"
    )
    with pytest.raises(ProgramTimeout):
        runner.run(stubborn)
    assert signal.getsignal(signal.SIGALRM) == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # a quick program under a timer returns normally and leaves no timer behind
    assert runner.run("def main():\n    return 1\n") == 1
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_no_timer_outside_the_main_thread():
    runner = TrustedRunner(SPEC, timeout_s=0.05)
    out: list = []

    def work() -> None:
        out.append(runner.run("import time\ndef main():\n    time.sleep(0.2)\n    return 5\n"))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert out == [5]


def test_runs_a_sodarace_seed_with_its_program_spec():
    from jelm.domains.sodarace.api import Walker
    from jelm.domains.sodarace.program import LEGACY_API, PROGRAM
    from jelm.domains.sodarace.seeds import seed_source

    walker = run_trusted(seed_source("square"), PROGRAM)
    assert isinstance(walker, Walker) and walker.n_joints > 0
    legacy = seed_source("square").replace("jelm.domains.sodarace.api", LEGACY_API)
    assert run_trusted(legacy, PROGRAM) == walker
