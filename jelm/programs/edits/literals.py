"""Numeric literals in a program's AST (ELM arXiv 2206.08896v1, §3.1): recognising,
reading and writing them. A literal is an ``int`` or ``float`` constant (not a ``bool``);
``-3``, a unary minus on a constant, is one literal.
"""

from __future__ import annotations

import ast

__all__ = ["format_float", "is_number", "number_node", "number_value"]


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


def number_value(node: ast.AST) -> int | float:
    """The value of a numeric literal (see :func:`is_number`)."""
    if type(node) is ast.Constant:
        return node.value  # type: ignore[return-value]
    return -node.operand.value  # type: ignore[attr-defined,operator]


def number_node(value: int | float, like: ast.AST) -> ast.expr:
    """A literal for ``value`` at ``like``'s position; a negative one is ``-x`` (a unary
    minus on a constant, which ``ast.unparse`` parenthesises where needed), never ``-0.0``."""
    if value == 0:
        value = type(value)(0)
    node: ast.expr
    if value < 0:
        node = ast.UnaryOp(op=ast.USub(), operand=ast.Constant(value=-value))
    else:
        node = ast.Constant(value=value)
    return ast.copy_location(node, like)


def format_float(value: float, decimals: int, keep: int = 1) -> str:
    """``value`` with ``decimals`` places, trailing zeros dropped down to ``keep`` places
    (``format_float(2.50, 3) == "2.5"``, ``format_float(3.0, 2) == "3.0"``); never ``-0``."""
    s = f"{value:.{decimals}f}"
    if "." in s:
        whole, frac = s.split(".")
        frac = frac.rstrip("0")
        frac = frac + "0" * max(0, keep - len(frac))
        s = f"{whole}.{frac}" if frac else whole
    if s.lstrip("-").strip("0.") == "":
        s = s.lstrip("-")
    return s
