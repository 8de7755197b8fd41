"""Apply a hunk where its lines are *similar* to the source's: the last resort for a
language model's diff (ELM, arXiv 2206.08896v1, §3.1).

A small diff model copies the parent imperfectly: a context line is a comment it made up,
a removed line has one number off, a line between two context lines is left out. Exact
and fuzzy placement (:mod:`jelm.programs.diff.place`) reject such a hunk although its
intent is plain. Here each hunk's old lines (context and removed) are aligned, in order,
with a window of the source: a line matches a source line whose text, with whitespace
runs collapsed, has a :class:`difflib.SequenceMatcher` ratio of at least ``threshold``
with it. Every removed line must match (a line that is not there cannot be removed), at
least one non-blank line must match, and the alignment with the most matches wins (then
the most similar, then the nearest to the stated line). Context lines that match nothing
are ignored; source lines the hunk skipped stay; added lines go where the hunk puts them
relative to the lines that matched.
"""

from __future__ import annotations

import difflib

from jelm.programs.diff.indent import indent_mapper, indent_of
from jelm.programs.diff.parse import DiffError, Hunk
from jelm.programs.diff.place import insert_index

__all__ = ["MAX_SKIPPED", "apply_similar"]

#: Source lines a hunk may leave out between two of its matched lines (its window is its
#: old lines plus this many).
MAX_SKIPPED = 6


def _collapsed(line: str) -> str:
    return " ".join(line.split())


def _similarity(a: str, b: str, threshold: float) -> float:
    """``a`` and ``b``'s ratio if it reaches ``threshold``, else 0 (blank lines match only
    blank lines)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    m = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if m.real_quick_ratio() < threshold or m.quick_ratio() < threshold:
        return 0.0
    r = m.ratio()
    return r if r >= threshold else 0.0


def _align(sim: list[list[float]], rows: list[int], start: int, stop: int) -> dict[int, int]:
    """The in-order matching of old lines ``rows`` to source lines ``start:stop`` with the
    most matches, then the greatest total similarity (a weighted longest common
    subsequence)."""
    n, m = len(rows), stop - start
    best = [[(0, 0.0)] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            skip = max(best[i + 1][j], best[i][j + 1])
            s = sim[rows[i]][start + j]
            if s > 0:
                count, total = best[i + 1][j + 1]
                skip = max(skip, (count + 1, total + s))
            best[i][j] = skip
    match: dict[int, int] = {}
    i = j = 0
    while i < n and j < m:
        s = sim[rows[i]][start + j]
        count, total = best[i + 1][j + 1]
        if s > 0 and best[i][j] == (count + 1, total + s):
            match[i] = start + j
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return match


def _place(
    index: int, hunk: Hunk, src: list[str], flat: list[str], end: int, near: int, threshold: float
) -> dict[int, int]:
    """Where hunk ``index``'s old lines go in ``src[end:]``: old-line index -> source line."""
    old = [(tag, _collapsed(text)) for tag, text in hunk.lines if tag != "+"]
    sim = [[_similarity(text, line, threshold) for line in flat] for _, text in old]
    removed = [i for i, (tag, _) in enumerate(old) if tag == "-"]
    width = len(old) + MAX_SKIPPED
    rows = list(range(len(old)))
    # a window is best started at the line its first match takes
    starts = sorted({j for i in rows for j in range(end, len(src)) if sim[i][j]})
    best: tuple[tuple[int, float, int], dict[int, int]] | None = None
    for start in starts:
        match = _align(sim, rows, start, min(start + width, len(src)))
        if any(i not in match for i in removed) or not any(old[i][1] for i in match):
            continue
        score = (
            sum(1 for i in match if old[i][1]),
            sum(sim[i][j] for i, j in match.items()),
            -abs(min(match.values()) - near),
        )
        if best is None or score > best[0]:
            best = (score, match)
    if best is None:
        missing = next((old[i][1] for i in removed if not any(sim[i])), None)
        why = (
            f"its removed line {missing!r} is like no line of the source"
            if missing is not None
            else "no line of it is like a line of the source, in order"
        )
        raise DiffError(
            "context_mismatch",
            f"hunk {index + 1} ({hunk.header()}) matches nowhere, even comparing lines by "
            f"similarity >= {threshold}: {why}",
        )
    return best[1]


def _block(hunk: Hunk, src: list[str], match: dict[int, int]) -> tuple[int, int, list[str]]:
    """``(first, stop, lines)``: the hunk replaces ``src[first:stop]`` with ``lines``."""
    first = min(match.values())
    pairs = []
    k = 0
    for tag, text in hunk.lines:
        if tag != "+":
            j = match.get(k)
            if j is not None and text.strip() and src[j].strip():
                pairs.append((indent_of(text), indent_of(src[j])))
            k += 1
    convert = indent_mapper(pairs) if any(d != s for d, s in pairs) else None
    out: list[str] = []
    cursor = first
    k = 0
    for tag, text in hunk.lines:
        if tag == "+":
            if convert is not None and text.strip():
                indent = indent_of(text)
                text = convert(indent) + text[len(indent) :]
            out.append(text)
            continue
        j = match.get(k)
        k += 1
        if j is None:
            continue  # a context line like nothing in the source: ignored
        out += src[cursor:j]  # source lines the hunk left out stay
        if tag == " ":
            out.append(src[j])
        cursor = j + 1
    return first, cursor, out  # cursor is one past the last matched line


def apply_similar(
    hunks: list[Hunk],
    src: list[str],
    threshold: float,
) -> tuple[list[str], tuple[int, ...]]:
    """The child's lines and each hunk's offset (first matched line minus stated line),
    placing hunks in order by line similarity (see the module docstring). A pure insertion
    goes at its stated line shifted by the previous hunk's offset. Raises
    :class:`DiffError` (``context_mismatch``) naming the hunk that matches nowhere."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"similarity threshold must be in (0, 1], got {threshold}")
    flat = [_collapsed(line) for line in src]
    out: list[str] = []
    cursor = 0
    offset = 0
    offsets = []
    for index, hunk in enumerate(hunks):
        stated = insert_index(hunk)
        if hunk.old_len == 0:
            at = min(max(stated + offset, cursor), len(src))
            out += src[cursor:at] + [text for _, text in hunk.lines]
            cursor = at
            offsets.append(at - stated)
            offset = at - stated
            continue
        match = _place(index, hunk, src, flat, cursor, stated + offset, threshold)
        first, stop, block = _block(hunk, src, match)
        out += src[cursor:first] + block
        cursor = stop
        offset = first - stated
        offsets.append(offset)
    out += src[cursor:]
    return out, tuple(offsets)
