"""Edits on a program's AST, undone after use, and the tree unparsed statement by
statement: how GP mutation (ELM arXiv 2206.08896v1, §3.1) makes a child. A
:class:`ParsedProgram` is parsed, indexed and unparsed once; a :class:`Transaction`
records each change, so the tree is restored after each child and only the module-level
statements it touched are indexed and unparsed again.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from jelm.programs.edits.literals import is_number, number_node, number_value

__all__ = [
    "ParsedProgram",
    "Transaction",
    "is_docstring",
    "scale_expr",
    "shift_expr",
    "slot",
    "unparse_statement",
]

S = TypeVar("S")

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def slot(holder: ast.AST, field: str, index: int | None) -> ast.AST:
    """The node at ``holder.field`` (``index`` None) or ``holder.field[index]``."""
    value = getattr(holder, field)
    return value if index is None else value[index]


def is_docstring(body: Sequence[ast.stmt], i: int) -> bool:
    """Whether ``body[i]`` is the docstring of its block (a string as first statement)."""
    s = body[i]
    return (
        i == 0
        and type(s) is ast.Expr
        and type(s.value) is ast.Constant
        and isinstance(s.value.value, str)
    )


class Transaction:
    """The changes made to a tree: an undo log and the module-level statements touched
    (``dirty``, by index). Change the tree only through it, then :meth:`rollback`."""

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

    def replace(self, holder: ast.AST, field: str, index: int | None, node: ast.AST) -> None:
        """Put ``node`` at ``holder.field`` (``index`` None) or ``holder.field[index]``."""
        if index is None:
            self.set_attr(holder, field, node)
        else:
            lst = getattr(holder, field)
            self.touch_list(lst)
            lst[index] = node

    def rollback(self) -> None:
        for f in reversed(self.undo):
            f()
        self.undo.clear()


def shift_expr(arg: ast.expr, delta: int) -> ast.expr:
    """``arg + delta`` written simply: an int literal and ``x +- k`` absorb the delta
    (``N + 1`` shifted by -1 is ``N``)."""
    if is_number(arg) and type(number_value(arg)) is int:
        return number_node(number_value(arg) + delta, arg)
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


def scale_expr(arg: ast.expr, double: bool) -> ast.expr | None:
    """``arg * 2`` or ``arg // 2`` (an int literal is computed); None when a literal would
    not change."""
    if is_number(arg) and type(number_value(arg)) is int:
        v = int(number_value(arg))
        new = v * 2 if double else v // 2
        return None if new == v else number_node(new, arg)
    new_op = ast.Mult() if double else ast.FloorDiv()
    return ast.copy_location(ast.BinOp(left=arg, op=new_op, right=ast.Constant(value=2)), arg)


def unparse_statement(stmt: ast.stmt, i: int) -> str:
    """Module-level statement ``i`` as ``ast.unparse`` of the whole module writes it, so
    that ``"".join`` of the parts equals ``ast.unparse(module)``."""
    if i == 0:  # a docstring is written specially, and only as the first statement
        return ast.unparse(ast.Module(body=[stmt], type_ignores=[]))
    sep = "\n\n" if isinstance(stmt, _DEFS) else "\n"  # unparse puts a blank line before defs
    return sep + ast.unparse(stmt)


class ParsedProgram(Generic[S]):
    """A parsed program: its tree (edit it through a :class:`Transaction`, then roll back),
    the sites of each module-level statement (``index(i, statement)``, any type), of all
    of them (``join`` of those, in order), and each statement unparsed.

    Raises what ``ast.parse`` raises (``SyntaxError``, ``ValueError``)."""

    __slots__ = ("_index", "_join", "by_statement", "parts", "sites", "tree")

    def __init__(
        self,
        program: str,
        index: Callable[[int, ast.stmt], S],
        join: Callable[[Sequence[S]], S],
    ) -> None:
        self.tree = ast.parse(program)
        self._index, self._join = index, join
        self.by_statement = [index(i, s) for i, s in enumerate(self.tree.body)]
        self.sites = join(self.by_statement)
        self.parts = [unparse_statement(s, i) for i, s in enumerate(self.tree.body)]

    def sites_after(self, dirty: set[int]) -> S:
        """The sites of the edited tree: statements not in ``dirty`` are unchanged, so only
        the dirty ones are indexed again."""
        body = self.tree.body
        return self._join(
            [self._index(i, body[i]) if i in dirty else s for i, s in enumerate(self.by_statement)]
        )

    def unparse(self, dirty: set[int]) -> str:
        """The edited tree's text (``ast.unparse`` and a final newline): only the statements
        in ``dirty`` are unparsed again."""
        body = self.tree.body
        return (
            "".join(
                unparse_statement(body[i], i) if i in dirty else part
                for i, part in enumerate(self.parts)
            )
            + "\n"
        )
