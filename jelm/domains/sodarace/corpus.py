"""A synthetic training corpus for jelm's diff model (ELM §3.1, §4 Sodarace).

ELM (Lehman et al. 2022, §3.1) trains its diff models on GitHub commits written as
``<NME> file / <BEF> parent / <MSG> commit message / <DFF> unified diff``. jelm cannot
download commits, so it writes its own: parent/child pairs of Sodarace walker programs
(§4) where the child is the parent after one named edit ("kind"), the message is the
ELM commit message that fits the edit, and the diff is ``jelm.mutation.base.unified_diff``.
The recipe, measured rates and sizes are in ``jelm/domains/sodarace/CORPUS.md``.

How a corpus is made (:func:`make_corpus`):

* Lineages. Each lineage starts at a seed program and takes up to ``max_depth + 1``
  edits in a row; every accepted edit is an example, and its child is the next parent,
  so parents carry 0..``max_depth`` earlier edits, like the programs met during
  evolution. With probability ``branch`` a parent also gets a sibling child that is not
  followed. The examples are shuffled at the end (so ``corpus[:k]`` is a fair sample).
* Edits are made on the text: the AST gives exact spans (line and column) of numeric
  literals (with their unary minus), calls and statements, and an edit replaces, inserts
  or deletes those spans only, so comments, blank lines and formatting survive (no
  ``ast.unparse``). The AST's spans are used instead of ``tokenize`` because they also
  say what a literal is (an amplitude, a phase, a joint coordinate, a module constant, a
  ``range`` bound, an index).
* Every child runs: it is compiled and executed in this process with the real walker API
  (these are jelm's own, trusted programs; a ``SIGALRM`` timer and caps on joint and link
  counts guard against runaway loops), and kept only when ``make_walker()`` returns a
  walker that passes validation and differs from the parent's walker. The names bound at
  the top level of ``make_walker`` are captured when it calls ``get_walker`` (a shim of
  ``walker_creator``), so structural edits know which expressions (``rim[3]``,
  ``grid[2, 0]``, ``center``) are joints and where those joints are.
* The message class is drawn first with the paper's odds (40 % "Changed make_walker
  function.", 30 % "Changed parameters in make_walker function.", 30 % "Small change to
  make_walker function."), then an edit kind of that class (:data:`KINDS`); a rejected
  edit is retried within the class, so the odds survive the rejections.

Everything is deterministic for a seed (one ``numpy`` generator; no set iteration).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import dataclasses
import json
import math
import signal
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jelm.domains.sodarace.api import DEFAULT_LIMITS, Joint, Walker, WalkerLimits, walker_creator
from jelm.domains.sodarace.prompts import COMMIT_MESSAGES, MSG_PARAMS, MSG_SMALL, MSG_STRUCT
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.mutation.base import unified_diff
from jelm.programs.diff import elm_example
from jelm.programs.edits import is_number

__all__ = [
    "KINDS",
    "MSG_PARAMS",
    "MSG_SMALL",
    "MSG_STRUCT",
    "CorpusStats",
    "Example",
    "generate_corpus",
    "make_corpus",
    "run_program",
    "training_text",
]

FILE_NAME = "walker.py"
_MESSAGE_ODDS: dict[str, float] = dict(COMMIT_MESSAGES)


@dataclass(frozen=True)
class Example:
    """One training pair: ``child`` is ``parent`` after one edit of kind ``kind``;
    ``diff == unified_diff(parent, child)`` and ``message`` is the ELM commit message."""

    parent: str
    child: str
    message: str
    diff: str
    kind: str


def training_text(example: Example) -> tuple[str, str]:
    """``(prompt, target)`` for the diff model: ``elm_prompt(parent, message)`` and the diff
    (ELM §3.1; the loss is on the target only, the trainer appends EOS)."""
    return elm_example(example.parent, example.message, example.diff, FILE_NAME)


# --------------------------------------------------------------------------- running programs


class _Timeout(BaseException):
    """Raised by the SIGALRM handler; a BaseException so ``except Exception`` cannot eat it."""


class _TooBig(Exception):
    """A program added more joints or links than any valid walker has."""


class _Capture(walker_creator):
    """The real ``walker_creator``, capped, and recording ``make_walker``'s local names when
    it calls ``get_walker`` (so edits know which expressions are joints)."""

    limits: WalkerLimits = DEFAULT_LIMITS
    scope: dict[str, Any] | None = None

    def add_joint(self, x: float, y: float) -> Joint:
        if len(self._joints) > self.limits.max_joints:
            raise _TooBig("too many joints")
        return super().add_joint(x, y)

    def add_muscle(self, j0: Any, j1: Any, *args: Any, **kwargs: Any) -> None:
        if len(self._muscles) > self.limits.max_links:
            raise _TooBig("too many links")
        super().add_muscle(j0, j1, *args, **kwargs)

    def get_walker(self) -> Walker:
        frame = sys._getframe(1)
        if frame.f_code.co_name == "make_walker":
            _Capture.scope = dict(frame.f_locals)
        return super().get_walker()


_SHIM = types.ModuleType("jelm.domains.sodarace.api")
_SHIM.walker_creator = _Capture  # type: ignore[attr-defined]


def _import(name: str, globals_=None, locals_=None, fromlist=(), level=0):
    if name == "jelm.domains.sodarace.api" and fromlist:
        return _SHIM
    return builtins.__import__(name, globals_, locals_, fromlist, level)


_BUILTINS = dict(builtins.__dict__)
_BUILTINS["__import__"] = _import


class _Alarm:
    """A SIGALRM timer around each program run (main thread only; elsewhere no timer)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False
        self.old: Any = None

    def __enter__(self) -> _Alarm:
        if self.seconds > 0 and threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGALRM, self._fire)
            self.active = True
        return self

    @staticmethod
    def _fire(signum: int, frame: Any) -> None:
        raise _Timeout

    def arm(self) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def disarm(self) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
            self.active = False


_NO_ALARM = _Alarm(0)


def _execute(
    code: Any, limits: WalkerLimits, alarm: _Alarm
) -> tuple[Walker | None, dict[str, Any] | None, str]:
    """Run a parsed program's ``make_walker()``: ``(walker, scope, "")`` or
    ``(None, None, reason)``."""
    _Capture.limits = limits
    _Capture.scope = None
    namespace: dict[str, Any] = {"__name__": "jelm_corpus_program", "__builtins__": _BUILTINS}
    alarm.arm()
    try:
        exec(code, namespace)
        make_walker = namespace.get("make_walker")
        if not callable(make_walker):
            return None, None, "no_make_walker"
        walker = make_walker()
    except _Timeout:
        return None, None, "timeout"
    except _TooBig:
        return None, None, "invalid:too_big"
    except Exception as exc:  # the program's own error, recorded by class
        return None, None, f"error:{type(exc).__name__}"
    finally:
        alarm.disarm()
    if not isinstance(walker, Walker):
        return None, None, "not_a_walker"
    try:
        walker.validate(limits)
    except Exception as exc:
        return None, None, f"invalid:{getattr(exc, 'code', type(exc).__name__)}"
    return walker, _Capture.scope, ""


def run_program(
    text: str, limits: WalkerLimits = DEFAULT_LIMITS, timeout_s: float = 1.0
) -> Walker | None:
    """The validated walker ``text``'s ``make_walker()`` builds, or ``None`` (in-process,
    for trusted programs: jelm's seeds and the corpus built from them)."""
    try:
        code = compile(text, "walker.py", "exec")
    except SyntaxError:
        return None
    with _Alarm(timeout_s) as alarm:
        return _execute(code, limits, alarm)[0]


# --------------------------------------------------------------------------- program sites

