"""ELM's diff format and a tolerant unified-diff parser and applier.

ELM (Lehman et al. 2022, §3.1) mutates a program by asking a diff model to complete a
prompt in the format the model was trained on (commits from GitHub)::

    <NME> {file name}
    <BEF> {parent}
    <MSG> {message}
    <DFF> {diff}

The model writes a unified diff after ``<DFF>``; the child program is the parent with that
diff applied. The file name and the commit messages (with their odds) are the domain's
(:class:`jelm.programs.spec.ProgramSpec`, :class:`jelm.domains.base.Prompts`).

A diff written by a language model is often slightly wrong: line numbers drift, the hunk
line counts are miscounted, whitespace differs, the completion continues past the diff.
:func:`parse_unified_diff` and :func:`apply_diff` therefore tolerate what they can (like
GNU patch with fuzz) and raise :class:`DiffError` with a ``kind`` naming the failure class
otherwise, so the loop can record why a mutation failed.

Pure Python (``re``, ``dataclasses``, ``fractions``; numpy only for the message sampler's
generator); no JAX.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

__all__ = [
    "BEF",
    "DFF",
    "EOS",
    "MSG",
    "NME",
    "Applied",
    "DiffError",
    "Hunk",
    "apply_diff",
    "elm_example",
    "elm_prompt",
    "extract_diff",
    "parse_unified_diff",
    "sample_message",
]

NME, BEF, MSG, DFF = "<NME>", "<BEF>", "<MSG>", "<DFF>"
EOS = "<|endoftext|>"
_MARKERS = (EOS, NME, BEF, MSG, DFF)


def sample_message(rng: np.random.Generator, messages: Sequence[tuple[str, float]]) -> str:
    """A commit message drawn from ``messages`` with their (normalised) odds (ELM §3.1)."""
    if not messages:
        raise ValueError("no commit messages to sample from")
    weights = np.asarray([w for _, w in messages], dtype=np.float64)
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"commit message weights must be non-negative and finite: {weights}")
    index = int(rng.choice(len(messages), p=weights / weights.sum()))
    return messages[index][0]


def elm_prompt(parent: str, message: str, name: str) -> str:
    """The diff-model prompt of ELM §3.1: file name, parent, commit message, then ``<DFF> ``.

    Trailing newlines of ``parent`` are dropped so the layout does not depend on whether
    the program ends with one.
    """
    return f"{NME} {name}\n{BEF} {parent.rstrip(chr(10))}\n{MSG} {message}\n{DFF} "


def elm_example(parent: str, message: str, diff: str, name: str) -> tuple[str, str]:
    """A training example for the diff model: ``(prompt, target)``; the target is the diff
    text (the tokenizer appends the EOS token)."""
    return elm_prompt(parent, message, name), diff


def extract_diff(completion: str) -> str:
    """The diff part of a model completion.

    Cut at the first EOS or section marker (``<NME>``, ``<BEF>``, ``<MSG>``, ``<DFF>``: the
    model went on to write another example) and drop blank lines and indentation before the
    diff starts (the first ``---``, ``diff --git`` or ``@@`` line).
    """
    cut = len(completion)
    for marker in _MARKERS:
        at = completion.find(marker)
        if at != -1:
            cut = min(cut, at)
    text = completion[:cut]
    start = re.search(r"^[ \t]*(?:---|@@|diff --git)", text, flags=re.MULTILINE)
    if start is not None and not text[: start.start()].strip():
        return text[start.start() :].lstrip(" \t")
    return text.lstrip()


class DiffError(ValueError):
    """A diff that cannot be parsed or applied; ``kind`` is the failure class.

    Kinds: ``"empty"`` (nothing but whitespace), ``"malformed_header"`` (a ``---``/``+++``/
    ``@@`` line that cannot be parsed, or body lines before the first hunk header),
    ``"no_hunk"`` (text but no hunk), ``"context_mismatch"`` (a hunk's old lines are not in
    the source).
    """

    KINDS = ("empty", "malformed_header", "no_hunk", "context_mismatch")

    def __init__(self, kind: str, message: str):
        if kind not in self.KINDS:
            raise ValueError(f"unknown DiffError kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclasses.dataclass(frozen=True)
class Hunk:
    r"""One hunk of a unified diff.

    ``old_start``/``new_start`` are the 1-based line numbers of its header, as written;
    ``old_len``/``new_len`` are counted from the body (a language model's header counts are
    often wrong; the body is what gets applied). ``lines`` are ``(tag, text)`` with tag
    ``" "`` (context), ``"-"`` (removed) or ``"+"`` (added); ``text`` has no line
    terminator. ``old_no_newline``/``new_no_newline``: a ``\ No newline at end of file``
    marker said the old/new file ends, without a newline, at this hunk's last line.
    """

    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[tuple[str, str], ...]
    old_no_newline: bool = False
    new_no_newline: bool = False

    @property
    def old_lines(self) -> list[str]:
        """The lines this hunk expects in the source (context and removed)."""
        return [text for tag, text in self.lines if tag != "+"]

    @property
    def new_lines(self) -> list[str]:
        """The lines this hunk leaves in the result (context and added)."""
        return [text for tag, text in self.lines if tag != "-"]

    def header(self) -> str:
        """The hunk header with the body's counts, e.g. ``@@ -3,4 +3,5 @@``."""
        return f"@@ -{self.old_start},{self.old_len} +{self.new_start},{self.new_len} @@"


