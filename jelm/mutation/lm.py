"""Language-model mutation operators (ELM, Lehman et al. 2022, §3.1 and §3.3).

Three ways to ask a language model for a child program, all behind
:class:`jelm.mutation.base.ProgramOperator` so the ELM loop treats them like ``gp``:

``lm_diff``
    The paper's diff model (§3.1): the prompt is the parent in ELM's diff format
    (``<NME> walker.py / <BEF> parent / <MSG> commit message / <DFF>``) and the model writes
    a unified diff, which :func:`jelm.programs.diff.apply_diff` applies (exactly, then
    fuzzily). The commit message is drawn with the paper's odds (40/30/30, configurable).
``lm_prompt``
    Prompt mutation as OpenELM does it: the parent program, an instruction to write a new
    walker, and the header ``def make_walker():``; the model writes the body, which
    replaces the parent's ``make_walker`` (its helpers stay).
``lm_crossover``
    Several parents in one prompt (§3.3's crossover through the LM): each parent program
    as an example, then the same instruction and header; the child keeps the first
    parent's helpers.

The operators talk to a :class:`jelm.lm.backends.Backend` (the shipped jelm model, a local
Hugging Face checkpoint or an OpenAI-compatible server) through ``complete`` only, so they
import nothing of JAX. Every failure becomes a classified child (``Child.failure``): the
diff's :class:`~jelm.programs.diff.DiffError` kind, ``diff_unchanged``, or
``backend_error``; the ledger records it and the run goes on.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from jelm.mutation.base import Child, Parent, unified_diff
from jelm.programs.diff import (
    COMMIT_MESSAGES,
    EOS,
    NME,
    DiffError,
    apply_diff,
    elm_prompt,
    extract_diff,
    sample_message,
)

#: The entry point every walker program defines (the paper's API).
ENTRY = "make_walker"

#: Instruction of prompt mutation and crossover (after OpenELM's Sodarace prompts).
INSTRUCTION = "# Create a new walker by modifying the make_walker function above.\n"
CROSSOVER_INSTRUCTION = "# Create a new walker by combining the walkers above.\n"

#: Where a generated function body ends: the next top-level statement.
BODY_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\n#", "\n@", EOS)


class CompletionBackend(Protocol):
    """What the operators need of a backend (jelm.lm.backends.Backend)."""

    name: str

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = ...,
        temperature: float = ...,
        top_p: float = ...,
        stop: Sequence[str] = ...,
        seed: int = ...,
    ) -> list[Any]:
        """One completion (``.text``, ``.error``) per prompt, in order."""
        ...


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampling settings every LM operator passes to its backend."""

    max_new_tokens: int = 384
    temperature: float = 0.8
    top_p: float = 0.95


def _seed(rng: np.random.Generator) -> int:
    """A backend seed drawn from the operator's generator (so runs replay exactly)."""
    return int(rng.integers(0, 2**31 - 1))


def _backend_failure(
    parents: tuple[int, ...], operator: str, error: str, message: str = ""
) -> Child:
    return Child(
        parent_ids=parents,
        operator=operator,
        program=None,
        message=message,
        error=error,
        failure="backend_error",
    )