_MATH_SWAPS: dict[str, tuple[str, ...]] = {
    "sin": ("cos", "tanh"),
    "cos": ("sin",),
    "tanh": ("sin", "atan"),
    "atan": ("tanh",),
    "exp": ("tanh",),
}
# node types with nothing inside for the walk (contexts and operators)
_LEAVES = frozenset(
    c
    for base in (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
    for c in base.__subclasses__()
)
_COMPOUND = (ast.FunctionDef, ast.For, ast.While, ast.If, ast.With)


@dataclass
class _Num:
    """A numeric literal: its text span (with a unary minus), value and what it is."""

    start: int
    end: int
    value: float
    is_int: bool
    decimals: int
    role: str  # const | amp | phase | coord | range | index | other
    name: str  # the constant's name (role "const"), else ""
    func: str | None  # the top-level def it is in (None: module level)
    stmt: int  # line of the innermost statement holding it
    rhs: bool  # right operand of a binary operator
    op_at: int = -1  # offset of a binary + or - right before it (a sign flip swaps it)
    op: str = ""  # that operator


@dataclass
class _Stmt:
    """A statement inside a function body."""

    node: ast.stmt
    func: str
    siblings: int  # statements in its block (a block's last statement is never removed)
    in_loop: bool
    top: bool  # directly in the body of a top-level def


@dataclass
class _Call:
    """A call of ``add_muscle`` or ``range``: the node and its positional-argument spans."""

    node: ast.Call
    func: str | None
    args: list[tuple[int, int]]


class _Sites:
    """Everything an edit may touch in one program, from one walk over its AST."""

    def __init__(self, text: str, tree: ast.Module) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts: list[int] = []
        offset = 0
        for line in self.lines:
            self.starts.append(offset)
            offset += len(line)
        self.starts.append(offset)
        self.nums: list[_Num] = []
        self.stmts: list[_Stmt] = []
        self.muscles: list[_Call] = []
        self.ranges: list[_Call] = []
        self.joint_calls: list[_Call] = []
        self.mathfns: list[tuple[str | None, int, int, str]] = []
        self.addops: list[tuple[str | None, int, str]] = []
        self.terms: list[tuple[str, int, list[str]]] = []  # (func, end of an expr, params)
        self.phase_exprs: list[tuple[int, int]] = []
        self.funcs: dict[str, ast.FunctionDef] = {}
        self.names: set[str] = set()
        self.range_names: set[str] = set()
        self.top_names: list[str] = []
        self.ret_line: int | None = None
        self.ret_indent = ""
        for node in tree.body:
            self._visit(node, None, getattr(node, "lineno", 0), "other", False, False)
        mw = self.funcs.get("make_walker")
        if mw is not None:
            for s in mw.body:
                targets = s.targets if isinstance(s, ast.Assign) else []
                for t in targets:
                    for el in t.elts if isinstance(t, ast.Tuple) else [t]:
                        if isinstance(el, ast.Name) and el.id not in self.top_names:
                            self.top_names.append(el.id)
                if (
                    isinstance(s, ast.Return)
                    and isinstance(s.value, ast.Call)
                    and isinstance(s.value.func, ast.Attribute)
                    and s.value.func.attr == "get_walker"
                    and self._whole_lines(s)
                ):
                    self.ret_line = s.lineno
                    self.ret_indent = self.lines[s.lineno - 1][: s.col_offset]

    # positions ---------------------------------------------------------------

    def pos(self, lineno: int, col: int) -> int:
        """The text offset of an AST (line, UTF-8 byte column) position."""
        line = self.lines[lineno - 1]
        if col and not line.isascii():
            col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self.pos(node.lineno, node.col_offset),  # type: ignore[attr-defined]
            self.pos(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )

    def _whole_lines(self, s: ast.stmt) -> bool:
        """Whether ``s`` starts its first line and nothing but a comment follows it."""
        first = self.lines[s.lineno - 1]
        last = self.lines[s.end_lineno - 1]  # type: ignore[operator]
        end = self.pos(s.end_lineno, s.end_col_offset) - self.starts[s.end_lineno - 1]  # type: ignore[arg-type]
        rest = last[end:].strip()
        return first[: s.col_offset].strip() == "" and (rest == "" or rest.startswith("#"))

    def stmt_lines(self, s: ast.stmt) -> tuple[int, int]:
        """The text span of the whole lines of statement ``s``."""
        return self.starts[s.lineno - 1], self.starts[s.end_lineno]  # type: ignore[index]

    # the walk ----------------------------------------------------------------

    def _number(self, node: ast.AST, value: Any, func, stmt, role, rhs) -> None:
        start, end = self.span(node)
        raw = self.text[start:end].lstrip("-").strip()
        if not raw.replace(".", "", 1).isdigit():  # hex, exponents, underscores: leave
            return
        is_int = type(value) is int
        decimals = len(raw.split(".", 1)[1]) if "." in raw else 0
        op_at, j = -1, start - 1
        text = self.text
        while j > 0 and text[j] == " ":
            j -= 1
        if text[j] in "+-" and not text[start:end].startswith("-"):
            k = j - 1
            while k > 0 and text[k] == " ":
                k -= 1
            if text[k].isalnum() or text[k] in "_)].":
                op_at = j
        self.nums.append(
            _Num(
                start,
                end,
                float(value),
                is_int,
                decimals,
                role,
                "",
                func,
                stmt,
                rhs,
                op_at,
                text[op_at] if op_at >= 0 else "",
            )
        )

    def _visit(self, node: ast.AST, func, stmt, role, rhs, in_loop) -> None:
        t = type(node)
        if t is ast.Constant:
            v = node.value  # type: ignore[attr-defined]
            if type(v) in (int, float):
                self._number(node, v, func, stmt, role, rhs)
            return
        if (
            t is ast.UnaryOp
            and type(node.op) is ast.USub  # type: ignore[attr-defined]
            and type(node.operand) is ast.Constant  # type: ignore[attr-defined]
            and type(node.operand.value) in (int, float)  # type: ignore[attr-defined]
        ):
            self._number(node, -node.operand.value, func, stmt, role, rhs)  # type: ignore[attr-defined]
            return
        if isinstance(node, ast.stmt):
            stmt = node.lineno
        if t is ast.Name:
            self.names.add(node.id)  # type: ignore[attr-defined]
            return
        if t is ast.arg:
            self.names.add(node.arg)  # type: ignore[attr-defined]
            return
        if t is ast.FunctionDef:
            self.names.add(node.name)  # type: ignore[attr-defined]
            if func is None:
                self.funcs[node.name] = node  # type: ignore[assignment,attr-defined]
                func = node.name  # type: ignore[attr-defined]
                in_loop = False
        if t in _COMPOUND and func is not None:
            loop = in_loop or t in (ast.For, ast.While)
            for name in ("body", "orelse"):
                block = getattr(node, name, None) or []
                real = [
                    s
                    for s in block
                    if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                ]
                for s in real:
                    self.stmts.append(
                        _Stmt(
                            s,
                            func,
                            len(real),
                            loop,
                            t is ast.FunctionDef and node.name == func,  # type: ignore[attr-defined]
                        )
                    )
        if t is ast.Assign:
            targets = node.targets  # type: ignore[attr-defined]
            value = node.value  # type: ignore[attr-defined]
            if func is None and len(targets) == 1 and type(targets[0]) is ast.Name:
                before = len(self.nums)
                self._visit(value, func, stmt, "const", False, in_loop)
                if len(self.nums) == before + 1 and self.nums[-1].start == self.span(value)[0]:
                    self.nums[-1].name = targets[0].id
                else:
                    for n in self.nums[before:]:
                        n.role = "other" if n.role == "const" else n.role
                self.names.add(targets[0].id)
                return
            if func is not None:
                for tg in targets:
                    if type(tg) is ast.Name and "phase" in tg.id.lower():
                        self.phase_exprs.append(self.span(value))
                if func != "make_walker" and type(value) in (ast.BinOp, ast.Call):
                    self._term_site(func, value)
        if t is ast.Return and func not in (None, "make_walker"):
            value = node.value  # type: ignore[attr-defined]
            if type(value) in (ast.BinOp, ast.Call):
                self._term_site(func, value)
        if t is ast.Call:
            self._call(node, func, stmt, in_loop)  # type: ignore[arg-type]
            return
        if t is ast.Subscript:
            self._visit(node.value, func, stmt, role, False, in_loop)  # type: ignore[attr-defined]
            self._visit(node.slice, func, stmt, "index", False, in_loop)  # type: ignore[attr-defined]
            return
        if t is ast.BinOp:
            left, right = node.left, node.right  # type: ignore[attr-defined]
            inner = role if role in ("coord", "range", "index", "const") else "other"
            self._visit(left, func, stmt, inner, False, in_loop)
            self._visit(right, func, stmt, inner, True, in_loop)
            if (
                type(node.op) in (ast.Add, ast.Sub)  # type: ignore[attr-defined]
                and func is not None
                and left.end_lineno == right.lineno
            ):
                a, b = self.pos(left.end_lineno, left.end_col_offset), self.span(right)[0]
                gap = self.text[a:b]
                for i, ch in enumerate(gap):
                    if ch in "+-":
                        self.addops.append((func, a + i, ch))
                        break
            return
        loop = in_loop or t in (ast.For, ast.While)
        r = role if role in ("coord", "range", "index") else "other"
        for name in node._fields:
            value = getattr(node, name, None)
            if type(value) is list:
                for child in value:
                    if isinstance(child, ast.AST) and type(child) not in _LEAVES:
                        self._visit(child, func, stmt, r, False, loop)
            elif isinstance(value, ast.AST) and type(value) not in _LEAVES:
                self._visit(value, func, stmt, r, False, loop)

    def _term_site(self, func: str, value: ast.expr) -> None:
        node = self.funcs[func]
        params = [a.arg for a in node.args.args if a.arg != "wc"]
        uses_wc = any(isinstance(n, ast.Name) and n.id == "wc" for n in ast.walk(value))
        if params and value.end_lineno == value.lineno and not uses_wc:
            self.terms.append((func, self.span(value)[1], params))

    def _call(self, node: ast.Call, func, stmt, in_loop) -> None:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name)
            and f.value.id == "math"
            and f.attr in _MATH_SWAPS
        ):
            end = self.pos(f.end_lineno, f.end_col_offset)  # type: ignore[arg-type]
            self.mathfns.append((func, end - len(f.attr), end, f.attr))
        self._visit(f, func, stmt, "other", False, in_loop)
        roles = ["other"] * len(node.args)
        if name == "add_muscle":
            self.muscles.append(_Call(node, func, [self.span(a) for a in node.args]))
            if len(node.args) == 5:
                roles[3], roles[4] = "amp", "phase"
            elif len(node.args) == 4:
                roles[2], roles[3] = "amp", "phase"
            if len(node.args) in (4, 5):
                arg = node.args[-1]
                if not is_number(arg):
                    self.phase_exprs.append(self.span(arg))
        elif name == "add_joint":
            self.joint_calls.append(_Call(node, func, [self.span(a) for a in node.args]))
            roles = ["coord"] * len(node.args)
        elif name == "range" and isinstance(f, ast.Name):
            self.ranges.append(_Call(node, func, [self.span(a) for a in node.args]))
            roles = ["range"] * len(node.args)
            for a in node.args:
                for sub in ast.walk(a):
                    if isinstance(sub, ast.Name):
                        self.range_names.add(sub.id)
        for a, r in zip(node.args, roles, strict=True):
            self._visit(a, func, stmt, r, False, in_loop)
        for kw in node.keywords:
            r = {"amplitude": "amp", "phase": "phase"}.get(kw.arg or "", "other")
            self._visit(kw.value, func, stmt, r, False, in_loop)


