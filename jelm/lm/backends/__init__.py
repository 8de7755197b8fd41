"""Where ELM's mutation operators get their completions from (ELM §3.1), by kind.

Every backend turns prompts into :class:`Completion` objects (:class:`Backend`). The
kinds are entries of the registry :data:`BACKENDS`, each a :class:`BackendKind` that
declares its spec keys and checks:

- ``jelm``: a jelm checkpoint directory or ``"shipped"``, sampled on the JAX device;
- ``hf``: a local Hugging Face checkpoint, converted and sampled the same way;
- ``openai``: any OpenAI-compatible HTTP server.

::

    backend = make_backend({"kind": "jelm", "path": "shipped"})
    spec_problems({"kind": "openai", "model": "m"})  # ["backend kind 'openai' needs base_url ..."]

A new kind is one registration: ``BACKENDS.register("mine", BackendKind(factory, ...))``
or a lazy ``"module:attribute"`` reference. Importing this package loads neither JAX nor
an HTTP client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jelm.lm.backends.base import (
    PLAIN_CHAT_STOP,
    SHIPPED_DIR,
    Backend,
    BackendKind,
    Completion,
    cut_at_stop,
    error_completion,
    render_chat_plain,
)
from jelm.lm.backends.jelm import JelmBackend
from jelm.lm.backends.openai import OpenAIBackend, RateLimiter
from jelm.registry import Registry

__all__ = [
    "BACKENDS",
    "BACKEND_KINDS",
    "PLAIN_CHAT_STOP",
    "SHIPPED_DIR",
    "Backend",
    "BackendKind",
    "Completion",
    "JelmBackend",
    "OpenAIBackend",
    "RateLimiter",
    "cut_at_stop",
    "error_completion",
    "make_backend",
    "model_spec",
    "render_chat_plain",
    "spec_problems",
]

#: Backend kinds by name: how a spec ``{"kind": name, **options}`` builds a backend.
BACKENDS: Registry[BackendKind] = Registry("backend kind")
BACKENDS.register("jelm", "jelm.lm.backends.jelm:JELM_KIND")
BACKENDS.register("hf", "jelm.lm.backends.jelm:HF_KIND")
BACKENDS.register("openai", "jelm.lm.backends.openai:OPENAI_KIND")

#: The kinds registered here (``BACKENDS.names()`` also lists later registrations).
BACKEND_KINDS: tuple[str, ...] = BACKENDS.names()


def spec_problems(spec: Any, *, files: bool = False) -> list[str]:
    """What is wrong with a backend spec (see :func:`make_backend`): an unknown kind, a
    missing key, an unknown option, a bad value and, with ``files``, a model directory
    that is not there. Loads nothing, so a run's configuration is checked before any work
    starts."""
    if not isinstance(spec, Mapping):
        return [f"a backend spec is a mapping with a 'kind', got {spec!r}"]
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in BACKENDS:
        return [f"backend kind must be one of {BACKENDS.names()}, got {kind!r}"]
    options = {k: v for k, v in spec.items() if k != "kind"}
    return BACKENDS.get(kind).problems(kind, options, files=files)


def make_backend(spec: Mapping[str, Any]) -> Backend:
    """A backend from a spec mapping (the run's ``lm.backend``, the command lines):

    - ``{"kind": "jelm", "path": "shipped" | <dir>, "max_batch": 32}``
    - ``{"kind": "hf", "path": <dir>, "max_batch": 32}``
    - ``{"kind": "openai", "base_url": ..., "model": ..., <OpenAIBackend options>}``

    Raises ``ValueError`` listing what :func:`spec_problems` finds.
    """
    problems = spec_problems(spec)
    if problems:
        raise ValueError("; ".join(problems))
    options = {k: v for k, v in spec.items() if k != "kind"}
    return BACKENDS.get(spec["kind"]).factory(**options)


def model_spec(model: str, **options: Any) -> dict[str, Any]:
    """The spec of a ``--model`` argument: ``"shipped"`` or a jelm directory (kind
    ``jelm``), ``"hf:<dir>"`` (kind ``hf``); ``options`` are added to it."""
    if model.startswith("hf:"):
        return {"kind": "hf", "path": model[3:], **options}
    return {"kind": "jelm", "path": model, **options}
