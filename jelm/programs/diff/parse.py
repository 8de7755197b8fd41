"""A tolerant parser of unified diffs as a language model writes them (ELM, arXiv
2206.08896v1, §3.1).

A model's diff is often slightly wrong: hunk line counts are miscounted, the file header
is missing, the completion continues past the diff. :func:`parse_unified_diff` reads what
it can and raises :class:`DiffError`, whose ``kind`` names the failure class, otherwise.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["DiffError", "Hunk", "parse_unified_diff"]


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
