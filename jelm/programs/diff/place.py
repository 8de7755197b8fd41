"""Where each hunk of a diff goes in the source (ELM, arXiv 2206.08896v1, §3.1).

Exactly at its stated line, or (for a language model's diff, whose line numbers drift and
whose whitespace differs) searched for near it, ignoring whitespace and up to
:data:`MAX_FUZZ` context lines, like GNU patch with fuzz.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from jelm.programs.diff.parse import DiffError, Hunk

__all__ = ["MAX_FUZZ", "Placement", "insert_index", "place_exact", "place_fuzzy"]

#: GNU patch's default: up to this many leading/trailing context lines may be ignored.
MAX_FUZZ = 2


def _exact(line: str) -> str:
    return line


def _rstripped(line: str) -> str:
    return line.rstrip()


def _collapsed(line: str) -> str:
    return " ".join(line.split())


def insert_index(hunk: Hunk) -> int:
    """The 0-based position where a hunk's block starts, from its header: a hunk without
    old lines inserts *after* line ``old_start`` (``@@ -3,0 +4,2 @@``), others start at it."""
    return hunk.old_start if hunk.old_len == 0 else max(hunk.old_start - 1, 0)


def _first_mismatch(src: list[str], at: int, old: list[str]) -> str:
    """Which line of ``old`` first differs from ``src`` at ``at``, for error messages."""
    for k, want in enumerate(old):
        if at + k >= len(src):
            return f"expected {want!r} at line {at + k + 1}, past the end ({len(src)} lines)"
        if src[at + k] != want:
            return f"expected {want!r} at line {at + k + 1}, found {src[at + k]!r}"
    return "no mismatch"


def _hunk_name(index: int, hunk: Hunk) -> str:
    return f"hunk {index + 1} ({hunk.header()})"


class Placement(NamedTuple):
    """Where a hunk applies: ``src[at:at + n_old]`` is replaced; ``top``/``bottom`` context
    lines of the hunk were ignored (fuzz); ``reindent``: matched ignoring whitespace."""

    at: int
    n_old: int
    top: int = 0
    bottom: int = 0
    reindent: bool = False


def place_exact(hunks: list[Hunk], src: list[str]) -> list[Placement]:
    """Place every hunk at its stated line with exact text, or raise ``context_mismatch``
    for the first that does not fit."""
    placed: list[Placement] = []
    end = 0
    for index, hunk in enumerate(hunks):
        at, old = insert_index(hunk), hunk.old_lines
        if at < end:
            raise DiffError(
                "context_mismatch",
                f"{_hunk_name(index, hunk)} starts at line {at + 1}, inside or before "
                f"hunk {index} (which ends at line {end})",
            )
        if at + len(old) > len(src) or src[at : at + len(old)] != old:
            raise DiffError(
                "context_mismatch",
                f"{_hunk_name(index, hunk)} does not apply at its line: "
                f"{_first_mismatch(src, at, old)}",
            )
        placed.append(Placement(at, len(old)))
        end = at + len(old)
    return placed


def _fuzz_trims(hunk: Hunk) -> list[tuple[int, int]]:
    """``(top, bottom)`` numbers of leading/trailing context lines to ignore, by fuzz
    level (0, then 1, then 2, like GNU patch), never leaving a hunk without old lines."""
    lead = 0
    while lead < len(hunk.lines) and hunk.lines[lead][0] == " ":
        lead += 1
    trail = 0
    while trail < len(hunk.lines) - lead and hunk.lines[-1 - trail][0] == " ":
        trail += 1
    trims = [(0, 0)]
    for fuzz in range(1, MAX_FUZZ + 1):
        level = [
            (t, b)
            for t in range(min(fuzz, lead) + 1)
            for b in range(min(fuzz, trail) + 1)
            if max(t, b) == fuzz and hunk.old_len - t - b > 0
        ]
        trims += sorted(level, key=lambda tb: (tb[0] + tb[1], -tb[0]))
    return trims


def _search(
    src: list[str], old: list[str], expected: int, lo: int, key: Callable[[str], str]
) -> int | None:
    """The position nearest ``expected`` (ties: later first, like GNU patch) in
    ``[lo, len(src) - len(old)]`` where ``old`` matches ``src`` under ``key``."""
    hi = len(src) - len(old)
    if hi < lo:
        return None
    want = [key(line) for line in old]
    keyed: dict[int, str] = {}

    def matches(at: int) -> bool:
        for k, w in enumerate(want):
            line = keyed.get(at + k)
            if line is None:
                line = keyed[at + k] = key(src[at + k])
            if line != w:
                return False
        return True

    expected = min(max(expected, lo), hi)
    for distance in range(max(expected - lo, hi - expected) + 1):
        for at in (expected + distance, expected - distance):
            if lo <= at <= hi and matches(at):
                return at
            if distance == 0:
                break
    return None


def place_fuzzy(hunks: list[Hunk], src: list[str]) -> list[Placement]:
    """Locate every hunk near its stated line plus the offset found for the hunk before:
    exact text, then ignoring trailing whitespace, then ignoring all whitespace runs, each
    with fuzz 0, 1, 2. Hunks are placed in order and may not overlap."""
    placed: list[Placement] = []
    end = 0
    offset = 0
    for index, hunk in enumerate(hunks):
        stated = insert_index(hunk)
        if hunk.old_len == 0:  # pure insertion: nothing to look for
            at = min(max(stated + offset, end), len(src))
            placed.append(Placement(at, 0))
            offset, end = at - stated, at
            continue
        found = None
        for top, bottom in _fuzz_trims(hunk):
            body = hunk.lines[top : len(hunk.lines) - bottom]
            old = [text for tag, text in body if tag != "+"]
            for key in (_exact, _rstripped, _collapsed):
                at = _search(src, old, stated + offset + top, end, key)
                if at is not None:
                    found = Placement(at, len(old), top, bottom, key is _collapsed)
                    break
            if found is not None:
                break
        if found is None:
            raise DiffError(
                "context_mismatch", _fuzzy_failure(index, hunk, src, stated + offset, end)
            )
        placed.append(found)
        offset, end = found.at - found.top - stated, found.at + found.n_old
    return placed


def _fuzzy_failure(index: int, hunk: Hunk, src: list[str], expected: int, end: int) -> str:
    """Why a hunk could not be placed: it overlaps an earlier hunk, or which line differs."""
    name = _hunk_name(index, hunk)
    old = hunk.old_lines
    if index > 0:
        earlier = _search(src, old, expected, 0, _collapsed)
        if earlier is not None and earlier < end:
            return (
                f"{name} matches only at line {earlier + 1}, overlapping or before hunk "
                f"{index} (which ends at line {end}); hunks must be in order and not overlap"
            )
    at = min(max(expected, 0), max(len(src) - len(old), 0))
    return (
        f"{name} matches nowhere in the source; nearest its line: {_first_mismatch(src, at, old)}"
    )
