"""Apply a unified diff to a program: the child of an ELM diff mutation (ELM, arXiv
2206.08896v1, §3.1).

Hunks are placed exactly, else fuzzily (:mod:`jelm.programs.diff.place`); the child keeps
the source's context lines and final-newline state, and added lines are re-indented the
way the source indents after a whitespace-insensitive match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction

from jelm.programs.diff.parse import DiffError, Hunk, parse_unified_diff
from jelm.programs.diff.place import Placement, insert_index, place_exact, place_fuzzy

__all__ = ["Applied", "apply_diff"]


@dataclasses.dataclass(frozen=True)
class Applied:
    """The result of :func:`apply_diff`: the new program, whether every hunk applied at its
    stated line with exact text, and the line offset (found minus stated) of each hunk."""

    program: str
    exact: bool
    offsets: tuple[int, ...]


def _split_source(source: str) -> tuple[list[str], bool]:
    """Lines without terminators, and whether the text ends with a newline (an empty
    source counts as ending with one, so text added to it gets a final newline)."""
    if source == "":
        return [], True
    lines = source.split("\n")
    if lines[-1] == "":
        lines.pop()
        return lines, True
    return lines, False


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _indent_mapper(pairs: list[tuple[str, str]]) -> Callable[[str], str]:
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


def _new_block(hunk: Hunk, src: list[str], place: Placement) -> list[str]:
    """The lines replacing ``src[at:at + n_old]``.

    Context lines are the source's own lines (so a whitespace-insensitive match keeps the
    source's whitespace); context lines ignored by fuzz are left out (they stay in the
    source, untouched). After a whitespace-insensitive match, added lines are re-indented
    the way the source indents the hunk's matched lines (e.g. the diff's four spaces become
    the source's tab), so the child does not mix the two.
    """
    body = hunk.lines[place.top : len(hunk.lines) - place.bottom]
    convert: Callable[[str], str] | None = None
    if place.reindent:
        pairs = []
        k = place.at
        for tag, text in body:
            if tag != "+":
                if src[k].strip() and text.strip():
                    pairs.append((_indent(text), _indent(src[k])))
                k += 1
        if any(d != s for d, s in pairs):
            convert = _indent_mapper(pairs)
    out: list[str] = []
    k = place.at
    for tag, text in body:
        if tag == " ":
            out.append(src[k])
            k += 1
        elif tag == "-":
            k += 1
        elif convert is not None and text.strip():
            indent = _indent(text)
            out.append(convert(indent) + text[len(indent) :])
        else:
            out.append(text)
    return out


def apply_diff(source: str, diff: str, *, fuzzy: bool = True) -> Applied:
    r"""Apply a unified diff to ``source``; the child program of an ELM diff mutation (§3.1).

    Exact application first: each hunk's old lines (context and removed) at its stated
    line, in order. If that fails and ``fuzzy``: each hunk is searched for outward from
    its stated line shifted by the offset the previous hunk was found at; first by exact
    text, then comparing lines with trailing whitespace stripped, then with every run of
    whitespace collapsed; then the same with up to 1, then 2, leading/trailing context
    lines ignored (GNU patch's fuzz). Context lines keep the source's text, so a
    whitespace-insensitive match does not rewrite them. A hunk without old lines (pure
    insertion) goes at its stated line shifted by the previous hunk's offset, clamped to
    the source. Hunks are placed in order and must not overlap.

    The result keeps the source's final-newline state unless a ``\ No newline at end of
    file`` marker at the end of the file says otherwise. ``Applied.exact`` is true when the
    exact application succeeded; ``offsets`` is, per hunk, the line found minus the line
    stated. Raises :class:`DiffError` (``parse_unified_diff``'s kinds, or
    ``"context_mismatch"`` naming the hunk and the first line that did not match).
    """
    hunks = parse_unified_diff(diff)
    src, ends_with_newline = _split_source(source)
    try:
        placed, exact = place_exact(hunks, src), True
    except DiffError:
        if not fuzzy:
            raise
        placed, exact = place_fuzzy(hunks, src), False
    out: list[str] = []
    cursor = 0
    offsets = []
    for hunk, place in zip(hunks, placed, strict=True):
        out += src[cursor : place.at]
        out += _new_block(hunk, src, place)
        cursor = place.at + place.n_old
        offsets.append(place.at - place.top - insert_index(hunk))
        if cursor == len(src) and place.bottom == 0:  # this hunk reaches the end of the file
            if hunk.new_no_newline:
                ends_with_newline = False
            elif hunk.old_no_newline:
                ends_with_newline = True
    out += src[cursor:]
    program = "\n".join(out) + ("\n" if out and ends_with_newline else "")
    return Applied(program=program, exact=exact, offsets=tuple(offsets))
