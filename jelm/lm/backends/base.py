"""What every source of completions shares (ELM §3.1: text in, text out).

ELM's mutation operators only need completions of prompts, so every backend implements
:class:`Backend`; :class:`Completion` is one answer. A backend never raises for one bad
prompt: that prompt's completion carries ``finish_reason="error"`` and ``error``, the
others come back as usual, in order. :class:`BackendKind` is an entry of the registry
:data:`jelm.lm.backends.BACKENDS`: how a spec mapping builds and checks one kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "PLAIN_CHAT_STOP",
    "SHIPPED_DIR",
    "Backend",
    "BackendKind",
    "Completion",
    "cut_at_stop",
    "error_completion",
    "render_chat_plain",
]

#: Where the diff model jelm ships lives (the ``"shipped"`` model of the ``jelm`` kind).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped"


@dataclasses.dataclass(frozen=True)
class Completion:
    """One completion of one prompt.

    ``text`` is the generated text with any stop string (and everything after it) removed;
    ``finish_reason`` is ``"stop"`` (a stop string or stop token ended it), ``"length"``
    (``max_new_tokens`` reached) or ``"error"`` (then ``text`` is empty and ``error`` says
    ``"<ExceptionClass>: <message>"``). ``tokens`` counts generated tokens. The last two
    fields are extras beyond the shared interface: ``prompt_tokens`` is the prompt's length
    as the model saw it (for usage counts) and ``truncated`` how many tokens were cut from
    the left of the prompt to fit the context window.
    """

    text: str
    finish_reason: str
    tokens: int
    error: str | None = None
    prompt_tokens: int = 0
    truncated: int = 0

    @property
    def ok(self) -> bool:
        """Whether this prompt produced a completion (possibly empty) rather than an error."""
        return self.error is None


def error_completion(exc: BaseException) -> Completion:
    """The completion standing for a prompt that failed with ``exc``."""
    return Completion(text="", finish_reason="error", tokens=0, error=_describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@runtime_checkable
class Backend(Protocol):
    """Text in, text out: a batch of prompts to one completion each, in order."""

    name: str

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[Completion]:
        """One :class:`Completion` per prompt; never raises for one bad prompt."""
        ...

    def chat(
        self,
        messages_per_prompt: Sequence[Sequence[Mapping[str, str]]],
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[Completion]:
        """Like :meth:`complete` for chat conversations (lists of ``{"role", "content"}``)."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first occurrence of any stop string, and whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def render_chat_plain(messages: Sequence[Mapping[str, str]]) -> str:
    """The plain chat template for models without one: ``role: content`` lines, then
    ``assistant:`` for the model to continue."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


#: Stop strings added to plain-template chats so the model does not write the next turn.
PLAIN_CHAT_STOP = ("\nuser:", "\nsystem:")


def _no_problems(options: Mapping[str, Any]) -> list[str]:
    return []


@dataclasses.dataclass(frozen=True)
class BackendKind:
    """One kind of backend: how a spec ``{"kind": ..., **options}`` builds and is checked.

    ``factory(**options)`` builds the backend; ``required`` and ``optional`` are the option
    keys it takes; ``check(options)`` lists what is wrong with their values and
    ``files(options)`` what is missing on disk. Neither check loads anything, so a run's
    configuration is checked before any work starts.
    """

    factory: Callable[..., Backend]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any]], list[str]] = _no_problems
    files: Callable[[Mapping[str, Any]], list[str]] = _no_problems

    @property
    def keys(self) -> tuple[str, ...]:
        """Every option key this kind takes."""
        return (*self.required, *self.optional)

    def problems(self, kind: str, options: Mapping[str, Any], *, files: bool = False) -> list[str]:
        """What is wrong with ``options`` for this kind (named ``kind`` in the messages):
        missing and unknown keys, else bad values, else (``files``) missing files."""
        problems = []
        missing = [k for k in self.required if options.get(k) in (None, "")]
        if missing:
            problems.append(
                f"backend kind {kind!r} needs {', '.join(missing)} (got {sorted(options)})"
            )
        unknown = sorted(map(str, set(options) - set(self.keys)))
        if unknown:
            problems.append(
                f"unknown option(s) for backend kind {kind!r}: {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(self.keys))})"
            )
        if problems:
            return problems
        problems = self.check(options)
        if files and not problems:
            problems = self.files(options)
        return problems
