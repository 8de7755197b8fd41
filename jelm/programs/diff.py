"""ELM's diff format and a tolerant unified-diff parser and applier.

ELM (Lehman et al. 2022, §3.1) mutates a program by asking a diff model to complete a
prompt in the format the model was trained on (commits from GitHub)::

    <NME> walker.py
    <BEF> {parent}
    <MSG> {message}
    <DFF> {diff}

The model writes a unified diff after ``<DFF>``; the child program is the parent with that
diff applied. ``message`` is one of three fixed commit messages (§4.1 / appendix), sampled
with odds 40/30/30.

A diff written by a language model is often slightly wrong: line numbers drift, the hunk
line counts are miscounted, whitespace differs, the completion continues past the diff.
:func:`parse_unified_diff` and :func:`apply_diff` therefore tolerate what they can (like
GNU patch with fuzz) and raise :class:`DiffError` with a ``kind`` naming the failure class
otherwise, so the loop can record why a mutation failed.

Pure Python (``re``, ``dataclasses``); no JAX.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BEF",
    "COMMIT_MESSAGES",
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

#: The commit messages of ELM's Sodarace prompts (§4.1) and the odds of each.
COMMIT_MESSAGES: tuple[tuple[str, float], ...] = (
    ("Changed make_walker function.", 0.4),
    ("Changed parameters in make_walker function.", 0.3),
    ("Small change to make_walker function.", 0.3),
)
NME, BEF, MSG, DFF = "<NME>", "<BEF>", "<MSG>", "<DFF>"
EOS = "<|endoftext|>"
_MARKERS = (EOS, NME, BEF, MSG, DFF)


def sample_message(
    rng: np.random.Generator, messages: Sequence[tuple[str, float]] = COMMIT_MESSAGES
) -> str:
    """A commit message drawn from ``messages`` with their (normalised) odds (ELM §3.1)."""
    if not messages:
        raise ValueError("no commit messages to sample from")
    weights = np.asarray([w for _, w in messages], dtype=np.float64)
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"commit message weights must be non-negative and finite: {weights}")
    index = int(rng.choice(len(messages), p=weights / weights.sum()))
    return messages[index][0]


def elm_prompt(parent: str, message: str, name: str = "walker.py") -> str:
    """The diff-model prompt of ELM §3.1: file name, parent, commit message, then ``<DFF> ``.

    Trailing newlines of ``parent`` are dropped so the layout does not depend on whether
    the program ends with one.
    """
    return f"{NME} {name}\n{BEF} {parent.rstrip(chr(10))}\n{MSG} {message}\n{DFF} "


def elm_example(parent: str, message: str, diff: str, name: str = "walker.py") -> tuple[str, str]:
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
    """One hunk: its header numbers (1-based starts, as written) and body lines.

    ``lines`` are ``(tag, text)`` with tag ``" "`` (context), ``"-"`` (removed) or ``"+"``
    (added); ``text`` has no line terminator.
    """

    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Applied:
    """The result of :func:`apply_diff`: the new program, whether every hunk applied at its
    stated line with exact text, and the line offset (found minus stated) of each hunk."""

    program: str
    exact: bool
    offsets: tuple[int, ...]


def parse_unified_diff(text: str) -> list[Hunk]:
    """Parse a unified diff into hunks (not yet implemented)."""
    raise NotImplementedError


def apply_diff(source: str, diff: str, *, fuzzy: bool = True) -> Applied:
    """Apply a unified diff to ``source`` (not yet implemented)."""
    raise NotImplementedError
