"""The two interfaces of mutation operators (ELM, arXiv 2206.08896v1, §3.1, §4.2).

A :class:`ProgramOperator` receives parent programs and returns child programs: the
language-model operators (``lm_diff``, ``lm_prompt``, ``lm_crossover``) and genetic
programming (``gp``). A :class:`GenotypeOperator` mutates a batch of genotypes on the
device instead (a domain's direct encoding, such as Sodarace's ``direct``), so its whole
loop can run inside one jitted call. :class:`OperatorEntry` is what the registry
(:data:`jelm.mutation.OPERATORS`) keeps of each.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

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


class GenotypeOperator(Protocol):
    """Mutates a batch of genotypes on the device; ``key`` is the only randomness.

    ``mutate`` is pure and jittable and keeps every shape (empty rows stay empty).
    ``on_device`` (a class attribute, True) tells the loops apart from program operators
    (:func:`on_device`)."""

    name: str
    on_device: ClassVar[bool]

    def mutate(self, key: Any, genotypes: Any) -> Any:
        """One child genotype per row of ``genotypes``."""
        ...


def on_device(operator: Any) -> bool:
    """Whether ``operator`` is a :class:`GenotypeOperator` (it says so with
    ``on_device = True``) rather than a :class:`ProgramOperator`."""
    return bool(getattr(operator, "on_device", False))


@dataclasses.dataclass(frozen=True)
class OperatorEntry:
    """A registered operator.

    Attributes:
        factory: ``factory(domain, options) -> operator`` (or a lazy ``"module:attribute"``
            reference to it).
        options: the dataclass of its options (or a reference): the fields and defaults of
            the run configuration's section ``section``, built and checked by the config
            (an optional ``problems() -> list[str]`` method reports bad values).
        section: the name of the run configuration's section that holds its options.
        domains: the domains it works on (``None``: every domain).
    """

    factory: Callable[[Any, Any], ProgramOperator | GenotypeOperator] | str
    options: type | str
    section: str
    domains: tuple[str, ...] | None = None


def unified_diff(before: str, after: str, name: str) -> str:
    """The unified diff from ``before`` to ``after`` as ELM's diff format writes it."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=name,
        tofile=name,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
