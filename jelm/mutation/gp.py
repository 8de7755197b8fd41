"""Genetic-programming mutation of program text on the AST: ELM's non-LLM baseline.

ELM (Lehman et al., 2022, arXiv 2206.08896, §4.2) compares the diff model's mutations
against classic genetic-programming (GP) mutation of the same seed programs. This module is
that baseline: a child is made by parsing the parent with :mod:`ast`, applying one to
``max_edits`` small random edits to the tree, and unparsing it::

    from jelm.mutation.base import Parent
    from jelm.mutation.gp import GPOperator

    op = GPOperator()                                    # every edit kind, equal weights
    children = op.mutate([Parent(0, source)], np.random.default_rng(0))
    children[0].program, children[0].message, children[0].diff

Edit kinds (weights configurable; ``KINDS`` lists them):

* ``perturb_number``: one numeric literal anywhere (ints and floats, not bools; ``-3`` is
  one literal), except a bare subscript index (``top[0]``, ``legs[-2]``: moving it is
  nearly always an ``IndexError`` or another part, not another parameter). Floats get
  gaussian noise, multiplicative ``v * (1 + sigma * z)`` or additive ``v + sigma * z``
  with equal odds (always additive for ``0.0``), rounded to four significant digits; ints
  move by +-1 or +-2 and stay ints, and a non-negative int stays non-negative (so a range
  bound that was ``>= 0`` never turns negative).
* ``swap_operator``: one binary or augmented-assignment operator within its family
  (``+ <-> -``; ``*``, ``/``, ``//`` among themselves) or one comparison (``< <-> <=``,
  ``> <-> >=``). ``**``, ``%`` and bit operators are left alone.
* ``duplicate_statement``: a statement inside a function body (at any depth: loop, ``if``,
  ``with`` bodies too) is repeated right after itself. Never a ``return``, import, ``def``,
  ``class``, docstring, ``pass``, ``break``/``continue``, ``global``/``nonlocal``.
* ``delete_statement``: a statement inside a function body is removed, with the same
  exclusions except ``break``/``continue`` (so ``return``, imports and every ``def``,
  ``make_walker`` included, survive); a body left empty gets ``pass``.
* ``reorder_statements``: two adjacent, different statements of one statement list inside
  a function swap places; a ``return`` or docstring is never one of them (no swap crosses a return).
* ``change_loop_bound``: the start or stop argument of a ``range(...)`` that a ``for`` loop
  or a comprehension iterates over moves by +-1 (``N + 1`` becomes ``N + 2`` or ``N``, not
  ``N + 1 - 1``), or, with probability ``loop_scale_prob``, is doubled or halved (``* 2``,
  ``// 2``). The step argument is never touched (a zero step would always fail).

Statement edits (duplicate, delete, reorder) act only inside functions: on module-level
statements (the seeds' constants, imports and ``def``s) they either do nothing or break the
program. Edits are drawn one at a time, each on the tree the previous ones left;
a kind with no site in the current tree is dropped and another drawn; if no kind applies
to an unmutated parent the child has ``program=None`` and ``error="no mutation site"``.

Choices written down here:

* The child text is ``ast.unparse`` of the mutated tree (plus a final newline): it always
  parses, but comments and the parent's formatting are lost, so the diff of the first
  mutation of a hand-written seed also shows every comment disappearing. Unparsed text is a
  fixed point of parse/unparse, so from the second generation on the diffs show only the
  edits.
* ``message`` lists the edits in order, ``"perturb_number line 12: 10.0 -> 11.3; ..."``;
  line numbers are the parent's (a duplicated statement keeps its original's line).
* Randomness comes only from the ``rng`` passed to :meth:`GPOperator.mutate` (a NumPy
  ``Generator``); the same parents and the same generator state give the same children.
* Edits that cancel (a swap and its inverse on the same site) are not detected; they are
  rare and harmless.

Measured on this 2-core machine (``tests/test_gp.py`` prints both):

* Speed: 1,300-2,500 children/s per seed when the parent is cached (the loop draws parents
  from the archive again and again; ``cache_size`` parsed parents are kept, and a cached
  tree is edited in place, unparsed statement by statement and restored), about 600/s
  with no cache; ``python -m jelm.mutation.gp --bench`` measures it.
* Valid walkers (the real sandbox, 400 children per seed): with the defaults (1-3 edits)
  28-54 % per seed (radial 28, wheel 36, galloper 43, cppn_mutable 47, runner 49,
  cppn_fixed 51, square 54); with ``max_edits=1`` 50-76 %. Failures are the classic GP
  ones: ``IndexError`` from a loop bound moved past a list's end, ``ZeroDivisionError``
  from ``*`` swapped to ``/``, ``NameError``/``UnboundLocalError`` from deleted or
  reordered assignments, joints too close from a duplicated ``add_joint``, more than 10
  links on a joint from a duplicated ``add_muscle``. By kind alone (one edit):
  perturb_number 65-94 %, swap_operator 26-100 %, duplicate_statement 35-43 %,
  delete_statement 6-53 %, reorder_statements 28-77 %, change_loop_bound 23-99 %.
"""

