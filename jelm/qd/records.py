"""What the ledger stores: one record per candidate, one per generation (ELM §5-6).

Stage 2 of ELM (arXiv 2206.08896v1, §6) trains a language model on what the search found,
and the fine-tuning of the diff model (§5) on the diffs that improved a parent; the
ledger (:mod:`jelm.qd.ledger`) keeps every candidate as a :class:`CandidateRecord` so
both can be built after the run. Only the standard library.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "STATUSES",
    "CandidateRecord",
    "Edit",
    "GenerationInfo",
    "Improvement",
    "LedgerError",
    "config_hash",
    "dumps",
    "int_or_none",
    "real_or_none",
]

#: Status values the loops write; the column is free text, so operators and domains add
#: their own (an invalid phenotype is ``invalid_<the domain's word>``, e.g. ``invalid_walker``).
STATUSES = (
    "ok",  # ran, valid phenotype, evaluated: fitness and descriptors set
    "not_evaluated",  # produced but not (yet) run, e.g. a batch cut short
    "mutation_failed",  # the operator produced no program (no failure class given)
    # lm_diff: the model's diff did not give a program (jelm.programs.diff.DiffError kinds)
    "diff_empty",
    "diff_malformed_header",
    "diff_no_hunk",
    "diff_context_mismatch",
    "diff_unchanged",  # the diff applied but changed nothing
    "backend_error",  # the language-model backend failed (HTTP error, timeout, ...)
    "lm_empty",  # lm_prompt / lm_crossover: the model wrote no function body
    # the sandbox's verdicts (jelm.programs.sandbox.Status); an invalid phenotype is
    # "invalid_<the domain's word>" (invalid_walker, invalid_image)
    "syntax_error",
    "exception",
    "timeout",
    "memory_limit",
    "forbidden",
    "wrong_type",
    "output_too_large",
    "crashed",
    "internal_error",
    "too_large",  # a valid phenotype that does not fit the run's genotype shape
    "evaluation_failed",  # the domain's evaluation marked it invalid (e.g. non-finite)
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CandidateRecord:
    """One candidate, mirroring a row of the ``candidates`` table.

    ``id`` is ``None`` until the ledger assigns it (``gen.add`` returns it) and
    ``generation`` may be left ``None``: the generation being written fills it in.
    ``descriptors`` maps the domain's descriptor names to values (missing names and NaN
    read back as ``None``). ``created`` defaults to the time of ``add``.
    """

    id: int | None = None
    generation: int | None = None
    parent_ids: tuple[int, ...] = ()
    operator: str = ""
    message: str | None = ""
    diff: str | None = ""
    program: str | None = None
    status: str = "not_evaluated"
    error: str | None = None
    fitness: float | None = None
    descriptors: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    niche: int | None = None
    accepted: bool = False
    created: float | None = None
    elapsed_s: float | None = None

    @classmethod
    def from_child(cls, child: Any, **fields: Any) -> CandidateRecord:
        """A record from a ``jelm.mutation.base.Child`` (duck-typed: no import of mutation).

        A child without a program gets the operator's failure class as its status
        (``child.failure``, e.g. ``diff_context_mismatch``; ``mutation_failed`` when the
        operator gave none) and the operator's error; ``fields`` (status, fitness,
        descriptors, ...) override.
        """
        ok = child.program is not None and child.error is None
        base: dict[str, Any] = {
            "parent_ids": tuple(int(p) for p in child.parent_ids),
            "operator": child.operator,
            "message": child.message,
            "diff": child.diff,
            "program": child.program,
            "status": "not_evaluated"
            if ok
            else (getattr(child, "failure", None) or "mutation_failed"),
            "error": child.error,
        }
        base.update(fields)
        return cls(**base)


class Improvement(NamedTuple):
    """A fine-tuning example: an accepted child that beat its single parent."""

    parent_program: str
    child_program: str
    diff: str
    message: str
    fitness_gain: float


class Edit(NamedTuple):
    """A single-parent child with both programs: a candidate diff-model training example
    (ELM §5: fine-tuning on the diffs the search accepted)."""

    child_id: int
    parent_program: str
    child_program: str
    message: str | None
    operator: str
    status: str
    accepted: bool


@dataclasses.dataclass(frozen=True)
class GenerationInfo:
    """One row of the ``generations`` table."""

    generation: int
    committed: float
    n_candidates: int
    metrics: dict[str, Any]


class LedgerError(Exception):
    """A ledger that cannot be opened or written as asked; the message says why."""


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy / jax scalars and arrays
        return obj.tolist()
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in the ledger as JSON: {obj!r}")


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces; numpy values as lists)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``config`` (sorted keys, numpy values as lists)."""
    return hashlib.sha256(dumps(config).encode()).hexdigest()


def real_or_none(x: Any) -> float | None:
    """A float for SQLite: NaN (which SQLite cannot store) becomes ``None``."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def int_or_none(x: Any) -> int | None:
    """An int for SQLite, ``None`` kept."""
    return None if x is None else int(x)