# --------------------------------------------------------------------------- programs


class _Program:
    """A valid program: text, AST, walker, ``make_walker``'s captured names, lineage depth."""

    __slots__ = ("_refs", "_sites", "depth", "scope", "text", "tree", "walker")

    def __init__(
        self,
        text: str,
        tree: ast.Module | None,
        walker: Walker,
        scope: dict[str, Any] | None,
        depth: int,
    ) -> None:
        self.text, self.tree, self.walker, self.scope, self.depth = (
            text,
            tree,
            walker,
            scope,
            depth,
        )
        self._sites: _Sites | None = None
        self._refs: tuple[list[tuple[str, int]], list[tuple[str, list[int]]]] | None = None

    @property
    def sites(self) -> _Sites:
        if self._sites is None:
            if self.tree is None:
                self.tree = ast.parse(self.text)
            self._sites = _Sites(self.text, self.tree)
        return self._sites

    @property
    def refs(self) -> tuple[list[tuple[str, int]], list[tuple[str, list[int]]]]:
        """Joint expressions valid before ``make_walker``'s return: ``[(expr, joint index)]``
        and joint lists ``[(name, [joint indices])]``."""
        if self._refs is None:
            refs: list[tuple[str, int]] = []
            lists: list[tuple[str, list[int]]] = []
            scope = self.scope or {}
            n = self.walker.n_joints
            for name in self.sites.top_names:
                v = scope.get(name)
                if isinstance(v, Joint):
                    if v.index < n:
                        refs.append((name, v.index))
                elif isinstance(v, (list, tuple)) and v and all(isinstance(j, Joint) for j in v):
                    idx = [j.index for j in v]
                    if max(idx) < n:
                        refs.extend((f"{name}[{i}]", j) for i, j in enumerate(idx))
                        lists.append((name, idx))
                elif isinstance(v, dict) and v and all(isinstance(j, Joint) for j in v.values()):
                    for key, j in v.items():
                        if isinstance(key, tuple) and all(type(k) is int for k in key):
                            expr = f"{name}[{', '.join(map(str, key))}]"
                        elif type(key) is int:
                            expr = f"{name}[{key}]"
                        else:
                            continue
                        if j.index < n:
                            refs.append((expr, j.index))
            self._refs = (refs, lists)
        return self._refs


def _build(
    text: str, depth: int, limits: WalkerLimits, alarm: _Alarm
) -> tuple[_Program | None, str]:
    try:
        code = compile(text, "walker.py", "exec")
    except SyntaxError:
        return None, "syntax"
    walker, scope, reason = _execute(code, limits, alarm)
    if walker is None:
        return None, reason
    return _Program(text, None, walker, scope, depth), ""


# --------------------------------------------------------------------------- numbers


def _fmt_float(value: float, decimals: int, keep: int = 1) -> str:
    """``value`` with ``decimals`` places, trailing zeros dropped down to ``keep``."""
    s = f"{value:.{decimals}f}"
    if "." in s:
        whole, frac = s.split(".")
        frac = frac.rstrip("0")
        frac = frac + "0" * max(0, keep - len(frac))
        s = f"{whole}.{frac}" if frac else whole
    if s.lstrip("-").strip("0.") == "":
        s = s.lstrip("-")
    return s


def _num_text(num: _Num, value: float) -> str | None:
    """The literal for ``value`` in ``num``'s style, or ``None`` if it would not change.

    A right operand keeps its sign (no ``x * -1.0``); :func:`_num_edits` flips the sign of
    a term after a binary ``+``/``-`` by swapping the operator instead."""
    if num.rhs and (value < 0) != (num.value < 0) and value != 0:
        value = -value
    if num.is_int:
        new = round(value)
        return None if new == num.value else str(new)
    for k in range(max(1, num.decimals), max(2, num.decimals + 1) + 1):
        s = _fmt_float(value, k)
        if float(s) != num.value:
            return s
    return None


