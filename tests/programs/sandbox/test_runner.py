"""jelm.programs.sandbox.runner with any domain: the entry, the imports, the aliases, the
encoder and the validator all come from the ProgramSpec. A toy spec (programs returning
three numbers, tests/programs/sandbox/toy.py) exercises the generic parts; Sodarace's
spec the module alias its older programs use."""

from __future__ import annotations

import warnings

import pytest

from jelm.domains.sodarace.domain import PROGRAM
from jelm.programs.sandbox import (
    Sandbox,
    SandboxIsolationWarning,
    Status,
    execute,
    shutdown_default_sandbox,
)
from jelm.programs.sandbox.runner import Runner
from jelm.programs.sandbox.types import SandboxLimits
from tests.programs.sandbox import toy as toy_module
from tests.programs.sandbox.programs import WALKER, by_name, limits
from tests.programs.sandbox.toy import TOY

API = "tests.programs.sandbox.toy"


def numbers(code: str, imports: str = f"from {API} import ramp") -> str:
    """A toy program whose make_numbers returns ``code``."""
    return f"{imports}\ndef make_numbers():\n    return {code}\n"


def test_the_toy_domains_words() -> None:
    assert TOY.invalid_status == "invalid_numbers"
    assert set(TOY.imports) == {"math", API}


def test_values_are_encoded_and_validated_by_the_spec(toy: Sandbox) -> None:
    res = by_name(
        toy,
        {
            "ok": numbers("ramp(3)"),
            "math": numbers("[math.pi, math.e, 1]", "import math"),
            "wrong_type": numbers("(1, 2, 3)"),
            "none": numbers("None"),
            "too_long": numbers("list(range(200))"),
            "unlucky": numbers("[7, 1, 2]"),
            "not_numbers": numbers("['a', 1, 2]"),
            "short": numbers("[1, 2]"),
            "not_json": numbers("[float('inf'), 1, 2]"),
            "no_entry": "def make_walker():\n    return [1, 2, 3]\n",
        },
    )
    assert res["ok"].ok and res["ok"].value == [0.0, 1.0, 2.0]
    assert res["math"].ok and res["math"].value[2] == 1.0
    # TypeError from the encoder: wrong_type, detail = the value's type
    assert res["wrong_type"].status is Status.WRONG_TYPE
    assert res["wrong_type"].error == "make_numbers() returned tuple, not a list"
    assert res["wrong_type"].detail == "tuple" and res["none"].detail == "NoneType"
    # ValueError from the encoder: the domain's invalid status, detail = its code
    for name, code, error in (
        ("too_long", "too_long", "200 numbers (max 100)"),
        ("unlucky", "invalid", "seven is unlucky"),
        ("not_numbers", "not_numbers", "not all entries are numbers"),
    ):
        r = res[name]
        assert (r.ok, r.status, r.detail) == (False, "invalid_numbers", code), r
        assert r.error == f"invalid numbers: {error}"
    # ValueError from the parent's validate
    assert (res["short"].status, res["short"].detail) == ("invalid_numbers", "wrong_length")
    assert res["short"].error == "invalid numbers: want 3 numbers, got 2"
    # a value that is not plain data (JSON refuses infinities)
    assert (res["not_json"].status, res["not_json"].detail) == ("invalid_numbers", "not_json")
    assert res["no_entry"].status is Status.EXCEPTION
    assert res["no_entry"].error == "NameError: the program defines no callable 'make_numbers'"


def test_module_aliases_stand_for_their_module(toy: Sandbox) -> None:
    res = by_name(
        toy,
        {
            "from": numbers("ramp(3)", "from numbers_api import ramp"),
            "import": numbers("numbers_api.ramp(3)", "import numbers_api"),
            "nested": numbers("old_toy.numbers.api.ramp(3)", "import old_toy.numbers.api"),
            "nested_as": numbers("a.ramp(3)", "import old_toy.numbers.api as a"),
            "nested_from": numbers("ramp(3)", "from old_toy.numbers.api import ramp"),
            "parent": numbers("ramp(3)", "import old_toy"),
        },
    )
    for name in ("from", "import", "nested", "nested_as", "nested_from"):
        assert res[name].ok and res[name].value == [0.0, 1.0, 2.0], (name, res[name])
    # an alias's parent package is not itself importable
    assert res["parent"].status is Status.FORBIDDEN
    assert res["parent"].error == "static guard: import of module 'old_toy' is not allowed"


