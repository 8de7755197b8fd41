"""Shared types of the diff model's corpus (ELM arXiv 2206.08896v1, §3.1): an example, the
statistics of making a corpus, and the helpers every edit kind uses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from jelm.domains.sodarace.program import PROGRAM
from jelm.programs.diff import elm_example
from jelm.programs.edits import Edit

__all__ = ["FILE_NAME", "CorpusStats", "Edits", "Example", "pick", "training_text"]

#: The program's file name in the examples' diffs and prompts.
FILE_NAME = PROGRAM.file_name

#: What an edit kind returns: text edits of the parent (``None``: no site for the kind).
Edits = list[Edit]

T = TypeVar("T")


def pick(rng: np.random.Generator, items: Sequence[T], weights: Sequence[float] | None = None) -> T:
    """One of ``items``, uniformly or with the given relative ``weights``."""
    if weights is None:
        return items[int(rng.integers(len(items)))]
    w = np.asarray(weights, dtype=np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


@dataclass(frozen=True)
class Example:
    """One training pair: ``child`` is ``parent`` after one edit of kind ``kind``;
    ``diff == unified_diff(parent, child)`` and ``message`` is the ELM commit message."""

    parent: str
    child: str
    message: str
    diff: str
    kind: str


def training_text(example: Example) -> tuple[str, str]:
    """``(prompt, target)`` for the diff model: ``elm_prompt(parent, message)`` and the diff
    (ELM §3.1; the loss is on the target only, the trainer appends EOS)."""
    return elm_example(example.parent, example.message, example.diff, FILE_NAME)


@dataclass
class CorpusStats:
    """What :func:`~jelm.domains.sodarace.corpus.generate_corpus` did: edits tried and
    rejected per kind and reason (over every lineage run), and the kinds, messages and
    parent depths of the examples kept."""

    examples: int = 0
    attempts: Counter = field(default_factory=Counter)  # kind -> edits tried on a program
    no_site: Counter = field(default_factory=Counter)  # kind -> no place for the edit
    rejected: Counter = field(default_factory=Counter)  # reason -> children rejected
    rejected_by_kind: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    messages: Counter = field(default_factory=Counter)
    depths: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    generated_tried: int = 0  # generated programs run as lineage roots
    generated_rejected: Counter = field(default_factory=Counter)  # reason -> not built
    generated_roots: int = 0  # lineages that started from a generated program
    generated_examples: int = 0  # examples kept from those lineages

    @property
    def candidates(self) -> int:
        """Children that were run (edits that found a site)."""
        return sum(self.attempts.values()) - sum(self.no_site.values())

    @property
    def rejection_rate(self) -> float:
        """Fraction of run children rejected (error, invalid walker, no effect, too long)."""
        return sum(self.rejected.values()) / max(1, self.candidates)

    def merge(self, other: CorpusStats) -> None:
        """Add ``other``'s edit counts to these (the per-example counts are set at the end)."""
        for name in ("attempts", "no_site", "rejected", "rejected_by_kind", "generated_rejected"):
            getattr(self, name).update(getattr(other, name))
        self.generated_tried += other.generated_tried
        self.generated_roots += other.generated_roots

    def to_dict(self) -> dict[str, Any]:
        """The statistics as plain JSON-able values (rates rounded)."""
        n = max(1, self.examples)
        return {
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
            "examples_per_s": round(self.examples / max(self.seconds, 1e-9), 1),
            "candidates": self.candidates,
            "rejection_rate": round(self.rejection_rate, 4),
            "rejected": dict(self.rejected.most_common()),
            "kinds": dict(self.kinds.most_common()),
            "messages": {m: round(c / n, 4) for m, c in self.messages.most_common()},
            "kind_rejection": {
                k: round(self.rejected_by_kind[k] / max(1, self.attempts[k] - self.no_site[k]), 3)
                for k in sorted(self.attempts)
            },
            "depths": dict(sorted(self.depths.items())),
        } | (self._generated_dict() if self.generated_tried else {})

    def _generated_dict(self) -> dict[str, Any]:
        """The generated roots' statistics (only for a corpus that asked for them)."""
        built = self.generated_tried - sum(self.generated_rejected.values())
        return {
            "generated": {
                "programs_run": self.generated_tried,
                "built": built,
                "build_rate": round(built / max(1, self.generated_tried), 4),
                "rejected": dict(self.generated_rejected.most_common()),
                "lineages": self.generated_roots,
                "examples": self.generated_examples,
                "example_share": round(self.generated_examples / max(1, self.examples), 4),
            }
        }