@dataclasses.dataclass(frozen=True)
class Applied:
    """The result of :func:`apply_diff`: the new program, whether every hunk applied at its
    stated line with exact text, and the line offset (found minus stated) of each hunk."""

    program: str
    exact: bool
    offsets: tuple[int, ...]


# ------------------------------------------------------------------------------ parsing

# The new range may be missing ("@@ -12,7 @@"): small models drop it; the body says
# everything the applier needs, so the hunk is read as if the new start were the old one.
_HUNK_HEADER = re.compile(r"^@@\s*-(\d+)(?:,(\d+))?(?:\s+\+(\d+)(?:,(\d+))?)?\s*@@")
_GIT_EXTENDED = (
    "diff --git",
    "index ",
    "new file mode",
    "deleted file mode",
    "old mode",
    "new mode",
    "similarity index",
    "dissimilarity index",
    "rename from",
    "rename to",
    "copy from",
    "copy to",
    "Binary files",
)


def _file_header_ok(line: str, marker: str) -> bool:
    """Whether ``line`` is ``--- name`` / ``+++ name`` (any name, optional timestamp)."""
    return line.startswith(marker + " ") and bool(line[4:].strip())


class _HunkBuilder:
    """A hunk being read: its header numbers and the body lines so far."""

    def __init__(self, header: re.Match[str]):
        a, b, c, _ = header.groups()
        self.old_start = int(a)
        self.header_old_len = 1 if b is None else int(b)
        self.new_start = int(a if c is None else c)
        self.lines: list[tuple[str, str]] = []
        self.bare_empty: list[bool] = []  # per line: an empty line standing for " "
        self.old_no_newline = False
        self.new_no_newline = False

    def add(self, line: str) -> None:
        if line.startswith("\\"):  # "\ No newline at end of file" refers to the last line
            if self.lines:
                tag = self.lines[-1][0]
                self.old_no_newline |= tag in " -"
                self.new_no_newline |= tag in " +"
            return
        if line == "":
            self.lines.append((" ", ""))
            self.bare_empty.append(True)
        else:
            self.lines.append((line[0], line[1:]))
            self.bare_empty.append(False)

    def build(self) -> Hunk | None:
        """The hunk, or None when no body line was written (a header cut short, maybe
        followed by blank lines)."""
        if all(self.bare_empty):
            return None
        # Empty lines at the end of a hunk are context lines whose space was stripped, or
        # blank lines after the diff. Keep as many as the header's old count asks for when
        # it asks for some of them; otherwise (the count is wrong anyway) none.
        n_blank = 0
        while n_blank < len(self.lines) and self.bare_empty[-1 - n_blank]:
            n_blank += 1
        n_old = sum(tag != "+" for tag, _ in self.lines) - n_blank
        keep = self.header_old_len - n_old if 0 < self.header_old_len - n_old <= n_blank else 0
        del self.lines[len(self.lines) - n_blank + keep :]
        del self.bare_empty[len(self.bare_empty) - n_blank + keep :]
        n_old += keep
        if self.lines and self.bare_empty[-1]:  # a marker can only follow a written line
            self.old_no_newline = self.new_no_newline = False
        lines = tuple(self.lines)
        return Hunk(
            old_start=self.old_start,
            old_len=n_old,
            new_start=self.new_start,
            new_len=sum(tag != "-" for tag, _ in lines),
            lines=lines,
            old_no_newline=self.old_no_newline,
            new_no_newline=self.new_no_newline,
        )


def _close(current: _HunkBuilder | None, hunks: list[Hunk]) -> None:
    hunk = None if current is None else current.build()
    if hunk is not None:
        hunks.append(hunk)