def test_only_the_specs_imports_are_accepted(toy: Sandbox) -> None:
    res = by_name(
        toy,
        {
            "math": numbers("[math.floor(1.5), 2, 3]", "import math"),
            "random": numbers("[random.random(), 2, 3]", "import random"),
            "walker_api": numbers("[1, 2, 3]", f"import {PROGRAM.api_module}"),
            "legacy": numbers("[1, 2, 3]", "from jelm.programs.walker_api import walker_creator"),
        },
    )
    assert res["math"].ok and res["math"].value == [1.0, 2.0, 3.0]
    for name, module in (
        ("random", "'random'"),
        ("walker_api", f"'{PROGRAM.api_module}'"),
        ("legacy", "'jelm.programs.walker_api'"),
    ):
        assert res[name].status is Status.FORBIDDEN, (name, res[name])
        assert module in res[name].error and res[name].error.startswith("static guard: import")


def test_sodarace_programs_may_import_the_old_api_path(sb: Sandbox, os_only: Sandbox) -> None:
    """``from jelm.programs.walker_api import walker_creator`` keeps working: guarded, and
    with the guard off (through the worker's module table)."""
    old = "jelm.programs.walker_api"
    progs = {
        "from": WALKER.replace(PROGRAM.api_module, old),
        "import": WALKER.replace(
            f"from {PROGRAM.api_module} import walker_creator", f"import {old}"
        ).replace("wc = walker_creator()", f"wc = {old}.walker_creator()"),
        "as": WALKER.replace(
            f"from {PROGRAM.api_module} import walker_creator", f"import {old} as w"
        ).replace("wc = walker_creator()", "wc = w.walker_creator()"),
    }
    want = sb.execute([WALKER])[0].value
    for pool in (sb, os_only):
        for name, r in by_name(pool, progs).items():
            assert r.ok and r.value == want, (name, r)


def test_module_level_execute_follows_the_spec() -> None:
    try:
        (r,) = execute([numbers("ramp(3)")], program=TOY, workers=1, limits=limits())
        assert r.ok and r.value == [0.0, 1.0, 2.0]
        # another spec: a new pool, whose entry is make_walker
        toy_program = "def make_numbers():\n    return [1, 2, 3]\n"
        a, b = execute([toy_program, WALKER], program=PROGRAM, workers=1, limits=limits())
        assert a.status is Status.EXCEPTION and b.ok
        assert a.error == "NameError: the program defines no callable 'make_walker'"
    finally:
        shutdown_default_sandbox()


def test_a_broken_encoder_reference_stops_the_start() -> None:
    """The encoder is imported by every worker before it reports ready."""
    import dataclasses

    from jelm.programs.sandbox import SandboxError

    broken = dataclasses.replace(TOY, encode=f"{API}:no_such_function")
    with (
        warnings.catch_warnings(),
        pytest.raises(SandboxError, match="sandbox worker exited during start-up"),
    ):
        warnings.simplefilter("ignore", SandboxIsolationWarning)
        Sandbox(program=broken, workers=1, limits=limits(), start_timeout_s=10)


# -- the manager's half: parse, guard, compile (no processes) -------------------------------


@pytest.fixture
def runner() -> Runner:
    cfg = SandboxLimits(max_source_chars=200).worker_config(TOY)
    modules = {"math": __import__("math"), API: toy_module}
    return Runner(cfg, modules, toy_module.encode_numbers)


def test_prepare_compiles_or_answers_at_once(runner: Runner) -> None:
    code, rec = runner.prepare(numbers("ramp(3)"))
    assert rec is None and code.co_filename == "<program>"
    assert runner.prepare(b"x = 1")[1] == {
        "status": "wrong_type",
        "error": "program is not a str",
        "detail": "source",
        "value": None,
    }
    _, rec = runner.prepare("x = 1\n" * 50)
    assert (rec["status"], rec["detail"]) == ("forbidden", "source_too_large")
    assert rec["error"] == "program has 300 characters (max 200)"
    _, rec = runner.prepare("def (")
    assert (rec["status"], rec["detail"]) == ("syntax_error", "SyntaxError")
    assert rec["error"] == "SyntaxError: invalid syntax (line 1)"
    _, rec = runner.prepare("x = 1\0")
    assert rec["status"] == "syntax_error" and rec["detail"] in ("SyntaxError", "ValueError")
    _, rec = runner.prepare("import random")
    assert rec == {
        "status": "forbidden",
        "error": "static guard: import of module 'random' is not allowed",
        "detail": "import of module 'random' is not allowed",
        "value": None,
    }
    _, rec = runner.prepare("from numbers_api import ramp")
    assert rec is None
