"""jelm.programs.sandbox.guard: the static AST guard, the restricted builtins, the audit
hook; each refusal is checked for the rule that fired."""

from __future__ import annotations

import warnings

import pytest

from jelm.domains.sodarace.domain import PROGRAM
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.programs.sandbox import (
    GuardViolation,
    Sandbox,
    SandboxIsolationWarning,
    Status,
    check_source,
    importable,
)
from jelm.programs.sandbox import guard as G
from tests.programs.sandbox.programs import HOSTILE, WALKER, by_name, limits

IMPORTS = importable(PROGRAM)

# -- the static guard (no processes) -------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "reason"),
    [
        ("import os", "import of module 'os' is not allowed"),
        ("import subprocess", "import of module 'subprocess' is not allowed"),
        ("import jelm.domains.sodarace", "import of module 'jelm.domains.sodarace' is not allowed"),
        ("from os import system", "import from module 'os' is not allowed"),
        ("from random import _os", "import of private name '_os' is not allowed"),
        ("import random as _r", "import alias '_r' is not allowed"),
        ("from . import x", "relative imports are not allowed"),
        ("import random\nrandom._os.system('id')", "access to attribute '_os' is not allowed"),
        ("open('/etc/passwd')", "use of 'open' is not allowed"),
        ("exec('1')", "use of 'exec' is not allowed"),
        ("eval('1')", "use of 'eval' is not allowed"),
        ("compile('1', 'x', 'exec')", "use of 'compile' is not allowed"),
        ("__import__('os')", "use of '__import__' is not allowed"),
        ("globals()", "use of 'globals' is not allowed"),
        ("x = __builtins__", "use of '__builtins__' is not allowed"),
        ("y = __foo__", "use of dunder name '__foo__' is not allowed"),
        (
            "x = ().__class__.__bases__[0].__subclasses__()",
            "access to attribute '__subclasses__' is not allowed",
        ),
        ("def f(): pass\nf.__globals__", "access to attribute '__globals__' is not allowed"),
        ("g = (i for i in [1])\ng.gi_frame.f_back", "access to attribute 'f_back' is not allowed"),
        ("x.gi_code", "access to attribute 'gi_code' is not allowed"),
        ("getattr(1, '__class__')", "getattr() of attribute '__class__' is not allowed"),
        ("setattr(x, 'mro', 1)", "setattr() of attribute 'mro' is not allowed"),
        ("s = '__class__'", "string constant spelling dunder '__class__' is not allowed"),
        ("b = b'__dict__'", "string constant spelling dunder '__dict__' is not allowed"),
    ],
)
def test_guard_refuses_with_the_rule_that_fired(src: str, reason: str) -> None:
    assert check_source(src, IMPORTS) == reason


@pytest.mark.parametrize(
    ("src", "reason"),
    [
        (
            "match x:\n    case object(__class__=c):\n        pass",
            "match pattern on attribute '__class__' is not allowed",
        ),
        (
            "match x:\n    case object(_private=c):\n        pass",
            "match pattern on attribute '_private' is not allowed",
        ),
        (
            "try:\n    pass\nexcept Exception as __builtins__:\n    pass",
            "binding dunder name '__builtins__' is not allowed",
        ),
        (
            "match x:\n    case __builtins__:\n        pass",
            "binding dunder name '__builtins__' is not allowed",
        ),
        (
            "match x:\n    case {**__builtins__}:\n        pass",
            "binding dunder name '__builtins__' is not allowed",
        ),
        (
            "match x:\n    case [*__rest__]:\n        pass",
            "binding dunder name '__rest__' is not allowed",
        ),
    ],
)
def test_guard_refuses_match_and_binding_escapes(src: str, reason: str) -> None:
    assert check_source(src, IMPORTS) == reason


def test_guard_accepts_walker_programs() -> None:
    assert check_source(WALKER, IMPORTS) is None
    assert check_source("import random\nx = random.random()", IMPORTS) is None
    # dunder methods may be defined, and super().__init__ called
    cls = "class A:\n    def __init__(self):\n        super().__init__()\n    def __str__(self):\n"
    assert check_source(cls + "        return 'a'", IMPORTS) is None
    assert check_source("x = __name__", IMPORTS) is None


def test_guard_takes_the_spec_imports_and_aliases() -> None:
    """What may be imported is the spec's: its imports, its API module, its aliases."""
    assert set(IMPORTS) == {"math", "random", PROGRAM.api_module, *PROGRAM.module_aliases}
    legacy = "from jelm.programs.walker_api import walker_creator"
    assert check_source(legacy, IMPORTS) is None
    assert check_source(legacy, ("math",)) == (
        "import from module 'jelm.programs.walker_api' is not allowed"
    )
    assert check_source("import math", ()) == "import of module 'math' is not allowed"


def test_guard_reports_syntax_error() -> None:
    assert check_source("def (", IMPORTS) == "syntax error: invalid syntax (<program>, line 1)"


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_passes_the_guard(name: str) -> None:
    assert check_source(seed_source(name), IMPORTS) is None


# -- the restricted builtins (in this process: nothing is installed) -----------------------


@pytest.fixture
def refusals():
    """The guard's per-child record of refusals, emptied around the test."""
    G.STATE["refused"].clear()
    yield G.STATE["refused"]
    G.STATE["refused"].clear()


