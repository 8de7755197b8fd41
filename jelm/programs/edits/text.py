"""Edits on program text at the spans the AST gives, so comments and formatting survive
(the diff model's corpus, ELM arXiv 2206.08896v1, §3.1): :class:`Source` maps AST
positions to text offsets, an edit is ``(start, end, replacement)``, :func:`splice`
applies several.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Protocol

from jelm.programs.edits.literals import format_float

__all__ = ["Edit", "LiteralSpan", "Source", "literal_text", "number_edits", "splice"]

#: ``(start, end, replacement)``: replace ``text[start:end]``; ``start == end`` inserts.
Edit = tuple[int, int, str]

# the line breaks Python's tokenizer counts (``str.splitlines`` also splits at \f, \v, ...)
_LINE = re.compile(r".*?(?:\r\n|\r|\n)|.+", re.S)
_OTHER_BREAKS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _lines(text: str) -> list[str]:
    if _OTHER_BREAKS.search(text) is None:
        return text.splitlines(keepends=True)
    return _LINE.findall(text)


class LiteralSpan(Protocol):
    """A numeric literal found with a source (:class:`jelm.programs.edits.Number`)."""

    @property
    def value(self) -> int | float: ...
    @property
    def is_int(self) -> bool: ...
    @property
    def rhs(self) -> bool: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def decimals(self) -> int: ...
    @property
    def op_at(self) -> int: ...
    @property
    def op(self) -> str: ...


class Source:
    """A program's text with its line offsets: AST (line, column) -> text offset."""

    __slots__ = ("lines", "starts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: list[str] = _lines(text)
        self.starts: list[int] = []
        offset = 0
        for line in self.lines:
            self.starts.append(offset)
            offset += len(line)
        self.starts.append(offset)

    def pos(self, lineno: int, col: int) -> int:
        """The text offset of an AST position (``col`` counts UTF-8 bytes)."""
        line = self.lines[lineno - 1]
        if col and not line.isascii():
            col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        """The text span of ``node`` (a literal's span includes its unary minus)."""
        return (
            self.pos(node.lineno, node.col_offset),  # type: ignore[attr-defined]
            self.pos(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )

    def whole_lines(self, stmt: ast.stmt) -> bool:
        """Whether ``stmt`` starts its first line and nothing but a comment follows it."""
        first = self.lines[stmt.lineno - 1]
        last = self.lines[stmt.end_lineno - 1]  # type: ignore[operator]
        end = self.pos(stmt.end_lineno, stmt.end_col_offset) - self.starts[stmt.end_lineno - 1]  # type: ignore[arg-type]
        rest = last[end:].strip()
        return first[: stmt.col_offset].strip() == "" and (rest == "" or rest.startswith("#"))

    def statement_lines(self, stmt: ast.stmt) -> tuple[int, int]:
        """The text span of the whole lines of ``stmt``."""
        return self.starts[stmt.lineno - 1], self.starts[stmt.end_lineno]  # type: ignore[index]

    def removal(self, stmt: ast.stmt) -> tuple[Edit, Edit | None]:
        """Two ways to delete ``stmt``: its lines alone, and, when it ends a paragraph (the
        next line is blank or less indented), its lines with the comment lines right above
        it (and the blank line after it if one would otherwise be doubled); ``None`` when it
        does not end a paragraph."""
        start, end = self.statement_lines(stmt)
        lines = self.lines
        first = stmt.lineno - 1
        after = lines[stmt.end_lineno] if stmt.end_lineno < len(lines) else ""  # type: ignore[operator]
        indent = lines[first][: stmt.col_offset]
        if not (after.strip() == "" or not after.startswith(indent)):
            return (start, end, ""), None
        k = first
        while k > 0 and lines[k - 1].strip().startswith("#") and lines[k - 1].startswith(indent):
            k -= 1
        wider = end
        if after.strip() == "" and k > 0 and lines[k - 1].strip() == "":
            wider += len(after)
        return (start, end, ""), (self.starts[k], wider, "")

    def insert_before(self, lineno: int, indent: str, block: Sequence[str]) -> Edit:
        """Insert ``block`` (lines without indentation; ``""`` is a blank line) before line
        ``lineno`` at ``indent``; a blank line above ``lineno`` stays right above it."""
        lines = [f"{indent}{b}\n" if b else "\n" for b in block]
        at = self.starts[lineno - 1]
        prev_blank = lineno >= 2 and self.lines[lineno - 2].strip() == ""
        return at, at, "".join(lines) + ("\n" if prev_blank else "")


def splice(text: str, edits: Sequence[Edit]) -> str | None:
    """``text`` with non-overlapping ``edits`` applied; ``None`` if two of them overlap."""
    out, last = [], len(text)
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        if end > last:
            return None
        out.append(text[end:last])
        out.append(new)
        last = start
    out.append(text[:last])
    return "".join(reversed(out))


def literal_text(num: LiteralSpan, value: float) -> str | None:
    """The literal for ``value`` written in ``num``'s style (an int stays an int, a float
    keeps its decimals, one more if needed to differ), or ``None`` if it would not change.

    A right operand keeps its sign (no ``x * -1.0``); :func:`number_edits` flips the sign
    of a term after a binary ``+``/``-`` by swapping the operator instead."""
    if num.rhs and (value < 0) != (num.value < 0) and value != 0:
        value = -value
    if num.is_int:
        new = round(value)
        return None if new == num.value else str(new)
    for k in range(max(1, num.decimals), max(2, num.decimals + 1) + 1):
        s = format_float(value, k)
        if float(s) != num.value:
            return s
    return None


def number_edits(pairs: Sequence[tuple[LiteralSpan, float]]) -> list[Edit] | None:
    """Text edits setting each literal to its new value (``a + 0.5 * y`` with ``-0.5``
    becomes ``a - 0.5 * y``); ``None`` when nothing changes. The literals need spans
    (sites found with a :class:`Source`)."""
    out: list[Edit] = []
    for n, v in pairs:
        if n.op_at >= 0 and v != 0 and (v < 0) != (n.value < 0):
            s = literal_text(n, -v)
            out.append((n.op_at, n.op_at + 1, "-" if n.op == "+" else "+"))
            if s is not None:
                out.append((n.start, n.end, s))
            continue
        s = literal_text(n, v)
        if s is not None:
            out.append((n.start, n.end, s))
    return out or None