class LMDiffOperator:
    """``lm_diff``: the model writes a unified diff to the parent (ELM §3.1)."""

    name = "lm_diff"

    def __init__(
        self,
        backend: CompletionBackend,
        sampling: Sampling = Sampling(),
        messages: Sequence[tuple[str, float]] = COMMIT_MESSAGES,
        fuzzy: bool = True,
    ):
        self.backend = backend
        self.sampling = sampling
        self.messages = tuple((str(m), float(p)) for m, p in messages)
        self.fuzzy = fuzzy

    def mutate(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[Child]:
        """One child per parent: sample a commit message, prompt, apply the diff."""
        messages = [sample_message(rng, self.messages) for _ in parents]
        prompts = [elm_prompt(p.program, m) for p, m in zip(parents, messages, strict=True)]
        completions = self.backend.complete(
            prompts, **dataclasses.asdict(self.sampling), stop=(EOS, NME), seed=_seed(rng)
        )
        return [
            self.child(parent, message, completion)
            for parent, message, completion in zip(parents, messages, completions, strict=True)
        ]

    def child(self, parent: Parent, message: str, completion: Any) -> Child:
        """The child a completion gives: the parent with the completion's diff applied, or
        a failed child classified as a backend error, a diff failure or an unchanged
        parent."""
        ids = (parent.id,)
        if completion.error:
            return _backend_failure(ids, self.name, completion.error, message)
        diff = extract_diff(completion.text)
        fields = {"parent_ids": ids, "operator": self.name, "message": message, "diff": diff}
        try:
            applied = apply_diff(parent.program, diff, fuzzy=self.fuzzy)
        except DiffError as exc:
            return Child(**fields, program=None, error=str(exc), failure=f"diff_{exc.kind}")
        if applied.program == parent.program:
            return Child(
                **fields, program=None, error="the diff changes nothing", failure="diff_unchanged"
            )
        return Child(**fields, program=applied.program)


def replace_entry(program: str, new_function: str, entry: str = ENTRY) -> str:
    """``program`` with its top-level ``entry`` function replaced by ``new_function``
    (appended when the program has none, or does not parse). Helpers stay, so a generated
    ``make_walker`` can call the parent's helper functions."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        tree = None
    lines = program.splitlines(keepends=True)
    new = new_function if new_function.endswith("\n") else new_function + "\n"
    for node in tree.body if tree is not None else []:
        if isinstance(node, ast.FunctionDef) and node.name == entry:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            last = node.end_lineno or node.lineno
            return "".join([*lines[:first], new, *lines[last:]])
    sep = "" if program.endswith("\n") or not program else "\n"
    return program + sep + "\n" + new


def _body(completion: str) -> str:
    """The function body a completion wrote: up to the next top-level statement."""
    cut = len(completion)
    for stop in BODY_STOPS:
        at = completion.find(stop)
        if at != -1:
            cut = min(cut, at)
    return completion[:cut].rstrip() + "\n"


class LMPromptOperator:
    """``lm_prompt``: prompt mutation (OpenELM): parent + instruction + ``def make_walker():``."""

    name = "lm_prompt"
    header = f"def {ENTRY}():\n"

    def __init__(
        self,
        backend: CompletionBackend,
        sampling: Sampling = Sampling(),
        instruction: str = INSTRUCTION,
    ):
        self.backend = backend
        self.sampling = sampling
        self.instruction = instruction if instruction.endswith("\n") else instruction + "\n"

    def prompt(self, programs: Sequence[str]) -> str:
        """The prompt for one child of ``programs`` (one program: prompt mutation)."""
        return programs[0].rstrip() + "\n\n\n" + self.instruction + self.header

    def _partners(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[list[Parent]]:
        return [[p] for p in parents]

    def mutate(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[Child]:
        """One child per parent (with its partners, for crossover)."""
        groups = self._partners(parents, rng)
        prompts = [self.prompt([p.program for p in group]) for group in groups]
        completions = self.backend.complete(
            prompts,
            **dataclasses.asdict(self.sampling),
            stop=BODY_STOPS,
            seed=_seed(rng),
        )
        children = []
        for group, completion in zip(groups, completions, strict=True):
            ids = tuple(p.id for p in group)
            if completion.error:
                children.append(_backend_failure(ids, self.name, completion.error))
                continue
            body = _body(completion.text)
            if not body.strip():
                children.append(
                    Child(ids, self.name, None, error="empty completion", failure="lm_empty")
                )
                continue
            program = replace_entry(group[0].program, self.header + body)
            children.append(
                Child(
                    parent_ids=ids,
                    operator=self.name,
                    program=program,
                    message=self.instruction.strip(),
                    diff=unified_diff(group[0].program, program),
                )
            )
        return children


class LMCrossoverOperator(LMPromptOperator):
    """``lm_crossover``: ``n_parents`` parents in one prompt (ELM §3.3, LM crossover)."""

    name = "lm_crossover"

    def __init__(
        self,
        backend: CompletionBackend,
        sampling: Sampling = Sampling(),
        instruction: str = CROSSOVER_INSTRUCTION,
        n_parents: int = 2,
    ):
        if n_parents < 2:
            raise ValueError(f"crossover needs at least 2 parents, got {n_parents}")
        super().__init__(backend, sampling, instruction)
        self.n_parents = n_parents

    def prompt(self, programs: Sequence[str]) -> str:
        """Each parent as a numbered example, then the instruction and the header."""
        examples = [
            f"# Walker {k + 1}:\n{program.rstrip()}\n" for k, program in enumerate(programs)
        ]
        return "\n\n".join(examples) + "\n\n" + self.instruction + self.header

    def _partners(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[list[Parent]]:
        """Each parent with ``n_parents - 1`` partners drawn from the same selection."""
        groups = []
        for parent in parents:
            picks = rng.integers(0, len(parents), size=self.n_parents - 1)
            groups.append([parent, *(parents[int(k)] for k in picks)])
        return groups
