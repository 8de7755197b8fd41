"""Apply a unified diff to a program: the child of an ELM diff mutation (ELM, arXiv
2206.08896v1, §3.1).

Hunks are placed exactly, else fuzzily (:mod:`jelm.programs.diff.place`), else, when asked,
by line similarity (:mod:`jelm.programs.diff.similar`); the child keeps
the source's context lines and final-newline state, and added lines are re-indented the
way the source indents after a whitespace-insensitive match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jelm.programs.diff.indent import indent_mapper, indent_of
from jelm.programs.diff.parse import DiffError, Hunk, parse_unified_diff
from jelm.programs.diff.place import Placement, insert_index, place_exact, place_fuzzy
from jelm.programs.diff.similar import apply_similar

__all__ = ["Applied", "apply_diff"]


@dataclasses.dataclass(frozen=True)
class Applied:
    """The result of :func:`apply_diff`: the new program, whether every hunk applied at its
    stated line with exact text, the line offset (found minus stated) of each hunk, and how
    the hunks were placed: ``"exact"``, ``"fuzzy"`` or ``"similar"``."""

    program: str
    exact: bool
    offsets: tuple[int, ...]
    how: str = "exact"


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
                    pairs.append((indent_of(text), indent_of(src[k])))
                k += 1
        if any(d != s for d, s in pairs):
            convert = indent_mapper(pairs)
    out: list[str] = []
    k = place.at
    for tag, text in body:
        if tag == " ":
            out.append(src[k])
            k += 1
        elif tag == "-":
            k += 1
        elif convert is not None and text.strip():
            indent = indent_of(text)
            out.append(convert(indent) + text[len(indent) :])
        else:
            out.append(text)
    return out


def apply_diff(
    source: str, diff: str, *, fuzzy: bool = True, similar: float | None = None
) -> Applied:
    r"""Apply a unified diff to ``source``; the child program of an ELM diff mutation (§3.1).

    Exact application first: each hunk's old lines (context and removed) at its stated
    line, in order. If that fails and ``fuzzy``: each hunk is searched for outward from
    its stated line shifted by the offset the previous hunk was found at; first by exact
    text, then comparing lines with trailing whitespace stripped, then with every run of
    whitespace collapsed; then the same with up to 1, then 2, leading/trailing context
    lines ignored (GNU patch's fuzz). Context lines keep the source's text, so a
    whitespace-insensitive match does not rewrite them. A hunk without old lines (pure
    insertion) goes at its stated line shifted by the previous hunk's offset, clamped to
    the source. Hunks are placed in order and must not overlap. If that fails too and
    ``similar`` is a threshold in (0, 1]: each hunk's old lines are aligned with lines of
    the source that are at least that similar (:mod:`jelm.programs.diff.similar`: made-up
    context lines are ignored, a removed line with a number off removes the source's line).

    The result keeps the source's final-newline state unless a ``\ No newline at end of
    file`` marker at the end of the file says otherwise. ``Applied.exact`` is true when the
    exact application succeeded; ``offsets`` is, per hunk, the line found minus the line
    stated; ``how`` says which placement succeeded. Raises :class:`DiffError`
    (``parse_unified_diff``'s kinds, or ``"context_mismatch"`` naming the hunk and the
    first line that did not match).
    """
    hunks = parse_unified_diff(diff)
    src, ends_with_newline = _split_source(source)
    try:
        placed, exact = place_exact(hunks, src), True
    except DiffError:
        if not fuzzy:
            raise
        try:
            placed, exact = place_fuzzy(hunks, src), False
        except DiffError:
            if similar is None:
                raise
            lines, offsets = apply_similar(hunks, src, similar)
            program = "\n".join(lines) + ("\n" if lines and ends_with_newline else "")
            return Applied(program=program, exact=False, offsets=offsets, how="similar")
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
    how = "exact" if exact else "fuzzy"
    return Applied(program=program, exact=exact, offsets=tuple(offsets), how=how)
