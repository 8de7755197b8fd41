"""A walker program as the corpus's edits see it (ELM arXiv 2206.08896v1, §3.1, §4).

:class:`WalkerSites` is the edit engine's index of a program (:mod:`jelm.programs.edits`)
read with the walker API in mind: which literals are amplitudes, phases or joint
coordinates, which calls add muscles or joints, which expressions compute a phase, where
``make_walker`` returns. :class:`Program` is a program that ran: its text, walker and
``make_walker``'s names, from which the joint expressions (``rim[3]``, ``grid[2, 0]``,
``center``) and their positions follow.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from jelm.domains.sodarace.api import Joint, Walker, WalkerLimits
from jelm.domains.sodarace.corpus.run import execute
from jelm.programs.edits import (
    OTHER,
    SYMBOLS,
    ArgumentRoles,
    Call,
    Number,
    Sites,
    Source,
    is_number,
)
from jelm.programs.trusted import TrustedRunner

__all__ = ["MATH_SWAPS", "WALKER_ROLES", "Program", "Stmt", "WalkerSites", "build"]

#: ``math`` functions an edit may swap for another (``edit_helper``).
MATH_SWAPS: dict[str, tuple[str, ...]] = {
    "sin": ("cos", "tanh"),
    "cos": ("sin",),
    "tanh": ("sin", "atan"),
    "atan": ("tanh",),
    "exp": ("tanh",),
}

_AMP, _PHASE, _COORD = "amp", "phase", "coord"


def _walker_roles(name: str, n_args: int) -> tuple[str, ...] | None:
    """``add_muscle(j0, j1[, passive], amplitude, phase)`` and ``add_joint(x, y)``."""
    if name == "add_muscle":
        if n_args == 5:
            return (OTHER, OTHER, OTHER, _AMP, _PHASE)
        if n_args == 4:
            return (OTHER, OTHER, _AMP, _PHASE)
        return None
    if name == "add_joint":
        return (_COORD,) * n_args
    return None


#: The roles of the walker API's literal arguments (a coordinate's role reaches into its
#: sub-expressions: ``add_joint(x + 1.5, 0.0)``).
WALKER_ROLES = ArgumentRoles(
    positional=_walker_roles,
    keywords={"amplitude": _AMP, "phase": _PHASE},
    sticky=frozenset({_COORD}),
)

# blocks whose statements line-level edits may remove or copy
_COMPOUND = (ast.FunctionDef, ast.For, ast.While, ast.If, ast.With)
_CREATOR = "wc"  # the seeds' name of the walker_creator (and the default)


@dataclass
class Stmt:
    """A statement in a block (see ``_COMPOUND``) inside a function; ``siblings`` counts
    its block's statements (a block's last statement is never removed)."""

    node: ast.stmt
    func: str
    siblings: int


class WalkerSites:
    """Everything an edit may touch in one walker program, from one walk over its AST.

    ``nums`` (literals with roles ``const``, ``amp``, ``phase``, ``coord``, ``range``,
    ``index``, ``other``), ``stmts``, ``muscles``/``joint_calls``/``ranges`` (calls of
    ``add_muscle``, ``add_joint`` and ``range``), ``mathfns`` (``(func, start, end, name)``
    of ``math.<name>`` calls), ``addops`` (``(func, offset, symbol)`` of binary ``+``/``-``
    in functions), ``terms`` (``(func, end, params)``: where a helper's one-line expression
    ends, and the helper's parameters), ``phase_exprs`` (spans of computed phases),
    ``funcs``, ``names``, ``range_names`` (names in ``range`` arguments), ``top_names``
    (names ``make_walker`` assigns at its top level), ``ret_line``/``ret_indent`` (its
    ``return wc.get_walker()`` line, when that statement has its lines to itself),
    ``creator`` (the name whose ``get_walker`` it returns: new code calls the walker API
    on it; ``wc`` when there is none) and ``receivers`` (the names the program calls
    ``add_joint``/``add_muscle`` on, ``wc`` always among them).
    """

    def __init__(self, text: str, tree: ast.Module) -> None:
        src = Source(text)
        sites = Sites.of_module(tree, src, WALKER_ROLES)
        self.src = src
        self.text = text
        self.nums: list[Number] = sites.numbers
        self.funcs = sites.functions
        self.names = sites.names
        self.stmts: list[Stmt] = []
        for b in sites.blocks:
            if (
                b.func is None
                or type(b.owner) not in _COMPOUND
                or b.field not in ("body", "orelse")
            ):
                continue
            real = [
                s
                for s in b.body
                if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
            ]
            self.stmts.extend(Stmt(s, b.func, len(real)) for s in real)
        calls = sites.calls
        self.receivers: set[str] = {_CREATOR} | {
            c.node.func.value.id
            for c in calls
            if c.name in ("add_joint", "add_muscle")
            and isinstance(c.node.func, ast.Attribute)
            and isinstance(c.node.func.value, ast.Name)
        }
        self.muscles: list[Call] = [c for c in calls if c.name == "add_muscle"]
        self.joint_calls: list[Call] = [c for c in calls if c.name == "add_joint"]
        self.ranges: list[Call] = [
            c for c in calls if c.name == "range" and type(c.node.func) is ast.Name
        ]
        self.range_names = {
            sub.id
            for c in self.ranges
            for a in c.node.args
            for sub in ast.walk(a)
            if isinstance(sub, ast.Name)
        }
        self.mathfns: list[tuple[str | None, int, int, str]] = []
        for c in calls:
            f = c.node.func
            if (
                isinstance(f, ast.Attribute)
                and isinstance(f.value, ast.Name)
                and f.value.id == "math"
                and f.attr in MATH_SWAPS
            ):
                end = src.pos(f.end_lineno, f.end_col_offset)  # type: ignore[arg-type]
                self.mathfns.append((c.func, end - len(f.attr), end, f.attr))
        self.addops: list[tuple[str | None, int, str]] = [
            (o.func, o.at, SYMBOLS[type(o.node.op)])  # type: ignore[attr-defined]
            for o in sites.operators
            if type(o.node) is ast.BinOp
            and type(o.node.op) in (ast.Add, ast.Sub)
            and o.func is not None
            and o.at >= 0
        ]
        self.terms: list[tuple[str, int, list[str]]] = []
        phases: list[tuple[int, tuple[int, int]]] = []
        for st in sites.statements:
            node, func = st.node, st.func
            if func is None:
                continue
            if type(node) is ast.Assign:
                for tg in node.targets:
                    if type(tg) is ast.Name and "phase" in tg.id.lower():
                        phases.append((st.pre, src.span(node.value)))
            if (
                type(node) in (ast.Assign, ast.Return)
                and func != "make_walker"
                and type(node.value) in (ast.BinOp, ast.Call)  # type: ignore[attr-defined]
            ):
                self._term_site(func, node.value)  # type: ignore[attr-defined]
        for c in self.muscles:
            args = c.node.args
            if len(args) in (4, 5) and not is_number(args[-1]):
                phases.append((c.pre, src.span(args[-1])))
        phases.sort(key=lambda e: e[0])
        self.phase_exprs: list[tuple[int, int]] = [span for _, span in phases]
        self.top_names: list[str] = []
        self.ret_line: int | None = None
        self.ret_indent = ""
        self.creator = _CREATOR
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
                    and src.whole_lines(s)
                ):
                    self.ret_line = s.lineno
                    self.ret_indent = src.lines[s.lineno - 1][: s.col_offset]
                    if isinstance(s.value.func.value, ast.Name):
                        self.creator = s.value.func.value.id

    def _term_site(self, func: str, value: ast.expr) -> None:
        node = self.funcs[func]
        params = [a.arg for a in node.args.args if a.arg not in self.receivers]
        if (
            params
            and value.end_lineno == value.lineno
            and not any(isinstance(n, ast.Name) and n.id in self.receivers for n in ast.walk(value))
        ):
            self.terms.append((func, self.src.span(value)[1], params))


#: Joint expressions valid before ``make_walker``'s return, ``[(expr, joint index)]``,
#: and joint lists, ``[(name, [joint indices])]``.
Refs = tuple[list[tuple[str, int]], list[tuple[str, list[int]]]]


class Program:
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
        self._sites: WalkerSites | None = None
        self._refs: Refs | None = None

    @property
    def sites(self) -> WalkerSites:
        if self._sites is None:
            if self.tree is None:
                self.tree = ast.parse(self.text)
            self._sites = WalkerSites(self.text, self.tree)
        return self._sites

    def forget_joints(self) -> None:
        """Offer no joint expressions (the names captured may no longer match the text)."""
        self._refs = ([], [])

    @property
    def refs(self) -> Refs:
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
                        elif type(key) is str and key.isidentifier():
                            expr = f'{name}["{key}"]'  # joints by name
                        else:
                            continue
                        if j.index < n:
                            refs.append((expr, j.index))
            self._refs = (refs, lists)
        return self._refs


def build(
    text: str, depth: int, limits: WalkerLimits, runner: TrustedRunner
) -> tuple[Program | None, str]:
    """Run ``text``: ``(Program, "")`` for a valid walker, else ``(None, reason)``
    (``syntax`` or a reason of :func:`~jelm.domains.sodarace.corpus.run.execute`)."""
    try:
        code = runner.compile(text)
    except SyntaxError:
        return None, "syntax"
    walker, scope, reason = execute(code, limits, runner)
    if walker is None:
        return None, reason
    return Program(text, None, walker, scope, depth), ""
