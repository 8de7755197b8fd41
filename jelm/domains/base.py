"""The Domain protocol: what a domain gives the ELM loop (ELM, arXiv 2206.08896v1, §3).

In ELM a genotype is a program and its phenotype is what the program builds: a Sodarace
walker (§4), an image, ... A :class:`Domain` says everything the generic parts of jelm
need to know about one such world, so that the archive, the ledger, the loops, the
mutation operators, the language models and the sandbox never name a domain:

* its descriptors (names and default bounds) and the fitness floor of its QD-score;
* how its programs look and run (:class:`ProgramSpec`);
* its seed programs and the texts its prompts use (:class:`Prompts`);
* a fixed-shape genotype (a pytree of arrays), ``pack`` from phenotypes into a batch of
  genotypes, and a jittable ``evaluate(genotypes, key)`` (QDax's scoring-function shape);
* optional renders of the best genotypes and an optional training corpus for the LMs.

Domains register by name in :data:`jelm.domains.DOMAINS`; see ARCHITECTURE.md for a
worked example of a new domain.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from jelm.programs.spec import PhenotypeError, ProgramSpec

__all__ = ["CorpusExample", "Domain", "Evaluation", "PhenotypeError", "ProgramSpec", "Prompts"]

#: A batch of genotypes: a pytree of arrays with a leading batch axis.
Genotypes = Any


@dataclasses.dataclass(frozen=True)
class Prompts:
    """The texts the language-model operators put into prompts (ELM §3.1, §3.3).

    Attributes:
        commit_messages: ``(message, probability)`` pairs of ``lm_diff``'s commit
            messages (the paper's three for Sodarace, 40/30/30).
        instruction: ``lm_prompt``'s instruction after the parent program.
        crossover_instruction: ``lm_crossover``'s instruction after the parents.
    """

    commit_messages: tuple[tuple[str, float], ...]
    instruction: str
    crossover_instruction: str


@dataclasses.dataclass(frozen=True)
class CorpusExample:
    """One training example of the diff model (ELM §3.1): ``child`` is ``parent`` after
    the edit ``diff`` (a unified diff), described by the commit ``message``."""

    parent: str
    child: str
    message: str
    diff: str


class Evaluation(NamedTuple):
    """What :meth:`Domain.evaluate` returns for a batch of ``B`` genotypes (a pytree).

    ``fitness`` ``(B,)`` (higher is better; any value for invalid rows), ``descriptors``
    ``(B, n_descriptors)``, ``valid`` ``(B,)`` bool (False for empty rows and failed
    evaluations), ``extras``: other ``(B, ...)`` arrays the domain reports.
    """

    fitness: Any
    descriptors: Any
    valid: Any
    extras: Mapping[str, Any]


class Domain(abc.ABC):
    """One ELM domain (see the module docstring). Subclasses are hashable, immutable
    values (frozen dataclasses), built from their options."""

    #: The name the domain is registered under.
    name: ClassVar[str]
    #: Descriptor names (also the ledger's descriptor columns: lower-case identifiers).
    descriptor_names: ClassVar[tuple[str, ...]]
    #: Default descriptor bounds of the archive.
    descriptor_lower: ClassVar[tuple[float, ...]]
    descriptor_upper: ClassVar[tuple[float, ...]]
    #: The lowest plausible fitness: the QD-score adds ``fitness - fitness_offset`` per
    #: filled cell.
    fitness_offset: ClassVar[float]
    #: Fitness in words, for plots (``"COM x displacement"``).
    fitness_label: ClassVar[str] = "fitness"
    #: The seeds a run starts from when its configuration names none.
    default_seeds: ClassVar[tuple[str, ...]]
    #: Cells per descriptor of the default grid archive.
    default_grid: ClassVar[tuple[int, ...]]
    #: The mutation operator a run uses when its configuration names none.
    default_operator: ClassVar[str] = "lm_diff"

    # -- programs --------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def program(self) -> ProgramSpec:
        """How this domain's programs are written and run."""

    @property
    @abc.abstractmethod
    def prompts(self) -> Prompts:
        """The texts of the language-model operators' prompts."""

    @abc.abstractmethod
    def seed_names(self) -> tuple[str, ...]:
        """The names of the domain's seed programs."""

    @abc.abstractmethod
    def seed_program(self, name: str) -> str:
        """The text of seed ``name``; ``ValueError`` listing the seeds for another name."""

    # -- genotypes -------------------------------------------------------------------

    @abc.abstractmethod
    def genotype_template(self) -> Genotypes:
        """One genotype, without the batch axis (zeros): the archive's storage layout."""

    @abc.abstractmethod
    def does_not_fit(self, phenotype: Any) -> str | None:
        """Why a valid phenotype cannot be packed into the genotype's fixed shape (the
        ledger records it as ``too_large``), or ``None`` when it fits."""

    @abc.abstractmethod
    def pack(self, phenotypes: Sequence[Any | None], rows: int) -> Genotypes:
        """A batch of ``rows`` genotypes: row ``i`` holds ``phenotypes[i]``; ``None``
        entries and rows past the end are empty (``evaluate`` marks them invalid).
        Host code (NumPy); every phenotype fits."""

    @abc.abstractmethod
    def evaluate(
        self, genotypes: Genotypes, key: Any, devices: Sequence[Any] | None = None
    ) -> Evaluation:
        """Fitness, descriptors and validity of a batch (pure and jittable). ``devices``:
        the devices a domain that spreads its batch spreads it over (default: every local
        device); the device loop of a multi-process run passes every device of every
        process, so that inside its jitted generations each process evaluates its share.
        A domain that does not spread ignores it (each process then computes the whole
        batch, with the same result)."""

    # -- optional --------------------------------------------------------------------

    def render(self, genotypes: Genotypes, labels: Sequence[str], out: Path) -> list[Path]:
        """Pictures of a batch of genotypes (one per label) written under ``out``; the
        run writes them for its best elites. Default: none."""
        return []

    def describe(self) -> str:
        """One line on what this domain instance evaluates (printed by the runs)."""
        return self.name

    def corpus(self, size: int, seed: int) -> list[CorpusExample]:
        """``size`` training examples for the diff model (``jelm.lm.train``), deterministic
        for ``seed``. Default: the domain has no corpus."""
        raise NotImplementedError(
            f"domain {self.name!r} has no training corpus for the diff model: implement "
            "Domain.corpus(size, seed) to train one (jelm.lm.train) on its programs"
        )
