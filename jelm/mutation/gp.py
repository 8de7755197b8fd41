"""Genetic-programming mutation of program text on the AST: jelm's non-LM baseline.

ELM (Lehman et al., 2022, arXiv 2206.08896v1, §3.1) measures its diff model against
classic GP mutation; jelm offers GP as a baseline operator on any domain's programs. A
child is the parent parsed, given one to ``max_edits`` random edits of the kinds in
``KINDS`` on its tree (:mod:`jelm.programs.edits`), and unparsed::

    op = GPOperator()                                    # every edit kind, equal weights
    children = op.mutate([Parent(0, source)], np.random.default_rng(0))
    children[0].program, children[0].message, children[0].diff

The edit kinds, the choices behind them, speed and valid-child rates:
``jelm/mutation/README.md``.
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
from jelm.programs.edits import (
    SYMBOLS,
    Block,
    Number,
    Operator,
    ParsedProgram,
    RangeLoop,
    Sites,
    Transaction,
    is_docstring,
    number_node,
    number_value,
    scale_expr,
    shift_expr,
)

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

#: Equal odds for every kind (the paper does not give its GP baseline's mixture).
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
# statements never deleted or duplicated
_KEEP = (
    ast.Return,
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Pass,
    ast.Global,
    ast.Nonlocal,
)
_NO_DUPLICATE = (*_KEEP, ast.Break, ast.Continue)


def _line(node: ast.AST) -> str:
    return str(getattr(node, "lineno", "?"))


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node).split("\n", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _outside_in(site: Number | Operator | Block | RangeLoop) -> int:
    """Sort key: the node holding a site before the nodes inside it, later siblings first."""
    return -site.rank


def _swappable(op: Operator) -> bool:
    if op.index is None:
        return type(op.node.op) in _OP_SWAPS  # type: ignore[attr-defined]
    return type(op.node.ops[op.index]) in _CMP_SWAPS  # type: ignore[attr-defined]


def _editable_bounds(loop: RangeLoop) -> bool:
    call = loop.call
    return (
        1 <= len(call.args) <= 3
        and not call.keywords
        and not any(type(a) is ast.Starred for a in call.args)
    )


class _Sites:
    """The sites GP edits (of the engine's :class:`~jelm.programs.edits.Sites`), each kind
    in drawing order (see the module docstring): ``numbers`` (literals other than a bare
    subscript index), ``ops`` (swappable operators), ``bodies`` (statement lists inside
    functions) and ``ranges`` (``range`` loops whose start and stop GP may move)."""

    __slots__ = ("bodies", "numbers", "ops", "ranges")

    numbers: list[Number]
    ops: list[Operator]
    bodies: list[Block]
    ranges: list[RangeLoop]

    @classmethod
    def of(cls, top: int, stmt: ast.stmt) -> _Sites:
        """The sites of module-level statement ``top``."""
        s = Sites([(top, stmt)])
        out = cls.__new__(cls)
        out.numbers = sorted(
            (n for n in s.numbers if type(n.holder) is not ast.Subscript), key=_outside_in
        )
        out.ops = sorted(filter(_swappable, s.operators), key=_outside_in)
        out.bodies = sorted((b for b in s.blocks if b.in_def), key=_outside_in)
        out.ranges = sorted(filter(_editable_bounds, s.loops), key=_outside_in)
        return out

    @classmethod
    def join(cls, parts: Sequence[_Sites]) -> _Sites:
        """The sites of several statements, in the order given."""
        out = cls.__new__(cls)
        out.numbers = [x for p in parts for x in p.numbers]
        out.ops = [x for p in parts for x in p.ops]
        out.bodies = [x for p in parts for x in p.bodies]
        out.ranges = [x for p in parts for x in p.ranges]
        return out


# --------------------------------------------------------------------------- edits
#
# Each edit takes the sites of the current tree, the rng, the operator (its settings) and
# the transaction; it changes the tree only through the transaction (so it can be undone),
# marks the module-level statement it touched, and returns a one-line description, or None
# when the tree has no site for it (then nothing was changed).

_Edit = Callable[[_Sites, np.random.Generator, "GPOperator", Transaction], "str | None"]


def _perturb_number(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: Transaction
) -> str | None:
    """One numeric literal, not a bare subscript index (``top[0]``): a float gets gaussian
    noise, ``v * (1 + sigma * z)`` or ``v + sigma * z`` (always additive for 0.0), rounded
    to four significant digits; an int moves by +-1 or +-2 and a non-negative one stays
    non-negative."""
    if not sites.numbers:
        return None
    n = sites.numbers[int(rng.integers(len(sites.numbers)))]
    node = n.node
    old = number_value(node)
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
    tx.replace(n.holder, n.field, n.index, number_node(new, node))
    tx.dirty.add(n.top)
    return f"perturb_number line {_line(node)}: {old!r} -> {new!r}"


def _swap_operator(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: Transaction
) -> str | None:
    """One binary or augmented operator within its family (``+``/``-``; ``*``, ``/``,
    ``//``) or one comparison (``<``/``<=``, ``>``/``>=``)."""
    if not sites.ops:
        return None
    site = sites.ops[int(rng.integers(len(sites.ops)))]
    node, i = site.node, site.index
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
    tx.dirty.add(site.top)
    return f"swap_operator line {_line(node)}: {SYMBOLS[old_t]} -> {SYMBOLS[new_t]}"


def _statement_sites(
    sites: _Sites, exclude: tuple[type, ...]
) -> list[tuple[list[ast.stmt], int, int]]:
    return [
        (b.body, i, b.top)
        for b in sites.bodies
        for i, s in enumerate(b.body)
        if not isinstance(s, exclude) and not is_docstring(b.body, i)
    ]


def _duplicate_statement(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: Transaction
) -> str | None:
    """A statement in a function body (at any depth) repeated right after itself; never a
    return, import, def, class, docstring, pass, break/continue, global/nonlocal."""
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
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: Transaction
) -> str | None:
    """A statement in a function body removed (the exclusions of a duplicate, except
    break/continue); a body left empty gets ``pass``."""
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
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: Transaction
) -> str | None:
    """Two adjacent, different statements of one function-body list swapped; neither is a
    return or a docstring."""
    cands = [
        (b.body, i, b.top)
        for b in sites.bodies
        for i in range(len(b.body) - 1)
        if type(b.body[i]) is not ast.Return
        and type(b.body[i + 1]) is not ast.Return
        and not is_docstring(b.body, i)
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


def _change_loop_bound(
    sites: _Sites, rng: np.random.Generator, op: GPOperator, tx: Transaction
) -> str | None:
    """The start or stop of a ``range(...)`` a loop or comprehension iterates over: +-1
    (``N + 1`` becomes ``N + 2`` or ``N``), or with ``loop_scale_prob`` doubled or halved;
    never the step."""
    if not sites.ranges:
        return None
    loop = sites.ranges[int(rng.integers(len(sites.ranges)))]
    call = loop.call
    before = _short(call)
    n_bounds = min(len(call.args), 2)  # start/stop; never the step
    j = int(rng.integers(n_bounds))
    arg = call.args[j]
    new: ast.expr | None = None
    if rng.random() < op.loop_scale_prob:
        new = scale_expr(arg, bool(rng.random() < 0.5))
    if new is None:
        new = shift_expr(arg, 1 if rng.random() < 0.5 else -1)
    tx.touch_list(call.args)
    call.args[j] = new
    tx.dirty.add(loop.top)
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


@dataclasses.dataclass(frozen=True, eq=False)
class GPOperator:
    """GP mutation of program text (jelm's non-LM baseline); one child per parent.

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
    max_edits: int = 2
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

    def _parsed(self, program: str) -> ParsedProgram[_Sites]:
        cache: collections.OrderedDict[str, ParsedProgram[_Sites]] = self._cache  # type: ignore[attr-defined]
        parsed = cache.get(program)
        if parsed is not None:
            cache.move_to_end(program)
            return parsed
        parsed = ParsedProgram(program, _Sites.of, _Sites.join)
        if self.cache_size:
            cache[program] = parsed
            while len(cache) > self.cache_size:
                cache.popitem(last=False)
        return parsed

    def _mutate_one(self, parent: Parent, rng: np.random.Generator) -> Child:
        ids = (parent.id,)
        try:
            parsed = self._parsed(parent.program)
        except (SyntaxError, ValueError) as exc:
            return Child(ids, self.name, None, error=f"parent does not parse: {exc}")
        n_edits = int(rng.integers(1, self.max_edits + 1))
        notes: list[str] = []
        tx = Transaction()
        try:
            for k in range(n_edits):
                sites = parsed.sites if k == 0 else parsed.sites_after(tx.dirty)
                note = self._edit(sites, rng, tx)
                if note is None:
                    break
                notes.append(note)
            if not notes:
                return Child(ids, self.name, None, error=NO_SITE)
            program = parsed.unparse(tx.dirty)
        finally:
            tx.rollback()
        return Child(
            ids,
            self.name,
            program,
            message="; ".join(notes),
            diff=unified_diff(parent.program, program, self.file_name),
        )

    def _edit(self, sites: _Sites, rng: np.random.Generator, tx: Transaction) -> str | None:
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
    """The ``gp`` section of a run configuration (the meaning and default of each field
    are :class:`GPOperator`'s)."""

    weights: dict[str, float] | None = None
    sigma: float = GPOperator.sigma
    max_edits: int = GPOperator.max_edits
    loop_scale_prob: float = GPOperator.loop_scale_prob
    cache_size: int = GPOperator.cache_size

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


def _bench(op: GPOperator, seeds: Mapping[str, str], seconds: float = 2.0) -> dict[str, float]:
    """Children per second on each seed program (``name -> source``)."""
    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for name, source in seeds.items():
        parents = [Parent(0, source)] * 50
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(seeds):
            n += len(op.mutate(parents, rng))
        out[name] = n / (time.perf_counter() - t0)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m jelm.mutation.gp [seed] [--domain D] [-n N] [--seed S] [--bench]``: print
    GP children of a domain's seed program (message and diff), or measure children per
    second on every seed."""
    from jelm.domains import make_domain

    p = argparse.ArgumentParser(prog="python -m jelm.mutation.gp", description=main.__doc__)
    p.add_argument("seed_name", nargs="?", default=None, help="a seed (default: the first)")
    p.add_argument("--domain", default="sodarace", help="a registered domain")
    p.add_argument("-n", type=int, default=3, help="children to print")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--max-edits", type=int, default=3)
    p.add_argument("--bench", action="store_true", help="measure children/s per seed")
    args = p.parse_args(argv)
    domain = make_domain(args.domain)
    names = domain.seed_names()
    op = GPOperator(max_edits=args.max_edits, file_name=domain.program.file_name)
    if args.bench:
        rates = _bench(op, {name: domain.seed_program(name) for name in names})
        for name, rate in rates.items():
            print(f"{name:14s} {rate:8.0f} children/s")
        return
    seed_name = names[0] if args.seed_name is None else args.seed_name
    if seed_name not in names:
        p.error(f"unknown seed {seed_name!r} of {args.domain}; choose one of {', '.join(names)}")
    # mutate the canonical (unparsed) seed so the diffs show only the edits
    source = ast.unparse(ast.parse(domain.seed_program(seed_name))) + "\n"
    rng = np.random.default_rng(args.seed)
    for k, child in enumerate(op.mutate([Parent(0, source)] * args.n, rng)):
        print(f"=== child {k}: {child.message or child.error}")
        print(child.diff)


if __name__ == "__main__":
    main()
