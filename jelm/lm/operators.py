"""Language-model mutation operators (ELM, arXiv 2206.08896v1, §3.1 and §3.3).

Three ways to ask a language model for a child program, all behind
:class:`jelm.mutation.base.ProgramOperator` so the ELM loop treats them like ``gp``:

``lm_diff``
    The paper's diff model (§3.1): the prompt is the parent in ELM's diff format
    (``<NME> {file} / <BEF> parent / <MSG> commit message / <DFF>``) and the model writes
    a unified diff, which :func:`jelm.programs.diff.apply_diff` applies (exactly, then
    fuzzily, then by line similarity). The commit message is drawn from the domain's
    messages and odds. A backend that can (the jelm backend, :attr:`copies`) samples
    diffs whose context and removed lines are the parent's own
    (:mod:`jelm.lm.sampling.copy`).
``lm_prompt``
    Prompt mutation as OpenELM does it: the parent program, an instruction to write a new
    one, and the header ``def {entry}():``; the model writes the body, which replaces the
    parent's entry function (its helpers stay).
``lm_crossover``
    Several parents in one prompt (§3.3's crossover through the LM): each parent program
    as an example, then the same instruction and header; the child keeps the first
    parent's helpers.

The file name, the entry function and the prompt texts come from the domain
(:class:`jelm.domains.base.ProgramSpec` and :class:`~jelm.domains.base.Prompts`).

The operators talk to a :class:`jelm.lm.backends.Backend` (the shipped jelm model, a local
Hugging Face checkpoint or an OpenAI-compatible server) through ``complete`` only, so they
import nothing of JAX. Every failure becomes a classified child (``Child.failure``): the
diff's :class:`~jelm.programs.diff.DiffError` kind, ``diff_unchanged``, or
``backend_error``; the ledger records it and the run goes on.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from jelm.mutation.base import Child, Parent, unified_diff
from jelm.programs.check import static_problem
from jelm.programs.diff import (
    EOS,
    NME,
    DiffError,
    apply_diff,
    elm_prompt,
    extract_diff,
    sample_message,
)

#: ``lm_diff``'s default line-similarity threshold for hunks that fuzzy placement cannot
#: place (``jelm.programs.diff.similar``): a line with one number of five changed is
#: about 0.95 similar to the original.
SIMILAR = 0.9

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
    """``lm_diff``: the model writes a unified diff to the parent (ELM §3.1).

    ``copy``: ask the backend, if it can, to constrain each diff's context and removed
    lines to the parent's lines (:mod:`jelm.lm.sampling.copy`).

    ``retries``: a child whose diff does not apply or change the parent, or whose program
    does not parse or uses a name nothing defines (:func:`jelm.programs.check.static_problem`),
    is sampled again in up to ``retries`` more backend calls (:meth:`tries`); a child that
    never passes keeps its last sample. ``drawn`` counts the diffs the last :meth:`mutate`
    sampled (one per child without retries)."""

    name = "lm_diff"

    def __init__(
        self,
        backend: CompletionBackend,
        messages: Sequence[tuple[str, float]],
        file_name: str,
        sampling: Sampling = Sampling(),
        fuzzy: bool = True,
        similar: float | None = SIMILAR,
        copy: bool = True,
        retries: int = 0,
    ):
        self.backend = backend
        self.sampling = sampling
        self.messages = tuple((str(m), float(p)) for m, p in messages)
        self.file_name = file_name
        self.fuzzy = fuzzy
        self.similar = similar
        self.copy = copy
        self.retries = int(retries)
        self.drawn = 0

    def copy_from(self, programs: Sequence[str]) -> dict[str, Any]:
        """The backend arguments that make its diffs copy ``programs`` (one per prompt):
        none when copying is off or the backend cannot."""
        if self.copy and getattr(self.backend, "copies", False):
            return {"copy_from": list(programs)}
        return {}

    def mutate(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[Child]:
        """One child per parent: sample a commit message, prompt, apply the diff; sample
        again (same message) where the child cannot run, up to ``retries`` times."""
        messages = [sample_message(rng, self.messages) for _ in parents]
        return [child for child, _ in self.tries(parents, messages, _seed(rng))]

    def tries(
        self, parents: Sequence[Parent], messages: Sequence[str], seed: int
    ) -> list[tuple[Child, Any]]:
        """Each parent's child under its commit message and the completion that made it.

        One backend call samples every row (seed ``seed``). Each retry t (seed ``seed +
        t``) is one more call of the same size, filled with copies of the rows
        :meth:`retry` picks: a backend that compiles per shape meets a shape it knows, and
        a row gets several chances a try. A row keeps its first copy that passes, else
        its last. Sets :attr:`drawn`."""
        made = self.sample(parents, messages, seed)
        self.drawn = len(made)
        # rows still to mend (no reading at all without retries)
        again = [k for k, (c, _) in enumerate(made) if self.retries and self.retry(c)]
        for t in range(1, self.retries + 1):
            if not again:
                break
            picks = [again[j % len(again)] for j in range(max(len(made), len(again)))]
            redone = self.sample(
                [parents[k] for k in picks], [messages[k] for k in picks], (seed + t) % 2**31
            )
            self.drawn += len(picks)
            failing = []
            for k in again:
                copies = [pair for pick, pair in zip(picks, redone, strict=True) if pick == k]
                passing = next((c for c in copies if not self.retry(c[0])), None)
                made[k] = copies[-1] if passing is None else passing
                if passing is None:
                    failing.append(k)
            again = failing
        return made

    def sample(
        self, parents: Sequence[Parent], messages: Sequence[str], seed: int
    ) -> list[tuple[Child, Any]]:
        """One backend call: a diff for each parent under its commit message, applied."""
        prompts = [
            elm_prompt(p.program, m, self.file_name) for p, m in zip(parents, messages, strict=True)
        ]
        completions = self.backend.complete(
            prompts,
            **dataclasses.asdict(self.sampling),
            stop=(EOS, NME),
            seed=seed,
            **self.copy_from([p.program for p in parents]),
        )
        return [
            (self.child(parent, message, completion), completion)
            for parent, message, completion in zip(parents, messages, completions, strict=True)
        ]

    def retry(self, child: Child) -> bool:
        """Whether ``child`` is worth sampling again: its diff failed (not the backend,
        which a new sample would not mend) or reading its program finds a failure."""
        if child.program is None:
            return child.failure != "backend_error"
        return static_problem(child.program, self.file_name) is not None

    def child(self, parent: Parent, message: str, completion: Any) -> Child:
        """The child a completion gives: the parent with the completion's diff applied, or
        a failed child classified as a backend error, a diff failure or an unchanged
        parent. A completion cut off by the token budget loses its unfinished last line
        (half a line of code is a syntax error; the lines before it may be a good edit)."""
        ids = (parent.id,)
        if completion.error:
            return _backend_failure(ids, self.name, completion.error, message)
        text = completion.text
        if getattr(completion, "finish_reason", None) == "length" and "\n" in text:
            text = text[: text.rindex("\n") + 1]
        diff = extract_diff(text)
        fields = {"parent_ids": ids, "operator": self.name, "message": message, "diff": diff}
        try:
            applied = apply_diff(parent.program, diff, fuzzy=self.fuzzy, similar=self.similar)
        except DiffError as exc:
            return Child(**fields, program=None, error=str(exc), failure=f"diff_{exc.kind}")
        if applied.program == parent.program:
            return Child(
                **fields, program=None, error="the diff changes nothing", failure="diff_unchanged"
            )
        return Child(**fields, program=applied.program)


def replace_entry(program: str, new_function: str, entry: str) -> str:
    """``program`` with its top-level ``entry`` function replaced by ``new_function``
    (appended when the program has none, or does not parse). Helpers stay, so a generated
    entry function can call the parent's helper functions."""
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
    """``lm_prompt``: prompt mutation (OpenELM): parent + instruction + ``def {entry}():``."""

    name = "lm_prompt"

    def __init__(
        self,
        backend: CompletionBackend,
        instruction: str,
        entry: str,
        file_name: str,
        sampling: Sampling = Sampling(),
    ):
        self.backend = backend
        self.sampling = sampling
        self.instruction = instruction if instruction.endswith("\n") else instruction + "\n"
        self.entry = entry
        self.file_name = file_name
        self.header = f"def {entry}():\n"

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
            program = replace_entry(group[0].program, self.header + body, self.entry)
            children.append(
                Child(
                    parent_ids=ids,
                    operator=self.name,
                    program=program,
                    message=self.instruction.strip(),
                    diff=unified_diff(group[0].program, program, self.file_name),
                )
            )
        return children