def test_restricted_builtins(refusals: list[str]) -> None:
    import math

    b = G.make_builtins(["math", "x.y"], {"math": math, "x.y": "module y", "x": "package x"})
    assert not set(G.FORBIDDEN_BUILTINS) & set(b) - {"__import__", "__build_class__"}
    assert b["__import__"]("math") is math
    assert b["__import__"]("x.y", fromlist=("name",)) == "module y"
    assert b["__import__"]("x.y") == "package x"  # `import x.y` binds x
    with pytest.raises(GuardViolation, match="import of module 'os'"):
        b["__import__"]("os")
    with pytest.raises(GuardViolation, match="import of module 'math'"):
        b["__import__"]("math", level=1)
    with pytest.raises(GuardViolation, match="import of private name '_x' from 'math'"):
        b["__import__"]("math", fromlist=("_x",))
    with pytest.raises(GuardViolation, match=r"getattr\(\) of attribute '__class__'"):
        b["getattr"](1, "__class__")
    with pytest.raises(GuardViolation, match=r"hasattr\(\) of attribute 'f_back'"):
        b["hasattr"](1, "f_back")
    with pytest.raises(GuardViolation, match=r"setattr\(\) of attribute '_x'"):
        b["setattr"](G, "_x", 1)
    with pytest.raises(GuardViolation, match=r"delattr\(\) of attribute '1'"):
        b["delattr"](G, 1)
    assert b["getattr"](1, "real") == 1 and b["getattr"](1, "nope", 5) == 5
    assert refusals == [
        "import of module 'os'",
        "import of module 'math'",
        "import of private name '_x' from 'math'",
        "getattr() of attribute '__class__'",
        "hasattr() of attribute 'f_back'",
        "setattr() of attribute '_x'",
        "delattr() of attribute '1'",
    ]


def test_safe_str_and_type_name_survive_hostile_objects() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert G.safe_str(Bad()) == "<unprintable: __str__ raised RuntimeError>"
    assert G.safe_str("x" * 5000) == "x" * 2000
    assert G.type_name(Bad()) == "Bad" and G.type_name(3) == "int"


# -- in the sandbox -------------------------------------------------------------------------

#: Hostile programs and the rule that stops each (static guard or restricted builtins).
HOSTILE_GUARDED = {
    "import_os": (
        "import os\ndef make_walker():\n    os.system('id')",
        "static guard: import of module 'os' is not allowed",
    ),
    "open": (
        "def make_walker():\n    return open('/etc/passwd').read()",
        "static guard: use of 'open' is not allowed",
    ),
    "getattr_built": (
        "def make_walker():\n    n = '_' * 2 + 'class' + '_' * 2\n    return getattr(1, n)",
        "operation refused: getattr() of attribute '__class__'",
    ),
    "subclasses": (
        "def make_walker():\n    return ().__class__.__base__.__subclasses__()",
        "static guard: access to attribute '__subclasses__' is not allowed",
    ),
    "builtins": (
        "def make_walker():\n    return __builtins__",
        "static guard: use of '__builtins__' is not allowed",
    ),
    "random_os": (
        "import random\ndef make_walker():\n    return random._os",
        "static guard: access to attribute '_os' is not allowed",
    ),
    "eval": (
        "def make_walker():\n    return eval('1')",
        "static guard: use of 'eval' is not allowed",
    ),
    "dyn_import": (
        "def make_walker():\n    imp = getattr(print, 'x' + '__self__'[1:])\n",
        "static guard: string constant spelling dunder '__self__' is not allowed",
    ),
    "format_escape": (
        "def make_walker():\n    return '{0.__class__}'.format(1)",
        "static guard: string constant spelling dunder '__class__' is not allowed",
    ),
    "swallowed": (
        "def make_walker():\n    try:\n        getattr(1, '_' + 'x')\n    except Exception:\n"
        "        pass\n    return 1",
        "operation refused: getattr() of attribute '_x'",
    ),
}


def test_hostile_programs_refused_by_the_guard(sb: Sandbox) -> None:
    res = by_name(sb, {name: src for name, (src, _) in HOSTILE_GUARDED.items()})
    for name, r in res.items():
        assert r.status is Status.FORBIDDEN, (name, r)
        assert r.error == HOSTILE_GUARDED[name][1], (name, r)
    assert res["import_os"].detail == "import of module 'os' is not allowed"
    assert res["getattr_built"].detail == "getattr() of attribute '__class__'"
    (ok,) = sb.execute([WALKER])
    assert ok.ok


def test_match_class_escape_refused_in_sandbox(sb: Sandbox) -> None:
    """``case object(__subclasses__=s)`` reads dunders without an Attribute node."""
    src = (
        "def make_walker():\n    match ():\n        case object(__class__=c):\n            pass\n"
        "    match c:\n        case object(__base__=b):\n            pass\n"
        "    match b:\n        case object(__subclasses__=s):\n            pass\n"
        "    return len(s())\n"
    )
    (r,) = sb.execute([src])
    assert r.status is Status.FORBIDDEN, r
    assert r.error == "static guard: match pattern on attribute '__class__' is not allowed"


def test_audit_hook_alone_names_the_refused_event() -> None:
    """Static guard off, audit hook on: the runtime events are refused and named."""
    progs = {
        "system": "import os\ndef make_walker():\n    os.system('id')",
        "open": "def make_walker():\n    return open('/etc/passwd').read()",
        "subclasses": "def make_walker():\n    return ().__class__.__base__.__subclasses__()",
        "walker": WALKER,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxIsolationWarning)
        with Sandbox(program=HOSTILE, workers=1, limits=limits(guard=False)) as s:
            res = by_name(s, progs)
    assert res["system"].status is Status.FORBIDDEN and res["system"].detail == "os.system b'id'"
    assert res["open"].status is Status.FORBIDDEN and res["open"].detail == "open /etc/passwd"
    # no audited event: the hook lets introspection through; the OS layer remains
    assert res["subclasses"].status is Status.WRONG_TYPE and res["subclasses"].detail == "list"
    assert res["walker"].ok
