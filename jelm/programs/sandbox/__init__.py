"""Sandboxed execution of untrusted programs, for any domain.

In ELM (Lehman et al., 2022, §3) the genotype is a Python program and the phenotype is
what running it yields. Every program a language model writes must be treated as broken
or hostile, and the ELM loop executes thousands per generation, so the sandbox runs
batches of program texts in a persistent pool of isolated worker processes, each program
in a fresh forked process, and returns one classified :class:`Result` per program, in
input order. What a program looks like comes from the domain's
:class:`~jelm.programs.spec.ProgramSpec` (entry function, imports, encoder, validator)::

    from jelm.programs.sandbox import Sandbox, execute

    with Sandbox(program=domain.program, workers=2) as sb:   # owns the worker pool
        results = sb.execute(programs)    # list[Result], same order as programs
    results = execute(programs, program=domain.program)      # shared pool, made on first use

One job a module: ``pool`` (the parent's pool and scheduler), ``handle`` (one worker
process seen from the parent), ``classify`` (reports and records -> Result), ``types``
(limits, statuses, results), ``wire`` (the protocol), ``worker`` (the worker process and
its zygote), ``runner`` (the child: run, call, encode), ``guard``, ``seccomp`` and
``namespaces`` (the walls), ``libc``, ``bench``. The worker side imports only the
standard library and the modules programs may import, never jax; this package loads its
parent side lazily so that workers do not import it. The walls and their tests are
described in ``jelm/programs/SANDBOX.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jelm.programs.sandbox.guard import GuardViolation, check_source, check_tree, importable
    from jelm.programs.sandbox.pool import Sandbox, execute, shutdown_default_sandbox
    from jelm.programs.sandbox.types import (
        Result,
        SandboxError,
        SandboxIsolationWarning,
        SandboxLimits,
        Status,
    )

__all__ = [
    "GuardViolation",
    "Result",
    "Sandbox",
    "SandboxError",
    "SandboxIsolationWarning",
    "SandboxLimits",
    "Status",
    "check_source",
    "check_tree",
    "execute",
    "importable",
    "shutdown_default_sandbox",
]

#: The module of each public name.
_HOME = {
    "GuardViolation": "guard",
    "check_source": "guard",
    "check_tree": "guard",
    "importable": "guard",
    "Sandbox": "pool",
    "execute": "pool",
    "shutdown_default_sandbox": "pool",
    "Result": "types",
    "SandboxError": "types",
    "SandboxIsolationWarning": "types",
    "SandboxLimits": "types",
    "Status": "types",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
