"""The interface every program-text mutation operator implements.

ELM (Lehman et al. 2022, §3.1) mutates programs: an operator receives parent programs and
returns child programs. The language-model operators (``lm_diff``, ``lm_prompt``,
``lm_crossover``) and the genetic-programming baseline (``gp``, §4.2's non-LLM mutation)
share this interface, so the loop (``jelm.qd.loop``) treats them alike. The ``direct``
baseline mutates packed walkers in JAX instead and has its own, array-level interface.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Parent:
    """A program in the archive: its ledger id and source text."""

    id: int
    program: str


@dataclasses.dataclass(frozen=True)
class Child:
    """One proposed child program.

    ``program`` is the full child text, or ``None`` when the operator failed to produce
    one (``error`` says why: a diff that does not apply, a sampling timeout, no mutation
    site). ``message`` is the commit message (LM operators) or a short description of the
    edit (GP); ``diff`` the unified diff from the first parent to the child (for ``lm_diff``
    the diff the model wrote). ``failure`` classifies an operator failure for the ledger's
    status column (``diff_context_mismatch``, ``backend_error``, ...); None gives the
    generic ``mutation_failed``.
    """

    parent_ids: tuple[int, ...]
    operator: str
    program: str | None
    message: str = ""
    diff: str = ""
    error: str | None = None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the operator produced a program."""
        return self.program is not None and self.error is None


@runtime_checkable
class ProgramOperator(Protocol):
    """Turns parents into children; ``rng`` is the only source of randomness."""

    name: str

    def mutate(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[Child]:
        """One child per parent, in order (crossover operators may read several parents
        per child and say so in ``Child.parent_ids``)."""
        ...


def unified_diff(before: str, after: str, name: str = "walker.py") -> str:
    """The unified diff from ``before`` to ``after`` as ELM's diff format writes it."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=name,
        tofile=name,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
