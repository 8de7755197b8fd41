"""ELM's diff-model prompt format (ELM, arXiv 2206.08896v1, §3.1).

A prompt is the file name, the parent program and a commit message, each after its
marker; the model completes it with a unified diff after ``<DFF>``. The file name and the
commit messages (with their odds) are the domain's
(:class:`jelm.programs.spec.ProgramSpec`, :class:`jelm.domains.base.Prompts`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BEF",
    "DFF",
    "EOS",
    "MSG",
    "NME",
    "elm_example",
    "elm_prompt",
    "extract_diff",
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
