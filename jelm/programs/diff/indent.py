"""Indentation of a diff's lines against the source's (ELM, arXiv 2206.08896v1, §3.1):
a model may indent with four spaces where the source uses a tab; added lines follow the
source."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

__all__ = ["indent_mapper", "indent_of"]


def indent_of(line: str) -> str:
    """The leading whitespace of ``line``."""
    return line[: len(line) - len(line.lstrip())]


def indent_mapper(pairs: list[tuple[str, str]]) -> Callable[[str], str]:
    """How to re-indent an added line, learned from ``(diff indent, source indent)`` pairs
    of the lines a hunk matched ignoring whitespace.

    When both sides indent with one character each at a constant ratio (4 spaces -> 1 tab,
    4 spaces -> 2 spaces), any multiple of the diff's unit is converted; otherwise an indent
    the pairs show is replaced by the source's (longest matching prefix); anything else is
    kept as written.
    """
    table = dict(pairs)
    ratio: Fraction | None = None
    chars = {(d[0], s[0]) for d, s in pairs if d and s}
    if len(chars) == 1 and all(len(set(d)) <= 1 and len(set(s)) <= 1 for d, s in pairs):
        ratios = {Fraction(len(d), len(s)) for d, s in pairs if d and s}
        if len(ratios) == 1 and all(bool(d) == bool(s) for d, s in pairs):
            ratio = ratios.pop()
    ((d_char, s_char),) = chars if ratio is not None else ((None, None),)

    def convert(indent: str) -> str:
        if ratio is not None and indent and set(indent) == {d_char}:
            levels = len(indent) / ratio
            if levels.denominator == 1:
                return s_char * int(levels)
        prefix = max((d for d in table if indent.startswith(d)), key=len, default=None)
        return indent if prefix is None else table[prefix] + indent[len(prefix) :]

    return convert