from __future__ import annotations

import argparse
import ast
import collections
import copy
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jelm.mutation.base import Child, Parent, unified_diff

__all__ = ["DEFAULT_WEIGHTS", "KINDS", "GPOperator"]

#: Every edit kind, in a fixed order (the order weights are listed and drawn in).
KINDS: tuple[str, ...] = (
    "perturb_number",
    "swap_operator",
    "duplicate_statement",
    "delete_statement",
    "reorder_statements",
    "change_loop_bound",
)

#: Equal odds for every kind (ELM §4.2 does not give the GP baseline's mixture).
DEFAULT_WEIGHTS: dict[str, float] = dict.fromkeys(KINDS, 1.0)

NO_SITE = "no mutation site"

_OP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub,),
    ast.Sub: (ast.Add,),
    ast.Mult: (ast.Div, ast.FloorDiv),
    ast.Div: (ast.Mult, ast.FloorDiv),
    ast.FloorDiv: (ast.Mult, ast.Div),
}
_CMP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE,),
    ast.LtE: (ast.Lt,),
    ast.Gt: (ast.GtE,),
    ast.GtE: (ast.Gt,),
}
_OP_SYMBOL: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# statements never deleted or duplicated
_KEEP = (
    ast.Return,
    ast.Import,
    ast.ImportFrom,
    *_DEFS,
    ast.Pass,
    ast.Global,
    ast.Nonlocal,
)
_NO_DUPLICATE = (*_KEEP, ast.Break, ast.Continue)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def is_number(node: ast.AST) -> bool:
    """Whether ``node`` is a numeric literal, negative ones (``-0.5``) included."""
    if type(node) is ast.Constant:
        return type(node.value) in (int, float)
    return (
        type(node) is ast.UnaryOp
        and type(node.op) is ast.USub
        and type(node.operand) is ast.Constant
        and type(node.operand.value) in (int, float)
    )


def _number_value(node: ast.AST) -> int | float:
    if type(node) is ast.Constant:
        return node.value  # type: ignore[return-value]
    return -node.operand.value  # type: ignore[attr-defined,operator]


def _number_node(value: int | float, like: ast.AST) -> ast.expr:
    """A literal for ``value``; negatives as ``-x`` so unparse parenthesises them right."""
    if value == 0:
        value = type(value)(0)  # no -0.0
    node: ast.expr
    if value < 0:
        node = ast.UnaryOp(op=ast.USub(), operand=ast.Constant(value=-value))
    else:
        node = ast.Constant(value=value)
    return ast.copy_location(node, like)


def _is_docstring(body: list[ast.stmt], i: int) -> bool:
    s = body[i]
    return (
        i == 0
        and type(s) is ast.Expr
        and type(s.value) is ast.Constant
        and isinstance(s.value.value, str)
    )