class LMCrossoverOperator(LMPromptOperator):
    """``lm_crossover``: ``n_parents`` parents in one prompt (ELM §3.3, LM crossover)."""

    name = "lm_crossover"

    def __init__(
        self,
        backend: CompletionBackend,
        instruction: str,
        entry: str,
        file_name: str,
        sampling: Sampling = Sampling(),
        n_parents: int = 2,
    ):
        if n_parents < 2:
            raise ValueError(f"crossover needs at least 2 parents, got {n_parents}")
        super().__init__(backend, instruction, entry, file_name, sampling)
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


# --------------------------------------------------------------------------- factories


@dataclasses.dataclass(frozen=True)
class LMOptions(Sampling):
    """The ``lm`` section of a run configuration: the backend and the operators' settings.

    Attributes:
        backend: where completions come from (``jelm.lm.backends.make_backend``'s spec):
            ``{kind: jelm, path: shipped | <model dir>}``, ``{kind: hf, path: <dir>}`` or
            ``{kind: openai, base_url, model, ...}``.
        fuzzy: ``lm_diff`` applies diffs fuzzily (drifted line numbers, whitespace).
        similar: when fuzzy placement fails too, ``lm_diff`` places a hunk where its lines
            are at least this similar to the parent's (``jelm.programs.diff.similar``:
            made-up context lines ignored, a removed line with a number off still
            removes the parent's line); ``None`` turns it off. Needs ``fuzzy``.
        copy: ``lm_diff`` samples diffs whose context and removed lines are the parent's
            (``jelm.lm.sampling.copy``; the jelm backend only, others ignore it).
        retries: ``lm_diff`` samples a child again, up to this many times, while its
            diff fails or its program does not parse or uses an undefined name
            (``jelm.programs.check``); 0 keeps the first sample.
        messages: ``lm_diff``'s ``[[message, probability], ...]``; ``None``: the domain's.
        instruction: ``lm_prompt``'s / ``lm_crossover``'s instruction; ``None``: the
            domain's.
        n_parents: parents per ``lm_crossover`` prompt.
    """

    backend: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"kind": "jelm", "path": "shipped"}
    )
    fuzzy: bool = True
    similar: float | None = SIMILAR
    copy: bool = True
    retries: int = 0
    messages: list[Any] | None = None
    instruction: str | None = None
    n_parents: int = 2

    def __post_init__(self) -> None:
        backend = dict(self.backend) if isinstance(self.backend, Mapping) else self.backend
        if isinstance(backend, dict) and backend.get("kind") == "openai":
            # Overriding only ``lm.backend.kind`` keeps the default ``path: shipped``,
            # which means nothing to an OpenAI-compatible server.
            backend.pop("path", None)
        object.__setattr__(self, "backend", backend)

    def problems(self) -> list[str]:
        """What is wrong with these options, the backend included (a model directory that
        is not there, an unknown kind), found before any work starts."""
        from jelm.lm.backends import spec_problems

        out = []
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            out.append(f"lm.max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        elif self.max_new_tokens < 1:
            out.append(f"lm.max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not isinstance(self.temperature, int | float) or not 0 <= self.temperature <= 10:
            out.append(f"lm.temperature must be in [0, 10], got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            out.append(f"lm.top_p must be in (0, 1], got {self.top_p!r}")
        if self.similar is not None and (
            isinstance(self.similar, bool)
            or not isinstance(self.similar, int | float)
            or not 0.5 <= self.similar <= 1
        ):
            out.append(f"lm.similar must be null or in [0.5, 1], got {self.similar!r}")
        if not isinstance(self.copy, bool):
            out.append(f"lm.copy must be true or false, got {self.copy!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            out.append(f"lm.retries must be an integer >= 0, got {self.retries!r}")
        if not isinstance(self.n_parents, int) or self.n_parents < 2:
            out.append(f"lm.n_parents must be an integer >= 2, got {self.n_parents!r}")
        if self.messages is not None:
            try:
                pairs = [(str(m), float(p)) for m, p in self.messages]
                if not pairs or any(p < 0 for _, p in pairs) or sum(p for _, p in pairs) <= 0:
                    raise ValueError
            except (TypeError, ValueError):
                out.append(
                    "lm.messages must be a non-empty list of [message, probability] with "
                    f"probabilities >= 0 and a positive sum, got {self.messages!r}"
                )
        out.extend(f"lm.backend: {p}" for p in spec_problems(self.backend, files=True))
        return out


def _sampling(options: LMOptions) -> Sampling:
    return Sampling(
        max_new_tokens=int(options.max_new_tokens),
        temperature=float(options.temperature),
        top_p=float(options.top_p),
    )


def _backend(options: LMOptions) -> Any:
    from jelm.lm.backends import make_backend

    return make_backend(dict(options.backend))


def make_lm_diff(domain: Any, options: LMOptions) -> LMDiffOperator:
    """``lm_diff`` for ``domain`` (the registry's factory)."""
    return LMDiffOperator(
        _backend(options),
        options.messages or domain.prompts.commit_messages,
        domain.program.file_name,
        _sampling(options),
        fuzzy=bool(options.fuzzy),
        similar=None if options.similar is None else float(options.similar),
        copy=bool(options.copy),
        retries=int(options.retries),
    )


def make_lm_prompt(domain: Any, options: LMOptions) -> LMPromptOperator:
    """``lm_prompt`` for ``domain`` (the registry's factory)."""
    return LMPromptOperator(
        _backend(options),
        options.instruction or domain.prompts.instruction,
        domain.program.entry,
        domain.program.file_name,
        _sampling(options),
    )


def make_lm_crossover(domain: Any, options: LMOptions) -> LMCrossoverOperator:
    """``lm_crossover`` for ``domain`` (the registry's factory)."""
    return LMCrossoverOperator(
        _backend(options),
        options.instruction or domain.prompts.crossover_instruction,
        domain.program.entry,
        domain.program.file_name,
        _sampling(options),
        n_parents=int(options.n_parents),
    )