def _pick(rng: np.random.Generator, items: Sequence[Any], weights: Sequence[float] | None = None):
    if weights is None:
        return items[int(rng.integers(len(items)))]
    w = np.asarray(weights, dtype=np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


_ROLE_WEIGHT = {"const": 3.0, "amp": 2.0, "phase": 2.0, "coord": 2.0, "other": 1.0}


def _tunable(s: _Sites) -> list[_Num]:
    return [n for n in s.nums if n.role in _ROLE_WEIGHT]


def _pick_num(rng: np.random.Generator, nums: list[_Num]) -> _Num:
    return _pick(rng, nums, [_ROLE_WEIGHT[n.role] for n in nums])


def _is_phase(n: _Num) -> bool:
    up = n.name.upper()
    return n.role == "phase" or (
        n.role == "const" and ("PHASE" in up or "OFFSET" in up or up == "WAVE")
    )


def _is_amp(n: _Num) -> bool:
    return n.role == "amp" or (n.role == "const" and "AMPLITUDE" in n.name.upper())


def _small_value(n: _Num, rng: np.random.Generator) -> float:
    """A small change of ``n``: +-1 for an int, 5-25 % (or +-0.05..0.15 for a phase)."""
    v = n.value
    if n.is_int:
        return v + _pick(rng, (-1, 1)) if abs(v) < 8 else v + _pick(rng, (-2, -1, 1, 2))
    if _is_phase(n) or v == 0:
        step = float(rng.uniform(0.05, 0.15))
        return v + step * _pick(rng, (-1, 1))
    return v * (1 + float(rng.uniform(0.05, 0.25)) * _pick(rng, (-1, 1)))


def _clamp(n: _Num, value: float) -> float:
    if _is_amp(n):
        return max(-10.0, min(10.0, value))
    return value


_Edits = list[tuple[int, int, str]]


def _num_edits(pairs: list[tuple[_Num, float]]) -> _Edits | None:
    """Text edits setting each literal to its new value (``None``: nothing changes)."""
    out = []
    for n, v in pairs:
        v = _clamp(n, v)
        if n.op_at >= 0 and v != 0 and (v < 0) != (n.value < 0):
            s = _num_text(n, -v)  # ``a + 0.5 * y`` -> ``a - 0.5 * y``
            flipped = "-" if n.op == "+" else "+"
            out.append((n.op_at, n.op_at + 1, flipped))
            if s is not None:
                out.append((n.start, n.end, s))
            continue
        s = _num_text(n, v)
        if s is not None:
            out.append((n.start, n.end, s))
    return out or None


# --------------------------------------------------------------------------- edit kinds
#
# Each kind takes the parent and the generator and returns text edits (start, end,
# replacement) or None when the parent has no site for it.


def _tweak_number(p: _Program, rng: np.random.Generator) -> _Edits | None:
    nums = _tunable(p.sites)
    if not nums:
        return None
    n = _pick_num(rng, nums)
    return _num_edits([(n, _small_value(n, rng))])


_FACTORS = (0.25, 0.5, 0.6, 0.7, 0.75, 1.3, 1.4, 1.5, 2.0, 3.0)


def _scale_number(p: _Program, rng: np.random.Generator) -> _Edits | None:
    nums = [n for n in _tunable(p.sites) if n.value != 0]
    if not nums:
        return None
    n = _pick_num(rng, nums)
    if _is_phase(n) and not n.is_int:
        return _num_edits([(n, float(rng.integers(0, 20)) * 0.05)])
    return _num_edits([(n, n.value * _pick(rng, _FACTORS))])


def _flip_sign(p: _Program, rng: np.random.Generator) -> _Edits | None:
    nums = [n for n in _tunable(p.sites) if n.value != 0 and (not n.rhs or n.op_at >= 0)]
    if not nums:
        return None
    n = _pick_num(rng, nums)
    return _num_edits([(n, -n.value)])


def _sweep(rng: np.random.Generator, group: list[_Num], phase: bool = False) -> _Edits | None:
    if not group:
        return None
    mode = int(rng.integers(2))
    if phase:
        shift = float(rng.integers(1, 20)) * 0.05
        pairs = [
            (n, (n.value + shift) % 1.0 if mode == 0 else float(rng.integers(0, 20)) * 0.05)
            for n in group
        ]
    else:
        f = float(rng.uniform(0.5, 1.6))
        pairs = [
            (n, n.value * (f if mode == 0 else float(rng.uniform(0.6, 1.5))))
            if not n.is_int
            else (n, n.value + _pick(rng, (-1, 1)))
            for n in group
        ]
    return _num_edits(pairs)


def _sweep_amplitudes(p: _Program, rng: np.random.Generator) -> _Edits | None:
    return _sweep(rng, [n for n in p.sites.nums if _is_amp(n) and n.value != 0])


def _sweep_phases(p: _Program, rng: np.random.Generator) -> _Edits | None:
    return _sweep(rng, [n for n in p.sites.nums if _is_phase(n)], phase=True)


def _sweep_constants(p: _Program, rng: np.random.Generator) -> _Edits | None:
    consts = [n for n in p.sites.nums if n.role == "const" and n.value != 0]
    if len(consts) < 2:
        return None
    k = int(rng.integers(2, min(4, len(consts)) + 1))
    chosen = [consts[i] for i in sorted(rng.choice(len(consts), size=k, replace=False))]
    pairs = [
        (n, n.value + _pick(rng, (-1, 1)) if n.is_int else n.value * float(rng.uniform(0.6, 1.5)))
        for n in chosen
    ]
    return _num_edits(pairs)


def _sweep_statement(p: _Program, rng: np.random.Generator) -> _Edits | None:
    by_stmt: dict[int, list[_Num]] = {}
    for n in _tunable(p.sites):
        if not n.is_int and n.role != "const":
            by_stmt.setdefault(n.stmt, []).append(n)
    groups = [g for _, g in sorted(by_stmt.items()) if len(g) >= 2]
    if not groups:
        return None
    group = _pick(rng, groups)
    return _num_edits([(n, n.value * float(rng.uniform(0.7, 1.3))) for n in group])


def _change_count(p: _Program, rng: np.random.Generator) -> _Edits | None:
    s = p.sites
    counts = [n for n in s.nums if n.role == "const" and n.is_int and n.name in s.range_names]
    if not counts:
        return None
    n = _pick(rng, counts)
    new = max(1.0, n.value + _pick(rng, (-2, -1, 1, 1, 2)))
    return _num_edits([(n, new)])


# structural ------------------------------------------------------------------


def _amp_text(p: _Program, rng: np.random.Generator) -> str:
    consts = [n.name for n in p.sites.nums if n.role == "const" and "AMPLITUDE" in n.name]
    if consts and rng.random() < 0.4:
        return _pick(rng, consts)
    return _fmt_float(float(rng.uniform(2.0, 9.0)), 1)


def _phase_text(rng: np.random.Generator) -> str:
    return _fmt_float(float(rng.integers(0, 20)) * 0.05, 2)


def _fresh(s: _Sites, base: str, used: set[str]) -> str:
    name, k = base, 2
    while name in s.names or name in used:
        name, k = f"{base}{k}", k + 1
    used.add(name)
    return name


def _degrees(w: Walker) -> list[int]:
    deg = [0] * w.n_joints
    for i, j, _ in w.muscles:
        deg[i] += 1
        deg[j] += 1
    return deg


def _insert_before_return(p: _Program, block: list[str]) -> _Edits | None:
    """Insert ``block`` (lines without indentation) at the end of ``make_walker``."""
    s = p.sites
    if s.ret_line is None:
        return None
    ind = s.ret_indent
    lines = [f"{ind}{b}\n" if b else "\n" for b in block]
    at = s.starts[s.ret_line - 1]
    prev_blank = s.ret_line >= 2 and s.lines[s.ret_line - 2].strip() == ""
    return [(at, at, "".join(lines) + ("\n" if prev_blank else ""))]


def _free_spot(w: Walker, x: float, y: float, limits: WalkerLimits, min_gap: float = 0.6) -> bool:
    bound = limits.max_abs_coordinate - 1
    if abs(x) > bound or y < 0 or y > bound:
        return False
    return all(math.hypot(x - a, y - b) >= min_gap for a, b in w.joints)


_LIMB_NAMES = ("leg", "tail", "arm", "limb", "spike", "toe", "hook", "flap")
_LEG_COMMENTS = (
    "# an extra leg",
    "# add a leg",
    "# a new leg under {a}",
    "# one more leg, pushed by a muscle",
    "# a knee and a foot hanging from {a}",
)
_LIMB_COMMENTS = (
    "# add a limb",
    "# a tail hanging off {a}",
    "# extra limb for grip",
    "# a new joint held by a bone and a muscle",
    "# a small flap on {a}",
)


def _near(p: _Program, a: int, refs: list[tuple[str, int]], k: int = 6) -> list[tuple[str, int]]:
    ax, ay = p.walker.joints[a]
    others = sorted(
        {j: (e, j) for e, j in reversed(refs) if j != a}.values(),
        key=lambda r: (
            math.hypot(p.walker.joints[r[1]][0] - ax, p.walker.joints[r[1]][1] - ay),
            r[1],
        ),
    )
    return others[:k]


def _add_limb(p: _Program, rng: np.random.Generator, limits: WalkerLimits) -> _Edits | None:
    refs, _ = p.refs
    if len(refs) < 2:
        return None
    deg = _degrees(p.walker)
    cands = [r for r in refs if deg[r[1]] <= limits.max_links_per_joint - 2]
    if not cands:
        return None
    a_expr, a = _pick(rng, cands)
    near = [r for r in _near(p, a, refs) if deg[r[1]] < limits.max_links_per_joint]
    if not near:
        return None
    b_expr, _ = _pick(rng, near)
    ax, ay = p.walker.joints[a]
    used: set[str] = set()
    base = _pick(rng, _LIMB_NAMES)
    relative = rng.random() < 0.5 and "," not in a_expr
    amp, phase = _amp_text(p, rng), _phase_text(rng)
    block: list[str] = []
    two = rng.random() < 0.5 and ay >= 2.0
    if rng.random() < 0.6:
        block.append(_pick(rng, _LEG_COMMENTS if two else _LIMB_COMMENTS).format(a=a_expr))
    for _ in range(8):
        dx = _fmt_float(float(rng.uniform(-4.0, 4.0)), 1)
        if two:  # knee and foot: a leg
            drop = float(rng.uniform(1.0, max(1.2, ay)))
            kx, ky = ax + float(dx), ay - drop / 2
            fx, fy = ax + float(dx) * 0.5, max(0.0, ay - drop)
            kx, ky, fx, fy = (round(v, 1) for v in (kx, ky, fx, fy))
            if _free_spot(p.walker, kx, ky, limits) and _free_spot(p.walker, fx, fy, limits):
                if math.hypot(kx - fx, ky - fy) < 0.6:
                    continue
                knee, foot = _fresh(p.sites, "knee", used), _fresh(p.sites, "foot", used)
                if relative:
                    kx_t = f"{a_expr}[0] + {_fmt_float(kx - ax, 1)}".replace("+ -", "- ")
                    ky_t = f"{a_expr}[1] - {_fmt_float(ay - ky, 1)}".replace("- -", "+ ")
                    fx_t = f"{a_expr}[0] + {_fmt_float(fx - ax, 1)}".replace("+ -", "- ")
                else:
                    kx_t, ky_t, fx_t = (_fmt_float(v, 1) for v in (kx, ky, fx))
                block += [
                    f"{knee} = wc.add_joint({kx_t}, {ky_t})",
                    f"{foot} = wc.add_joint({fx_t}, {_fmt_float(fy, 1)})",
                    f"wc.add_muscle({a_expr}, {knee})",
                    f"wc.add_muscle({knee}, {foot})",
                    f"wc.add_muscle({b_expr}, {knee}, False, {amp}, {phase})",
                ]
                return _insert_before_return(p, block)
        else:  # one joint held by a bone and a muscle
            r = float(rng.uniform(1.5, 5.0))
            th = float(rng.uniform(0, 2 * math.pi))
            x, y = round(ax + r * math.cos(th), 1), round(max(0.0, ay + r * math.sin(th)), 1)
            if _free_spot(p.walker, x, y, limits):
                new = _fresh(p.sites, base, used)
                if relative:
                    xt = f"{a_expr}[0] + {_fmt_float(x - ax, 1)}".replace("+ -", "- ")
                    yt = f"{a_expr}[1] + {_fmt_float(y - ay, 1)}".replace("+ -", "- ")
                else:
                    xt, yt = _fmt_float(x, 1), _fmt_float(y, 1)
                block += [
                    f"{new} = wc.add_joint({xt}, {yt})",
                    f"wc.add_muscle({a_expr}, {new})",
                    f"wc.add_muscle({b_expr}, {new}, False, {amp}, {phase})",
                ]
                return _insert_before_return(p, block)
    return None


def _add_link(p: _Program, rng: np.random.Generator, limits: WalkerLimits) -> _Edits | None:
    refs, _ = p.refs
    if len(refs) < 2:
        return None
    deg = _degrees(p.walker)
    linked = {(min(i, j), max(i, j)) for i, j, _ in p.walker.muscles}
    cap = limits.max_links_per_joint
    cands = [r for r in refs if deg[r[1]] < cap]
    if len(cands) < 2:
        return None
    for _ in range(6):
        a_expr, a = _pick(rng, cands)
        near = [r for r in _near(p, a, cands) if (min(a, r[1]), max(a, r[1])) not in linked]
        if not near:
            continue
        b_expr, _ = _pick(rng, near)
        block = []
        if rng.random() < 0.4:
            block.append(_pick(rng, ("# brace the body", "# one more link", "# a new muscle")))
        if rng.random() < 0.35:
            block.append(f"wc.add_muscle({a_expr}, {b_expr})")
        else:
            block.append(
                f"wc.add_muscle({a_expr}, {b_expr}, False, {_amp_text(p, rng)}, {_phase_text(rng)})"
            )
        return _insert_before_return(p, block)
    return None


def _add_loop_links(p: _Program, rng: np.random.Generator) -> _Edits | None:
    _, lists = p.refs
    lists = [(name, idx) for name, idx in lists if len(idx) >= 3]
    if not lists:
        return None
    name, idx = _pick(rng, lists)
    k = "k" if "k" not in p.sites.top_names else "i"
    step = int(rng.integers(1, 3))
    other = name
    if rng.random() < 0.4:
        same = [n for n, ix in lists if len(ix) == len(idx) and n != name]
        if same:
            other = _pick(rng, same)
            step = int(rng.integers(0, 2))
    if other == name and step == 0:
        step = 1
    target = f"{other}[{k} + {step}]" if step else f"{other}[{k}]"
    bound = f"range(len({name}) - {step})" if step else f"range(len({name}))"
    if rng.random() < 0.3 and step:
        target = f"{other}[({k} + {step}) % len({other})]"
        bound = f"range(len({name}))"
    if rng.random() < 0.5:
        call = f"wc.add_muscle({name}[{k}], {target})"
        comment = "# brace the joints with bones"
    else:
        call = (
            f"wc.add_muscle({name}[{k}], {target}, False, {_amp_text(p, rng)}, {k} / len({name}))"
        )
        comment = "# a wave of muscles along the body"
    block = ([comment] if rng.random() < 0.6 else []) + [f"for {k} in {bound}:", f"    {call}"]
    return _insert_before_return(p, block)


def _removable(s: _Sites, st: _Stmt) -> bool:
    return st.siblings > 1 and s._whole_lines(st.node)


def _remove_lines(s: _Sites, st: _Stmt, rng: np.random.Generator) -> _Edits:
    start, end = s.stmt_lines(st.node)
    first = st.node.lineno - 1
    after = s.lines[st.node.end_lineno] if st.node.end_lineno < len(s.lines) else ""  # type: ignore[operator]
    ind = s.lines[first][: st.node.col_offset]
    if (after.strip() == "" or not after.startswith(ind)) and rng.random() < 0.7:
        k = first
        while k > 0 and s.lines[k - 1].strip().startswith("#") and s.lines[k - 1].startswith(ind):
            k -= 1
        start = s.starts[k]
        if after.strip() == "" and k > 0 and s.lines[k - 1].strip() == "":
            end += len(after)  # do not leave two blank lines
    return [(start, end, "")]


def _is_call_to(node: ast.stmt, names: tuple[str, ...] | None, exclude: tuple[str, ...] = ()):
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    f = node.value.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return (names is None or name in names) and name not in exclude


def _remove_muscle(p: _Program, rng: np.random.Generator) -> _Edits | None:
    s = p.sites
    cands = [st for st in s.stmts if _is_call_to(st.node, ("add_muscle",)) and _removable(s, st)]
    if not cands:
        return None
    return _remove_lines(s, _pick(rng, cands), rng)


def _remove_call(p: _Program, rng: np.random.Generator) -> _Edits | None:
    s = p.sites
    cands = [
        st
        for st in s.stmts
        if _is_call_to(st.node, None, ("add_muscle", "add_joint", "append")) and _removable(s, st)
    ]
    if not cands:
        return None
    return _remove_lines(s, _pick(rng, cands), rng)


def _duplicate_statement(p: _Program, rng: np.random.Generator) -> _Edits | None:
    """Duplicate a statement that builds part of the walker (a call of the walker API or
    of a helper), usually changing one number of the copy; a copied joint always moves."""
    s = p.sites
    builders = ("wc.", *(f"{f}(" for f in s.funcs if f != "make_walker"))
    cands = []
    for st in s.stmts:
        node = st.node
        if not isinstance(node, (ast.Expr, ast.Assign)) or not isinstance(node.value, ast.Call):
            continue
        a, b = s.stmt_lines(node)
        if s._whole_lines(node) and any(x in s.text[a:b] for x in builders):
            cands.append((st, a, b))
    if not cands:
        return None
    st, start, end = _pick(rng, cands)
    copy = s.text[start:end]
    if not copy.endswith("\n"):
        copy += "\n"
    joints = [c for c in s.joint_calls if start <= c.args[0][0] < end and len(c.args) == 2]
    nums = [n for n in s.nums if start <= n.start and n.end <= end and n.role != "range"]
    edits: _Edits = []
    if joints:
        call = _pick(rng, joints)
        a, b = call.args[int(rng.integers(2))]
        d = _fmt_float(float(rng.uniform(1.0, 3.0)), 1)
        if (is_number(call.node.args[0]) and a == call.args[0][0]) or (
            is_number(call.node.args[1]) and a == call.args[1][0]
        ):
            value = float(s.text[a:b]) + float(d) * _pick(rng, (-1, 1))
            edits.append((a, b, _fmt_float(value, 1)))
        else:
            edits.append((b, b, f" {_pick(rng, ('+', '-'))} {d}"))
    elif nums and rng.random() < 0.75:
        n = _pick(rng, nums)
        if n.role == "index" or n.is_int:
            value = n.value + _pick(rng, (-1, 1, 1, 2))
            if n.role == "index" and n.value >= 0:
                value = abs(value)
        else:
            value = n.value * _pick(rng, _FACTORS)
        text = _num_text(n, _clamp(n, value))
        if text is not None:
            edits.append((n.start, n.end, text))
    if edits:
        copy = _apply(copy, [(x - start, y - start, t) for x, y, t in edits]) or copy
    return [(end, end, copy if s.text[end - 1 : end] == "\n" else "\n" + copy)]


def _edit_helper(p: _Program, rng: np.random.Generator) -> _Edits | None:
    s = p.sites
    helpers = [f for f in s.funcs if f != "make_walker"]
    if not helpers:
        return None
    func = _pick(rng, helpers)
    ops: list[Callable[[], _Edits | None]] = []
    nums = [n for n in _tunable(s) if n.func == func]
    if nums:

        def perturb() -> _Edits | None:
            k = min(len(nums), int(rng.integers(1, 4)))
            chosen = [nums[i] for i in sorted(rng.choice(len(nums), size=k, replace=False))]
            return _num_edits(
                [
                    (n, n.value + _pick(rng, (-1, 1)))
                    if n.is_int
                    else (n, n.value * float(rng.uniform(0.5, 1.5)) if n.value else 0.3)
                    for n in chosen
                ]
            )

        ops.append(perturb)
    fns = [m for m in s.mathfns if m[0] == func]
    if fns:

        def swap_fn() -> _Edits | None:
            _, a, b, name = _pick(rng, fns)
            return [(a, b, _pick(rng, _MATH_SWAPS[name]))]

        ops.append(swap_fn)
    adds = [o for o in s.addops if o[0] == func]
    if adds:

        def swap_op() -> _Edits | None:
            _, at, ch = _pick(rng, adds)
            return [(at, at + 1, "-" if ch == "+" else "+")]

        ops.append(swap_op)
    terms = [t for t in s.terms if t[0] == func]
    if terms:

        def add_term() -> _Edits | None:
            _, at, params = _pick(rng, terms)
            c = _fmt_float(float(rng.uniform(0.1, 0.9)), 1)
            sign = _pick(rng, ("+", "-"))
            return [(at, at, f" {sign} {c} * {_pick(rng, params)}")]

        ops.append(add_term)
    body = [
        st
        for st in s.stmts
        if st.func == func and _is_call_to(st.node, ("add_muscle",)) and _removable(s, st)
    ]
    if body:
        ops.append(lambda: _remove_lines(s, _pick(rng, body), rng))
    if not ops:
        return None
    return _pick(rng, ops)()


def _change_loop_bound(p: _Program, rng: np.random.Generator) -> _Edits | None:
    s = p.sites
    if not s.ranges:
        return None
    call = _pick(rng, s.ranges)
    args = call.node.args
    if len(args) == 1 or rng.random() < 0.7:
        node, (a, b) = args[min(1, len(args) - 1)], call.args[min(1, len(args) - 1)]
        text = s.text[a:b]
        if is_number(node):
            if not text.lstrip("-").isdigit():
                return None
            value = int(text) + _pick(rng, (-2, -1, 1, 2))
            return None if value < 0 else [(a, b, str(value))]
        atomic = isinstance(node, (ast.Name, ast.Call, ast.Attribute, ast.Subscript))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and is_number(node.right):
            r0, r1 = s.span(node.right)
            if not s.text[r0:r1].isdigit():
                return None
            value = int(s.text[r0:r1]) + _pick(rng, (-1, 1))
            if value <= 0:
                return [(s.span(node.left)[1], r1, "")]
            return [(r0, r1, str(value))]
        if isinstance(node, (ast.BinOp, ast.Name, ast.Call, ast.Attribute, ast.Subscript)):
            opts = [f"{text} - 1", f"{text} + 1", f"{text} - 2"]
            if atomic:
                opts.append(f"{text} // 2")
            if len(args) == 1:
                opts.append(f"1, {text}")
            return [(a, b, _pick(rng, opts))]
        return None
    node, (a, b) = args[0], call.args[0]
    if is_number(node) and s.text[a:b].isdigit():
        value = int(s.text[a:b]) + _pick(rng, (-1, 1, 2))
        return None if value < 0 else [(a, b, str(value))]
    return None


def _swap_passive(p: _Program, rng: np.random.Generator) -> _Edits | None:
    s = p.sites
    if not s.muscles:
        return None
    call = _pick(rng, s.muscles)
    args = call.node.args
    if len(args) == 2 and not call.node.keywords:
        end = call.args[1][1]
        return [(end, end, f", False, {_amp_text(p, rng)}, {_phase_text(rng)}")]
    if len(args) == 5 and type(args[2]) is ast.Constant and type(args[2].value) is bool:
        a, b = call.args[2]
        if args[2].value is False and rng.random() < 0.35:
            return [(call.args[1][1], call.args[4][1], "")]  # muscle -> plain bone
        return [(a, b, "True" if args[2].value is False else "False")]
    return None


def _phase_expression(p: _Program, rng: np.random.Generator) -> _Edits | None:
    s = p.sites
    if not s.phase_exprs:
        return None
    a, b = _pick(rng, s.phase_exprs)
    text = s.text[a:b]
    if "\n" in text:
        return None
    choice = int(rng.integers(3))
    if choice == 0:
        new = f"({text} + {_fmt_float(float(rng.integers(1, 20)) * 0.05, 2)}) % 1.0"
    elif choice == 1:
        new = f"(-{text}) % 1.0" if not text.startswith("-") else text[1:]
    else:
        new = f"({text} * 2) % 1.0"
    return [(a, b, new)]


# --------------------------------------------------------------------------- the kinds

_STRUCT_WEIGHTS = {
    "add_limb": 2.0,
    "add_link": 1.5,
    "add_loop_links": 1.0,
    "remove_muscle": 1.0,
    "remove_call": 0.5,
    "duplicate_statement": 1.0,
    "edit_helper": 1.5,
    "change_loop_bound": 1.0,
    "swap_passive": 1.0,
    "phase_expression": 0.5,
    "compound": 1.0,
}
_PARAMS_WEIGHTS = {
    "scale_number": 1.0,
    "flip_sign": 0.5,
    "sweep_amplitudes": 1.0,
    "sweep_phases": 1.0,
    "sweep_constants": 1.0,
    "sweep_statement": 1.0,
    "change_count": 0.7,
}
_SMALL_WEIGHTS = {"tweak_number": 1.0}
_CLASSES: tuple[tuple[str, dict[str, float]], ...] = (
    (MSG_STRUCT, _STRUCT_WEIGHTS),
    (MSG_PARAMS, _PARAMS_WEIGHTS),
    (MSG_SMALL, _SMALL_WEIGHTS),
)

#: Every edit kind and the ELM commit message it is trained with.
KINDS: dict[str, str] = {k: msg for msg, weights in _CLASSES for k in weights}

_EditFn = Callable[[_Program, np.random.Generator, WalkerLimits], "_Edits | None"]
_FNS: dict[str, _EditFn] = {
    "tweak_number": lambda p, r, lim: _tweak_number(p, r),
    "scale_number": lambda p, r, lim: _scale_number(p, r),
    "flip_sign": lambda p, r, lim: _flip_sign(p, r),
    "sweep_amplitudes": lambda p, r, lim: _sweep_amplitudes(p, r),
    "sweep_phases": lambda p, r, lim: _sweep_phases(p, r),
    "sweep_constants": lambda p, r, lim: _sweep_constants(p, r),
    "sweep_statement": lambda p, r, lim: _sweep_statement(p, r),
    "change_count": lambda p, r, lim: _change_count(p, r),
    "add_limb": _add_limb,
    "add_link": _add_link,
    "add_loop_links": lambda p, r, lim: _add_loop_links(p, r),
    "remove_muscle": lambda p, r, lim: _remove_muscle(p, r),
    "remove_call": lambda p, r, lim: _remove_call(p, r),
    "duplicate_statement": lambda p, r, lim: _duplicate_statement(p, r),
    "edit_helper": lambda p, r, lim: _edit_helper(p, r),
    "change_loop_bound": lambda p, r, lim: _change_loop_bound(p, r),
    "swap_passive": lambda p, r, lim: _swap_passive(p, r),
    "phase_expression": lambda p, r, lim: _phase_expression(p, r),
}


def _apply(text: str, edits: _Edits) -> str | None:
    """Splice non-overlapping ``(start, end, replacement)`` edits into ``text``."""
    out, last = [], len(text)
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        if end > last:
            return None
        out.append(text[end:last])
        out.append(new)
        last = start
    out.append(text[:last])
    return "".join(reversed(out))


def _first_edit(
    p: _Program, kinds: list[str], rng: np.random.Generator, limits: WalkerLimits
) -> str | None:
    """The first of up to four random kinds from ``kinds`` that finds a site in ``p``."""
    for _ in range(4):
        text = _edit_text(p, _pick(rng, kinds), rng, limits)
        if text is not None and text != p.text:
            return text
    return None


def _edit_text(
    p: _Program, kind: str, rng: np.random.Generator, limits: WalkerLimits
) -> str | None:
    """The text of ``p`` after one edit of ``kind``, or ``None`` (no site)."""
    if kind == "compound":  # two edits of other kinds, the second on the first's result
        simple = [k for k in KINDS if k != "compound"]
        first = _first_edit(p, simple, rng, limits)
        if first is None:
            return None
        try:
            tree = ast.parse(first)
        except SyntaxError:
            return None
        mid = _Program(first, tree, p.walker, None, p.depth)
        mid._refs = ([], [])  # the parent's joint names may have moved: no joint edits
        return _first_edit(mid, simple, rng, limits)
    edits = _FNS[kind](p, rng, limits)
    if not edits:
        return None
    return _apply(p.text, edits)


# --------------------------------------------------------------------------- generation


@dataclass
class CorpusStats:
    """What :func:`generate_corpus` did: edits tried and rejected per kind and reason
    (over every lineage run), and the kinds, messages and parent depths of the examples
    kept."""

    examples: int = 0
    attempts: Counter = field(default_factory=Counter)  # kind -> edits tried on a program
    no_site: Counter = field(default_factory=Counter)  # kind -> no place for the edit
    rejected: Counter = field(default_factory=Counter)  # reason -> children rejected
    rejected_by_kind: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    messages: Counter = field(default_factory=Counter)
    depths: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def candidates(self) -> int:
        """Children that were run (edits that found a site)."""
        return sum(self.attempts.values()) - sum(self.no_site.values())

    @property
    def rejection_rate(self) -> float:
        """Fraction of run children rejected (error, invalid walker, no effect, too long)."""
        return sum(self.rejected.values()) / max(1, self.candidates)

    def merge(self, other: CorpusStats) -> None:
        """Add ``other``'s edit counts to these (the per-example counts are set at the end)."""
        for name in ("attempts", "no_site", "rejected", "rejected_by_kind"):
            getattr(self, name).update(getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        """The statistics as plain JSON-able values (rates rounded)."""
        n = max(1, self.examples)
        return {
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
            "examples_per_s": round(self.examples / max(self.seconds, 1e-9), 1),
            "candidates": self.candidates,
            "rejection_rate": round(self.rejection_rate, 4),
            "rejected": dict(self.rejected.most_common()),
            "kinds": dict(self.kinds.most_common()),
            "messages": {m: round(c / n, 4) for m, c in self.messages.most_common()},
            "kind_rejection": {
                k: round(self.rejected_by_kind[k] / max(1, self.attempts[k] - self.no_site[k]), 3)
                for k in sorted(self.attempts)
            },
            "depths": dict(sorted(self.depths.items())),
        }


def _resolve_seed(seed: str) -> str:
    if seed in SEED_NAMES:
        return seed_source(seed)
    if "def make_walker" in seed:
        return seed
    raise ValueError(f"unknown seed {seed!r}: a name in SEED_NAMES or a program's source")


def _same_walker(a: Walker, b: Walker) -> bool:
    return a.joints == b.joints and a.muscles == b.muscles


@dataclass(frozen=True)
class _Config:
    """The knobs of one corpus (sent to worker processes)."""

    seed: int
    sources: tuple[str, ...]
    max_depth: int
    branch: float
    max_chars: int
    limits: WalkerLimits
    timeout_s: float
    max_tries: int


_ROOTS: dict[tuple[tuple[str, ...], WalkerLimits], list[_Program]] = {}


def _roots(cfg: _Config, alarm: _Alarm) -> list[_Program]:
    """The seed programs, run once per process."""
    key = (cfg.sources, cfg.limits)
    if key not in _ROOTS:
        roots = []
        for src in cfg.sources:
            root, reason = _build(src, 0, cfg.limits, alarm)
            if root is None:
                raise ValueError(f"seed {src[:60]!r}... does not build a valid walker: {reason}")
            roots.append(root)
        _ROOTS.clear()
        _ROOTS[key] = roots
    return _ROOTS[key]


_LINEAGES_PER_BLOCK = 32
_Row = tuple[Example, int]  # an example and its parent's depth


def _run_block(cfg: _Config, block: int) -> tuple[list[_Row], CorpusStats]:
    """The examples of lineages ``block * 32 ..`` (each lineage has its own generator,
    seeded by ``(seed, lineage)``, so a corpus does not depend on how blocks are spread
    over processes)."""
    stats = CorpusStats()
    rows: list[_Row] = []
    class_msgs = [msg for msg, _ in _CLASSES]
    class_p = np.asarray([_MESSAGE_ODDS[m] for m in class_msgs])
    class_p = class_p / class_p.sum()
    class_kinds = [(list(w), np.asarray(list(w.values())) / sum(w.values())) for _, w in _CLASSES]

    with _Alarm(cfg.timeout_s) as alarm:
        roots = _roots(cfg, alarm)

        def child_of(
            parent: _Program, rng: np.random.Generator
        ) -> tuple[_Program, str, str] | None:
            c = int(rng.choice(len(class_msgs), p=class_p))
            names, p = class_kinds[c]
            for _ in range(cfg.max_tries):
                kind = names[int(rng.choice(len(names), p=p))]
                stats.attempts[kind] += 1
                text = _edit_text(parent, kind, rng, cfg.limits)
                if text is None or text == parent.text:
                    stats.no_site[kind] += 1
                    continue
                if len(text) > cfg.max_chars:
                    prog, reason = None, "too_long"
                else:
                    prog, reason = _build(text, parent.depth + 1, cfg.limits, alarm)
                    if prog is not None and _same_walker(prog.walker, parent.walker):
                        prog, reason = None, "no_effect"
                if prog is None:
                    stats.rejected[reason] += 1
                    stats.rejected_by_kind[kind] += 1
                    continue
                return prog, kind, class_msgs[c]
            return None

        def emit(parent: _Program, made: tuple[_Program, str, str]) -> None:
            child, kind, msg = made
            diff = unified_diff(parent.text, child.text, FILE_NAME)
            rows.append((Example(parent.text, child.text, msg, diff, kind), parent.depth))

        for lineage in range(block * _LINEAGES_PER_BLOCK, (block + 1) * _LINEAGES_PER_BLOCK):
            rng = np.random.default_rng([cfg.seed, lineage])
            node = roots[int(rng.integers(len(roots)))]
            for _ in range(cfg.max_depth + 1):
                made = child_of(node, rng)
                if made is None:
                    break
                emit(node, made)
                if rng.random() < cfg.branch:
                    sibling = child_of(node, rng)
                    if sibling is not None:
                        emit(node, sibling)
                node = made[0]
    return rows, stats


def _run_block_star(args: tuple[_Config, int]) -> tuple[list[_Row], CorpusStats]:
    return _run_block(*args)


def _check_progress(rows: list[_Row], blocks: int) -> None:
    if not rows and blocks >= 4:
        raise RuntimeError(
            f"no edit of the seeds gave a valid, different walker in {blocks * _LINEAGES_PER_BLOCK}"
            " lineages: are the seeds editable (numbers, add_muscle calls, make_walker)?"
        )


def generate_corpus(
    n: int,
    seed: int = 0,
    seeds: Sequence[str] = SEED_NAMES,
    *,
    max_depth: int = 10,
    branch: float = 0.25,
    max_chars: int = 5000,
    limits: WalkerLimits = DEFAULT_LIMITS,
    timeout_s: float = 1.0,
    max_tries: int = 12,
    workers: int = 1,
) -> tuple[list[Example], CorpusStats]:
    """``n`` examples and the statistics of making them (see the module docstring).

    Args:
        n: number of examples.
        seed: the seed; the same arguments give the same corpus, whatever ``workers``.
        seeds: seed names (``SEED_NAMES``) or program sources to start lineages from.
        max_depth: most earlier edits a parent carries (lineages are ``max_depth + 1``
            edits long, so parent depths are roughly uniform on ``0..max_depth``).
        branch: chance that a parent also gets a second child, which is not followed.
        max_chars: children (hence parents) longer than this are dropped (5,000 chars is
            about 1,500 tokens of jelm's tokenizer, leaving room for the diff in 2,048).
        limits: walker validation limits every child must pass.
        timeout_s: wall-clock limit for running one program (main thread only).
        max_tries: edits tried (within the drawn message class) before a lineage ends.
        workers: processes (``spawn``ed, so safe next to JAX); 1 runs in this process.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not seeds:
        raise ValueError("no seeds")
    t0 = time.perf_counter()
    cfg = _Config(
        seed,
        tuple(_resolve_seed(s) for s in seeds),
        max_depth,
        branch,
        max_chars,
        limits,
        timeout_s,
        max_tries,
    )
    stats = CorpusStats()
    rows: list[_Row] = []
    block = 0
    if workers <= 1:
        while len(rows) < n:
            got, st = _run_block(cfg, block)
            rows.extend(got)
            stats.merge(st)
            block += 1
            _check_progress(rows, block)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            while len(rows) < n:
                # blocks for the examples still missing (about 13 per lineage), in order
                need = max(workers, math.ceil((n - len(rows)) / (13 * _LINEAGES_PER_BLOCK)))
                jobs = [(cfg, b) for b in range(block, block + need)]
                block += need
                for got, st in pool.imap(_run_block_star, jobs):
                    if len(rows) < n:
                        rows.extend(got)
                        stats.merge(st)
                _check_progress(rows, block)
    rows = rows[:n]
    order = np.random.default_rng(seed).permutation(len(rows))
    examples = [rows[i][0] for i in order]
    for e, depth in rows:
        stats.kinds[e.kind] += 1
        stats.messages[e.message] += 1
        stats.depths[depth] += 1
    stats.examples = len(examples)
    stats.seconds = time.perf_counter() - t0
    return examples, stats


def make_corpus(
    n: int, seed: int = 0, seeds: Sequence[str] = SEED_NAMES, *, workers: int = 1
) -> list[Example]:
    """``n`` diff-model training examples made from ``seeds``, shuffled (deterministic for
    ``seed``, whatever ``workers``); see :func:`generate_corpus` for the other knobs and
    ``jelm/domains/sodarace/CORPUS.md`` for the recipe and its measured rates."""
    return generate_corpus(n, seed, seeds, workers=workers)[0]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m jelm.domains.sodarace.corpus``: make a corpus, print its statistics as JSON, and
    optionally write it as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chars", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the examples here (JSON lines)")
    args = ap.parse_args(argv)
    examples, stats = generate_corpus(
        args.n, args.seed, max_chars=args.max_chars, workers=args.workers
    )
    report = stats.to_dict()
    for name, values in (
        ("parent_chars", [len(e.parent) for e in examples]),
        ("diff_chars", [len(e.diff) for e in examples]),
        ("diff_lines", [e.diff.count("\n") for e in examples]),
    ):
        if values:
            arr = np.asarray(values)
            report[name] = {
                q: int(np.percentile(arr, p))
                for q, p in (("min", 0), ("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            }
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(dataclasses.asdict(e)) + "\n")


if __name__ == "__main__":
    main()