def _line(node: ast.AST) -> str:
    return str(getattr(node, "lineno", "?"))


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node).split("\n", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Sites:
    """Every mutation site of a tree, found in one traversal.

    Each site carries ``top``, the index of the module-level statement it lies in (so the
    operator knows which statements to unparse again). ``numbers``: ``(holder, field,
    index or None, top)`` slots holding a numeric literal. ``ops``: ``(node, index or None,
    top)``: a BinOp/AugAssign, or one op of a Compare. ``bodies``: ``(statement list, top)``
    inside functions. ``ranges``: ``(call, top)`` for the ``range(...)`` calls that a for
    loop or comprehension iterates over.
    """

    __slots__ = ("bodies", "numbers", "ops", "ranges")

    def __init__(self, stmts: Sequence[tuple[int, ast.stmt]]) -> None:
        """Index the module-level statements ``stmts``, given as ``(top, statement)``."""
        numbers: list[tuple[ast.AST, str, int | None, int]] = []
        ops: list[tuple[ast.AST, int | None, int]] = []
        bodies: list[tuple[list[ast.stmt], int]] = []
        ranges: list[tuple[ast.Call, int]] = []
        stack: list[tuple[ast.AST, bool, int]] = [(s, False, top) for top, s in stmts]
        pop, push = stack.pop, stack.append
        while stack:
            node, in_func, top = pop()
            t = type(node)
            if t is ast.BinOp or t is ast.AugAssign:
                if type(node.op) in _OP_SWAPS:  # type: ignore[attr-defined]
                    ops.append((node, None, top))
            elif t is ast.Compare:
                for i, op in enumerate(node.ops):  # type: ignore[attr-defined]
                    if type(op) in _CMP_SWAPS:
                        ops.append((node, i, top))
            elif t is ast.For or t is ast.AsyncFor or t is ast.comprehension:
                it = node.iter  # type: ignore[attr-defined]
                if (
                    type(it) is ast.Call
                    and type(it.func) is ast.Name
                    and it.func.id == "range"
                    and 1 <= len(it.args) <= 3
                    and not it.keywords
                    and not any(type(a) is ast.Starred for a in it.args)
                ):
                    ranges.append((it, top))
            inner = in_func or t in _FUNCS
            for field in node._fields:
                value = getattr(node, field, None)
                if type(value) is list:
                    if not value:
                        continue
                    if inner and isinstance(value[0], ast.stmt):
                        bodies.append((value, top))
                    for i, v in enumerate(value):
                        if isinstance(v, ast.AST):
                            if is_number(v):
                                numbers.append((node, field, i, top))
                            else:
                                push((v, inner, top))
                elif isinstance(value, ast.AST):
                    if is_number(value):
                        if t is not ast.Subscript:  # an index, not a parameter
                            numbers.append((node, field, None, top))
                    elif not isinstance(value, (ast.expr_context, ast.operator, ast.cmpop)):
                        push((value, inner, top))
        self.numbers = numbers
        self.ops = ops
        self.bodies = bodies
        self.ranges = ranges

    @classmethod
    def concat(cls, parts: Sequence[_Sites]) -> _Sites:
        """The sites of several statements, in the order given."""
        out = cls.__new__(cls)
        out.numbers = [x for p in parts for x in p.numbers]
        out.ops = [x for p in parts for x in p.ops]
        out.bodies = [x for p in parts for x in p.bodies]
        out.ranges = [x for p in parts for x in p.ranges]
        return out


class _Tx:
    """The edits of one child: an undo log (the parsed parent is cached and edited in place,
    then restored) and the module-level statements that changed."""

    __slots__ = ("dirty", "undo")

    def __init__(self) -> None:
        self.undo: list[Callable[[], object]] = []
        self.dirty: set[int] = set()

    def set_attr(self, obj: ast.AST, name: str, value: object) -> None:
        old = getattr(obj, name)
        self.undo.append(lambda: setattr(obj, name, old))
        setattr(obj, name, value)

    def touch_list(self, lst: list) -> None:
        """Call before changing ``lst`` in place."""
        saved = lst[:]
        self.undo.append(lambda: lst.__setitem__(slice(None), saved))

    def rollback(self) -> None:
        for f in reversed(self.undo):
            f()
        self.undo.clear()


def _replace(tx: _Tx, holder: ast.AST, field: str, index: int | None, node: ast.AST) -> None:
    if index is None:
        tx.set_attr(holder, field, node)
    else:
        lst = getattr(holder, field)
        tx.touch_list(lst)
        lst[index] = node


def _get(holder: ast.AST, field: str, index: int | None) -> ast.AST:
    value = getattr(holder, field)
    return value if index is None else value[index]


# --------------------------------------------------------------------------- edits
#
# Each edit takes the sites of the current tree, the rng, the operator (its settings) and
# the transaction; it changes the tree only through the transaction (so it can be undone),
# marks the module-level statement it touched, and returns a one-line description, or None
# when the tree has no site for it (then nothing was changed).

_Edit = Callable[[_Sites, np.random.Generator, "GPOperator", _Tx], "str | None"]


def _perturb_number(sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: _Tx) -> str | None:
    if not sites.numbers:
        return None
    holder, field, index, top = sites.numbers[int(rng.integers(len(sites.numbers)))]
    node = _get(holder, field, index)
    old = _number_value(node)
    new: int | float
    if type(old) is int:
        delta = int(rng.choice((-2, -1, 1, 2)))
        new = old + delta
        if old >= 0 and new < 0:
            new = old - delta
    else:
        new = old
        for _ in range(8):
            z = float(rng.standard_normal())
            raw = old + op.sigma * z if old == 0 or rng.random() < 0.5 else old * (1 + op.sigma * z)
            new = float(f"{raw:.4g}")
            if new != old:
                break
        if new == old:
            new = float(f"{old + op.sigma:.4g}")
    _replace(tx, holder, field, index, _number_node(new, node))
    tx.dirty.add(top)
    return f"perturb_number line {_line(node)}: {old!r} -> {new!r}"


def _swap_operator(sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: _Tx) -> str | None:
    if not sites.ops:
        return None
    node, i, top = sites.ops[int(rng.integers(len(sites.ops)))]
    if i is None:
        old_t = type(node.op)  # type: ignore[attr-defined]
        choices = _OP_SWAPS[old_t]
        new_t = choices[int(rng.integers(len(choices)))] if len(choices) > 1 else choices[0]
        tx.set_attr(node, "op", new_t())
    else:
        old_t = type(node.ops[i])  # type: ignore[attr-defined]
        new_t = _CMP_SWAPS[old_t][0]
        tx.touch_list(node.ops)  # type: ignore[attr-defined]
        node.ops[i] = new_t()  # type: ignore[attr-defined]
    tx.dirty.add(top)
    return f"swap_operator line {_line(node)}: {_OP_SYMBOL[old_t]} -> {_OP_SYMBOL[new_t]}"


def _statement_sites(
    sites: _Sites, exclude: tuple[type, ...]
) -> list[tuple[list[ast.stmt], int, int]]:
    return [
        (body, i, top)
        for body, top in sites.bodies
        for i, s in enumerate(body)
        if not isinstance(s, exclude) and not _is_docstring(body, i)
    ]


def _duplicate_statement(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: _Tx
) -> str | None:
    cands = _statement_sites(sites, _NO_DUPLICATE)
    if not cands:
        return None
    body, i, top = cands[int(rng.integers(len(cands)))]
    stmt = body[i]
    tx.touch_list(body)
    body.insert(i + 1, copy.deepcopy(stmt))
    tx.dirty.add(top)
    return f"duplicate_statement line {_line(stmt)}: {_short(stmt)}"


def _delete_statement(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: _Tx
) -> str | None:
    cands = _statement_sites(sites, _KEEP)
    if not cands:
        return None
    body, i, top = cands[int(rng.integers(len(cands)))]
    tx.touch_list(body)
    stmt = body.pop(i)
    if not body:
        body.append(ast.copy_location(ast.Pass(), stmt))
    tx.dirty.add(top)
    return f"delete_statement line {_line(stmt)}: {_short(stmt)}"


def _reorder_statements(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: _Tx
) -> str | None:
    cands = [
        (body, i, top)
        for body, top in sites.bodies
        for i in range(len(body) - 1)
        if type(body[i]) is not ast.Return
        and type(body[i + 1]) is not ast.Return
        and not _is_docstring(body, i)
    ]
    if not cands:
        return None
    for k in rng.permutation(len(cands)):
        body, i, top = cands[int(k)]
        a, b = body[i], body[i + 1]
        if ast.dump(a) != ast.dump(b):
            tx.touch_list(body)
            body[i], body[i + 1] = b, a
            tx.dirty.add(top)
            return f"reorder_statements line {_line(a)}: swapped with line {_line(b)}"
    return None


def _shift(arg: ast.expr, delta: int) -> ast.expr:
    """``arg + delta`` written simply: literals and ``x +- k`` absorb the delta."""
    if is_number(arg) and type(_number_value(arg)) is int:
        return _number_node(_number_value(arg) + delta, arg)
    if (
        type(arg) is ast.BinOp
        and type(arg.op) in (ast.Add, ast.Sub)
        and type(arg.right) is ast.Constant
        and type(arg.right.value) is int
    ):
        offset = (arg.right.value if type(arg.op) is ast.Add else -arg.right.value) + delta
        if offset == 0:
            return arg.left
        new_op = ast.Add() if offset > 0 else ast.Sub()
        return ast.copy_location(
            ast.BinOp(left=arg.left, op=new_op, right=ast.Constant(value=abs(offset))), arg
        )
    new_op = ast.Add() if delta > 0 else ast.Sub()
    return ast.copy_location(
        ast.BinOp(left=arg, op=new_op, right=ast.Constant(value=abs(delta))), arg
    )


def _scale(arg: ast.expr, double: bool) -> ast.expr | None:
    """``arg * 2`` or ``arg // 2``; None when a literal would not change."""
    if is_number(arg) and type(_number_value(arg)) is int:
        v = int(_number_value(arg))
        new = v * 2 if double else v // 2
        return None if new == v else _number_node(new, arg)
    new_op = ast.Mult() if double else ast.FloorDiv()
    return ast.copy_location(ast.BinOp(left=arg, op=new_op, right=ast.Constant(value=2)), arg)


def _change_loop_bound(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: _Tx
) -> str | None:
    if not sites.ranges:
        return None
    call, top = sites.ranges[int(rng.integers(len(sites.ranges)))]
    before = _short(call)
    n_bounds = min(len(call.args), 2)  # start/stop; never the step
    j = int(rng.integers(n_bounds))
    arg = call.args[j]
    new: ast.expr | None = None
    if rng.random() < op.loop_scale_prob:
        new = _scale(arg, bool(rng.random() < 0.5))
    if new is None:
        new = _shift(arg, 1 if rng.random() < 0.5 else -1)
    tx.touch_list(call.args)
    call.args[j] = new
    tx.dirty.add(top)
    return f"change_loop_bound line {_line(call)}: {before} -> {_short(call)}"


_EDITS: dict[str, _Edit] = {
    "perturb_number": _perturb_number,
    "swap_operator": _swap_operator,
    "duplicate_statement": _duplicate_statement,
    "delete_statement": _delete_statement,
    "reorder_statements": _reorder_statements,
    "change_loop_bound": _change_loop_bound,
}


# --------------------------------------------------------------------------- operator


def _unparse_part(stmt: ast.stmt, i: int) -> str:
    """Module-level statement ``i`` as ``ast.unparse`` of the whole module writes it, so
    that ``"".join`` of the parts equals ``ast.unparse(module)`` (a test checks this)."""
    if i == 0:  # a docstring is written specially, and only as the first statement
        return ast.unparse(ast.Module(body=[stmt], type_ignores=[]))
    sep = "\n\n" if isinstance(stmt, _DEFS) else "\n"  # unparse puts a blank line before defs
    return sep + ast.unparse(stmt)


class _Prepared:
    """A parsed parent: its tree (edited in place, then restored), the sites of each
    module-level statement and of all of them, and each statement unparsed."""

    __slots__ = ("parts", "sites", "sites_by_top", "tree")

    def __init__(self, program: str) -> None:
        self.tree = ast.parse(program)
        self.sites_by_top = [_Sites([(i, s)]) for i, s in enumerate(self.tree.body)]
        self.sites = _Sites.concat(self.sites_by_top)
        self.parts = [_unparse_part(s, i) for i, s in enumerate(self.tree.body)]

    def sites_after(self, dirty: set[int]) -> _Sites:
        """The sites of the edited tree: statements not in ``dirty`` are unchanged, so only
        the dirty ones are indexed again."""
        body = self.tree.body
        return _Sites.concat(
            [_Sites([(i, body[i])]) if i in dirty else p for i, p in enumerate(self.sites_by_top)]
        )


@dataclasses.dataclass(frozen=True, eq=False)
class GPOperator:
    """GP mutation of program text (ELM §4.2's baseline); one child per parent.

    Attributes:
        name: the operator name recorded on every child (``Child.operator``).
        weights: relative odds of each edit kind (a subset of ``KINDS``; kinds left out get
            weight 0); ``None`` = ``DEFAULT_WEIGHTS``. Unknown kinds, negative or
            non-finite weights, or no positive weight raise ``ValueError``.
        sigma: scale of the gaussian noise on float literals.
        max_edits: each child gets between 1 and ``max_edits`` edits (uniformly drawn).
        loop_scale_prob: odds that ``change_loop_bound`` doubles or halves a bound instead
            of moving it by one.
        file_name: the program's file name in the children's diffs.
        cache_size: parsed parents kept (least recently used dropped); a parent drawn again
            from the archive is then not parsed, indexed and unparsed again.

    ``mutate`` is serialised by a lock (the cached trees are edited in place and restored).
    """

    name: str = "gp"
    _: dataclasses.KW_ONLY
    file_name: str = "program.py"
    weights: Mapping[str, float] | None = None
    sigma: float = 0.2
    max_edits: int = 3
    loop_scale_prob: float = 0.2
    cache_size: int = 256

    def __post_init__(self) -> None:
        weights = dict(DEFAULT_WEIGHTS if self.weights is None else self.weights)
        unknown = sorted(set(weights) - set(KINDS))
        if unknown:
            raise ValueError(
                f"unknown GP edit kind(s) {', '.join(map(repr, unknown))}; "
                f"valid kinds: {', '.join(KINDS)}"
            )
        for kind, w in weights.items():
            if isinstance(w, bool) or not (
                isinstance(w, (int, float)) and math.isfinite(w) and w >= 0
            ):
                raise ValueError(f"GP weight of {kind!r} must be a finite number >= 0, got {w!r}")
        if not any(w > 0 for w in weights.values()):
            raise ValueError(
                f"GP weights need at least one positive weight, got {weights}; "
                f"valid kinds: {', '.join(KINDS)}"
            )
        if isinstance(self.max_edits, bool) or not (
            isinstance(self.max_edits, int) and self.max_edits >= 1
        ):
            raise ValueError(f"max_edits must be an int >= 1, got {self.max_edits!r}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {self.sigma!r}")
        if not 0 <= self.loop_scale_prob <= 1:
            raise ValueError(f"loop_scale_prob must be in [0, 1], got {self.loop_scale_prob!r}")
        if self.cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {self.cache_size!r}")
        full = {k: float(weights.get(k, 0.0)) for k in KINDS}
        object.__setattr__(self, "weights", full)
        object.__setattr__(self, "_kinds", [k for k in KINDS if full[k] > 0])
        object.__setattr__(self, "_odds", [full[k] for k in KINDS if full[k] > 0])
        object.__setattr__(self, "_cache", collections.OrderedDict())
        object.__setattr__(self, "_lock", threading.Lock())

    def mutate(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[Child]:
        """One child per parent, in order."""
        with self._lock:  # type: ignore[attr-defined]
            return [self._mutate_one(p, rng) for p in parents]

    def _prepared(self, program: str) -> _Prepared:
        cache: collections.OrderedDict[str, _Prepared] = self._cache  # type: ignore[attr-defined]
        prep = cache.get(program)
        if prep is not None:
            cache.move_to_end(program)
            return prep
        prep = _Prepared(program)
        if self.cache_size:
            cache[program] = prep
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        return prep

    def _mutate_one(self, parent: Parent, rng: np.random.Generator) -> Child:
        ids = (parent.id,)
        try:
            prep = self._prepared(parent.program)
        except (SyntaxError, ValueError) as exc:
            return Child(ids, self.name, None, error=f"parent does not parse: {exc}")
        n_edits = int(rng.integers(1, self.max_edits + 1))
        notes: list[str] = []
        tx = _Tx()
        try:
            for k in range(n_edits):
                note = self._edit(prep.sites if k == 0 else prep.sites_after(tx.dirty), rng, tx)
                if note is None:
                    break
                notes.append(note)
            if not notes:
                return Child(ids, self.name, None, error=NO_SITE)
            body = prep.tree.body
            program = (
                "".join(
                    _unparse_part(body[i], i) if i in tx.dirty else part
                    for i, part in enumerate(prep.parts)
                )
                + "\n"
            )
        finally:
            tx.rollback()
        return Child(
            ids,
            self.name,
            program,
            message="; ".join(notes),
            diff=unified_diff(parent.program, program, self.file_name),
        )

    def _edit(self, sites: _Sites, rng: np.random.Generator, tx: _Tx) -> str | None:
        """Draw a kind by weight and apply it; a kind without a site is dropped and another
        drawn. None when no kind applies."""
        kinds: list[str] = list(self._kinds)  # type: ignore[attr-defined]
        odds: list[float] = list(self._odds)  # type: ignore[attr-defined]
        while kinds:
            u = rng.random() * sum(odds)
            k, acc = 0, odds[0]
            while u >= acc and k < len(kinds) - 1:
                k += 1
                acc += odds[k]
            note = _EDITS[kinds[k]](sites, rng, self, tx)
            if note is not None:
                return note
            del kinds[k], odds[k]
        return None


@dataclasses.dataclass(frozen=True)
class GPOptions:
    """The ``gp`` section of a run configuration (the meaning of each field is
    :class:`GPOperator`'s)."""

    weights: dict[str, float] | None = None
    sigma: float = 0.2
    max_edits: int = 2
    loop_scale_prob: float = 0.2
    cache_size: int = 256

    def problems(self) -> list[str]:
        """What is wrong with these options (empty when they can run)."""
        try:
            GPOperator(**dataclasses.asdict(self))
        except (TypeError, ValueError) as exc:
            return [str(exc)]
        return []


def make_gp(domain: Any, options: GPOptions) -> GPOperator:
    """The ``gp`` operator for ``domain`` (the registry's factory)."""
    return GPOperator(**dataclasses.asdict(options), file_name=domain.program.file_name)


# --------------------------------------------------------------------------- CLI


def _bench(op: GPOperator, seconds: float = 2.0) -> dict[str, float]:
    from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source

    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for name in SEED_NAMES:
        parents = [Parent(0, seed_source(name))] * 50
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(SEED_NAMES):
            n += len(op.mutate(parents, rng))
        out[name] = n / (time.perf_counter() - t0)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m jelm.mutation.gp [seed] [-n N] [--seed S] [--bench]``: print GP children
    of a seed program (message and diff), or measure children per second on every seed."""
    from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source

    p = argparse.ArgumentParser(prog="python -m jelm.mutation.gp", description=main.__doc__)
    p.add_argument("seed_name", nargs="?", default="radial", choices=SEED_NAMES)
    p.add_argument("-n", type=int, default=3, help="children to print")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--max-edits", type=int, default=3)
    p.add_argument("--bench", action="store_true", help="measure children/s per seed")
    args = p.parse_args(argv)
    op = GPOperator(max_edits=args.max_edits)
    if args.bench:
        rates = _bench(op)
        for name, rate in rates.items():
            print(f"{name:14s} {rate:8.0f} children/s")
        return
    # mutate the canonical (unparsed) seed so the diffs show only the edits
    source = ast.unparse(ast.parse(seed_source(args.seed_name))) + "\n"
    rng = np.random.default_rng(args.seed)
    for k, child in enumerate(op.mutate([Parent(0, source)] * args.n, rng)):
        print(f"=== child {k}: {child.message or child.error}")
        print(child.diff)


if __name__ == "__main__":
    main()
