"""The program sandbox's language-level walls: the static AST guard and the runtime guard.

ELM (§3) executes every program a language model writes. Before compiling, the worker
checks the parsed program (:func:`check_tree`: forbidden builtins and attributes, imports
outside the allow-list, dunder spellings); in the child the program then sees restricted
builtins (:func:`make_builtins`: an allow-listed ``__import__``, ``getattr`` and friends
refusing ``_`` names) and an audit hook (:func:`audit_hook`) refusing every audited event.
Both sit inside the OS wall and may be switched off; the OS wall holds alone. The parent
may call :func:`check_source` to pre-filter programs. Standard library only.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "FORBIDDEN_ATTRIBUTES",
    "FORBIDDEN_BUILTINS",
    "SAFE_DUNDER_ATTRIBUTES",
    "STATE",
    "GuardViolation",
    "attr_refused",
    "audit_hook",
    "check_source",
    "check_tree",
    "importable",
    "make_builtins",
    "safe_str",
    "type_name",
]

#: Builtins a program may not call or even name: they reach files, code execution,
#: interpreter state or introspection that leads out of the restricted namespace.
FORBIDDEN_BUILTINS: frozenset[str] = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "help",
        "exit",
        "quit",
        "memoryview",
        "__build_class__",
        "__loader__",
        "__spec__",
        "__builtins__",
    }
)

#: Attribute names (besides anything starting with ``_``) that expose frames, code objects
#: or globals: the classic ways out of a restricted namespace without a dunder.
FORBIDDEN_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "func_globals",
        "mro",
    }
)

#: Builtins that take an attribute name; with a constant name the guard checks it
#: statically, with a computed one the runtime replacement checks it.
_ATTR_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
_DUNDER_RE = re.compile(r"__\w+__")


class GuardViolation(Exception):
    """A program tried something the sandbox refuses (statically or at run time)."""


#: Dunder attributes a program may use (``super().__init__(...)`` in its own classes).
#: Defining dunder methods (``def __init__``, ``def __str__``) is always allowed.
SAFE_DUNDER_ATTRIBUTES: frozenset[str] = frozenset({"__init__"})


def attr_refused(name: str) -> bool:
    """Whether an attribute name is off limits (private, dunder, or frame/code access)."""
    if name in SAFE_DUNDER_ATTRIBUTES:
        return False
    return name.startswith("_") or name in FORBIDDEN_ATTRIBUTES


#: Fields that never hold a node (identifiers, flags, constants' values, contexts): the
#: walk skips them. Every other field is read and its nodes visited, as ``ast.walk`` does.
_LEAF_FIELDS = frozenset(
    {
        "ctx", "id", "attr", "arg", "name", "asname", "module", "level", "is_async",
        "conversion", "kind", "type_comment", "simple", "kwd_attrs", "rest", "n", "s",
        "lineno", "tag",
    }
)  # fmt: skip
_NODE_FIELDS: dict[type, tuple[str, ...]] = {}
#: Nodes that bind a plain identifier (not an ``ast.Name``): a dunder there could rebind
#: ``__builtins__`` and the like, so it is refused like a dunder ``Name``.
_BINDING_NODES = (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)


def _node_fields(t: type) -> tuple[str, ...]:
    fields = _NODE_FIELDS.get(t)
    if fields is None:
        fields = _NODE_FIELDS[t] = tuple(f for f in t._fields if f not in _LEAF_FIELDS)
    return fields


def check_tree(tree: ast.AST, allowed_imports: Iterable[str]) -> str | None:
    """Return the reason the static guard refuses a parsed program, or ``None`` if it passes.

    The guard is the sandbox's second wall (the OS layer is the first): it refuses imports
    outside ``allowed_imports``, the builtins in :data:`FORBIDDEN_BUILTINS`, any name or
    attribute starting with ``_`` (dunders such as ``__class__``/``__subclasses__``/
    ``__globals__``, and private module members such as ``random._os``), frame and code
    attributes, ``getattr``-family calls with a refused constant name, string constants
    that spell a dunder, ``match`` class patterns on refused attributes
    (``case object(__class__=c)`` reads ``__class__``), and dunder names bound by
    ``except ... as`` or ``match`` captures.

    Nodes are visited breadth-first in ``ast.walk`` order (so the reason reported is the
    one ``ast.walk`` would meet first), with a hand-written loop about 4x faster than
    ``ast.walk``: the guard runs on every program the ELM loop executes.
    """
    allowed = frozenset(allowed_imports)
    Name, Attribute, Constant, Call = ast.Name, ast.Attribute, ast.Constant, ast.Call
    AST = ast.AST
    todo = [tree]
    append = todo.append
    i = 0
    while i < len(todo):
        node = todo[i]
        i += 1
        t = type(node)
        if t is Name:
            ident = node.id
            if ident in FORBIDDEN_BUILTINS:
                return f"use of {ident!r} is not allowed"
            if ident.startswith("__") and ident != "__name__":
                return f"use of dunder name {ident!r} is not allowed"
            continue  # only ctx below
        if t is Constant:
            value = node.value
            if isinstance(value, str | bytes):
                text = value if isinstance(value, str) else value.decode("latin-1")
                match = _DUNDER_RE.search(text)
                if match:
                    return f"string constant spelling dunder {match.group(0)!r} is not allowed"
            continue  # no child nodes
        if t is Attribute:
            if attr_refused(node.attr):
                return f"access to attribute {node.attr!r} is not allowed"
            append(node.value)
            continue
        if t is Call:
            func = node.func
            if type(func) is Name and func.id in _ATTR_BUILTINS and len(node.args) >= 2:
                arg = node.args[1]
                if (
                    isinstance(arg, Constant)
                    and isinstance(arg.value, str)
                    and attr_refused(arg.value)
                ):
                    return f"{func.id}() of attribute {arg.value!r} is not allowed"
        elif t is ast.Import:
            for alias in node.names:
                if alias.name not in allowed:
                    return f"import of module {alias.name!r} is not allowed"
                if alias.asname and alias.asname.startswith("_"):
                    return f"import alias {alias.asname!r} is not allowed"
        elif t is ast.ImportFrom:
            if node.level:
                return "relative imports are not allowed"
            if (node.module or "") not in allowed:
                return f"import from module {node.module!r} is not allowed"
            for alias in node.names:
                if alias.name != "*" and alias.name.startswith("_"):
                    return f"import of private name {alias.name!r} is not allowed"
        elif t is ast.MatchClass:
            for attr in node.kwd_attrs:
                if attr_refused(attr):
                    return f"match pattern on attribute {attr!r} is not allowed"
        elif t is ast.MatchMapping:
            if node.rest and node.rest.startswith("__"):
                return f"binding dunder name {node.rest!r} is not allowed"
        elif isinstance(node, _BINDING_NODES) and node.name and node.name.startswith("__"):
            return f"binding dunder name {node.name!r} is not allowed"
        for field in _NODE_FIELDS.get(t) or _node_fields(t):
            value = getattr(node, field, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, AST):
                        append(item)
            elif isinstance(value, AST):
                append(value)
    return None


def importable(program: Any) -> tuple[str, ...]:
    """Every module name a program of ``program`` (a :class:`~jelm.programs.spec.ProgramSpec`)
    may import: its allowed imports, its API module and the module aliases."""
    return tuple(dict.fromkeys((*program.imports, *program.module_aliases)))


def check_source(source: str, allowed_imports: Iterable[str]) -> str | None:
    """Parse ``source`` and run :func:`check_tree`; a syntax error is returned as a reason.

    Convenience for callers (e.g. the ELM loop) that want to pre-filter programs without
    executing them; ``allowed_imports`` is what a program may import (for a
    :class:`~jelm.programs.spec.ProgramSpec`, :func:`importable`).
    The sandbox itself runs the same check in its worker before compiling.
    """
    try:
        tree = ast.parse(source, "<program>")
    except (SyntaxError, ValueError) as exc:
        return f"syntax error: {exc}"
    return check_tree(tree, allowed_imports)


# -- the runtime guard (in the child) -------------------------------------------------------

#: Per-child state of the runtime guard: what it refused, and how many ``exec`` audit events
#: remain (the harness's own ``exec`` of the program). The worker never runs programs, so
#: its copy stays pristine and every forked child starts from it (copy-on-write).
STATE: dict[str, Any] = {"refused": [], "exec_budget": 1}


def safe_str(obj: Any, limit: int = 2000) -> str:
    """``str(obj)`` that survives hostile ``__str__`` methods and truncates."""
    try:
        text = str(obj)
        if not isinstance(text, str):
            raise TypeError("__str__ returned non-string")
    except BaseException as exc:  # the object's __str__ is untrusted
        try:
            text = f"<unprintable: __str__ raised {type(exc).__name__}>"
        except BaseException:
            text = "<unprintable>"
    return text[:limit]


def type_name(obj: Any) -> str:
    """Name of ``type(obj)`` read without calling anything the program defined."""
    try:
        name = type.__dict__["__name__"].__get__(type(obj))
        return str.__str__(name)[:200] if isinstance(name, str) else "<unknown>"
    except BaseException:
        return "<unknown>"


def refuse(what: str) -> GuardViolation:
    """Record a runtime refusal (the child reports the first) and return its exception."""
    STATE["refused"].append(what)
    return GuardViolation(f"operation refused by the sandbox: {what}")


def make_builtins(allowed_imports: Iterable[str], modules: Mapping[str, Any]) -> dict[str, Any]:
    """The builtins a guarded program sees: no file/exec/introspection, checked imports.

    ``__import__`` accepts exactly the names in ``allowed_imports`` (module aliases
    included) and answers from ``modules``: the pre-imported module of each name and of
    each parent package (``import a.b`` binds ``a``).
    """
    import builtins as _b

    safe = {k: v for k, v in vars(_b).items() if k not in FORBIDDEN_BUILTINS}
    real_getattr, real_setattr, real_delattr, real_hasattr = getattr, setattr, delattr, hasattr
    allowed = frozenset(allowed_imports)

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level or name not in allowed:
            raise refuse(f"import of module {safe_str(name, 80)!r}")
        for item in fromlist or ():
            if not isinstance(item, str) or item.startswith("_"):
                raise refuse(f"import of private name {safe_str(item, 80)!r} from {name!r}")
        if fromlist:
            return modules[name]
        return modules[name.partition(".")[0]]

    def check(name: Any, fn: str) -> None:
        if not isinstance(name, str) or attr_refused(name):
            raise refuse(f"{fn}() of attribute {safe_str(name, 80)!r}")

    def safe_getattr(obj: Any, name: Any, *default: Any) -> Any:
        check(name, "getattr")
        return real_getattr(obj, name, *default)

    def safe_hasattr(obj: Any, name: Any) -> bool:
        check(name, "hasattr")
        return real_hasattr(obj, name)

    def safe_setattr(obj: Any, name: Any, value: Any) -> None:
        check(name, "setattr")
        real_setattr(obj, name, value)

    def safe_delattr(obj: Any, name: Any) -> None:
        check(name, "delattr")
        real_delattr(obj, name)

    safe.update(
        __import__=guarded_import,
        __build_class__=_b.__build_class__,
        getattr=safe_getattr,
        hasattr=safe_hasattr,
        setattr=safe_setattr,
        delattr=safe_delattr,
    )
    return safe


#: Audit events a running program may raise; everything else is refused (runtime guard).
_AUDIT_ALLOWED = frozenset({"time.sleep"})
_AUDIT_NAMED = frozenset(
    {"open", "os.system", "subprocess.Popen", "os.kill", "import", "socket.connect"}
)


def audit_hook(event: str, args: tuple[Any, ...]) -> None:
    """Refuse every audited runtime event (open, os.system, socket, ctypes, ...) but one exec."""
    if event in _AUDIT_ALLOWED:
        return
    if event == "exec" and STATE["exec_budget"] > 0:
        STATE["exec_budget"] -= 1
        return
    what = event
    if event in _AUDIT_NAMED and args:
        what = f"{event} {safe_str(args[0], 120)}"
    raise refuse(what)