def parse_unified_diff(text: str) -> list[Hunk]:
    r"""Parse a unified diff (as a language model writes it) into hunks, in order.

    Tolerates: no ``---``/``+++`` header (hunks only), ``diff --git`` and other git
    header lines, a missing final newline, ``\ No newline at end of file`` markers, hunk
    headers without counts (``@@ -3 +3 @@``), header counts that disagree with the body
    (the body wins), and text that is not part of the diff around the hunks (ignored). A
    hunk header without body lines (a completion cut short) is not a hunk.
    Inside a hunk, empty lines are empty context lines, and a ``---`` line is a removed
    line unless a ``+++`` line follows it (then it starts a new file header). Hunks of
    several files are returned together, as if they all applied to the one program.

    Raises :class:`DiffError`: ``"empty"``, ``"malformed_header"`` (a ``---``, ``+++`` or
    ``@@`` line that cannot be parsed, or hunk body lines before the first hunk header),
    ``"no_hunk"`` (no hunk header followed by body lines).
    """
    if not text.strip():
        raise DiffError("empty", "the diff is empty")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    hunks: list[Hunk] = []
    current: _HunkBuilder | None = None
    stray: tuple[int, str] | None = None  # the first body-like line before any hunk
    i = 0
    while i < len(lines):
        line = lines[i]
        number = i + 1
        next_line = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("@@"):
            match = _HUNK_HEADER.match(line)
            if match is None:
                raise DiffError("malformed_header", f"line {number}: bad hunk header {line!r}")
            _close(current, hunks)
            current = _HunkBuilder(match)
            i += 1
            continue
        if current is not None:
            is_file_header = line.startswith("---") and next_line.startswith("+++")
            if not is_file_header and (line == "" or line[0] in " +-\\"):
                current.add(line)
                i += 1
                continue
            _close(current, hunks)
            current = None
        # Outside a hunk: file headers, git header lines, or text around the diff.
        if line.startswith("---"):
            if not (_file_header_ok(line, "---") and _file_header_ok(next_line, "+++")):
                raise DiffError(
                    "malformed_header",
                    f"line {number}: bad file header {line!r} (expected '--- name' "
                    f"followed by '+++ name')",
                )
            i += 2
            continue
        if line.startswith("+++"):
            raise DiffError(
                "malformed_header", f"line {number}: {line!r} without a '--- name' line before it"
            )
        if line.startswith(_GIT_EXTENDED):
            i += 1
            continue
        if not hunks and stray is None and line[:1] in (" ", "+", "-") and line.strip():
            stray = (number, line)
        i += 1
    _close(current, hunks)
    if not hunks:
        raise DiffError("no_hunk", "no hunk ('@@ -a,b +c,d @@' and its lines) in the diff")
    if stray is not None:
        raise DiffError(
            "malformed_header",
            f"line {stray[0]}: diff body line {stray[1]!r} before the first hunk header",
        )
    return hunks


# ----------------------------------------------------------------------------- applying

#: GNU patch's default: up to this many leading/trailing context lines may be ignored.
MAX_FUZZ = 2


def _exact(line: str) -> str:
    return line


def _rstripped(line: str) -> str:
    return line.rstrip()


def _collapsed(line: str) -> str:
    return " ".join(line.split())


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


def _insert_index(hunk: Hunk) -> int:
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


class _Placement(NamedTuple):
    """Where a hunk applies: ``src[at:at + n_old]`` is replaced; ``top``/``bottom`` context
    lines of the hunk were ignored (fuzz); ``reindent``: matched ignoring whitespace."""

    at: int
    n_old: int
    top: int = 0
    bottom: int = 0
    reindent: bool = False


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


def _new_block(hunk: Hunk, src: list[str], place: _Placement) -> list[str]:
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


def _apply_exact(hunks: list[Hunk], src: list[str]) -> list[_Placement]:
    """Place every hunk at its stated line with exact text, or raise ``context_mismatch``
    for the first that does not fit."""
    placed: list[_Placement] = []
    end = 0
    for index, hunk in enumerate(hunks):
        at, old = _insert_index(hunk), hunk.old_lines
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
        placed.append(_Placement(at, len(old)))
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


def _apply_fuzzy(hunks: list[Hunk], src: list[str]) -> list[_Placement]:
    """Locate every hunk near its stated line plus the offset found for the hunk before:
    exact text, then ignoring trailing whitespace, then ignoring all whitespace runs, each
    with fuzz 0, 1, 2. Hunks are placed in order and may not overlap."""
    placed: list[_Placement] = []
    end = 0
    offset = 0
    for index, hunk in enumerate(hunks):
        stated = _insert_index(hunk)
        if hunk.old_len == 0:  # pure insertion: nothing to look for
            at = min(max(stated + offset, end), len(src))
            placed.append(_Placement(at, 0))
            offset, end = at - stated, at
            continue
        found = None
        for top, bottom in _fuzz_trims(hunk):
            body = hunk.lines[top : len(hunk.lines) - bottom]
            old = [text for tag, text in body if tag != "+"]
            for key in (_exact, _rstripped, _collapsed):
                at = _search(src, old, stated + offset + top, end, key)
                if at is not None:
                    found = _Placement(at, len(old), top, bottom, key is _collapsed)
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
        placed, exact = _apply_exact(hunks, src), True
    except DiffError:
        if not fuzzy:
            raise
        placed, exact = _apply_fuzzy(hunks, src), False
    out: list[str] = []
    cursor = 0
    offsets = []
    for hunk, place in zip(hunks, placed, strict=True):
        out += src[cursor : place.at]
        out += _new_block(hunk, src, place)
        cursor = place.at + place.n_old
        offsets.append(place.at - place.top - _insert_index(hunk))
        if cursor == len(src) and place.bottom == 0:  # this hunk reaches the end of the file
            if hunk.new_no_newline:
                ends_with_newline = False
            elif hunk.old_no_newline:
                ends_with_newline = True
    out += src[cursor:]
    program = "\n".join(out) + ("\n" if out and ends_with_newline else "")
    return Applied(program=program, exact=exact, offsets=tuple(offsets))
