"""The program sandbox's public types: limits, outcomes, errors.

In ELM (§3) every program a language model writes is run to get its phenotype; the
sandbox reports each run as a :class:`Result` whose :class:`Status` says how it ended,
under the :class:`SandboxLimits` it ran with.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import TYPE_CHECKING, Any

from jelm.programs.sandbox.wire import WorkerConfig

if TYPE_CHECKING:
    from jelm.programs.spec import ProgramSpec

__all__ = [
    "Result",
    "SandboxError",
    "SandboxIsolationWarning",
    "SandboxLimits",
    "Status",
]


class Status(enum.StrEnum):
    """How running one program ended. ``OK`` is the only success.

    A value the domain refuses is reported under the domain's own word,
    ``ProgramSpec.invalid_status`` (``"invalid_walker"``, ``"invalid_image"``): the one
    :attr:`Result.status` that is a plain string and not a member of this enum.
    """

    OK = "ok"
    SYNTAX_ERROR = "syntax_error"
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    FORBIDDEN = "forbidden"
    #: The entry returned a value of a type the domain's encoder does not take.
    WRONG_TYPE = "wrong_type"
    OUTPUT_TOO_LARGE = "output_too_large"
    #: The child died without a result: ``os._exit``, a fatal signal, a C stack overflow.
    CRASHED = "crashed"
    #: The sandbox itself failed (a worker died or could not start); not the program's fault
    #: as far as can be told.
    INTERNAL_ERROR = "internal_error"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """Outcome of one program.

    ``status`` is a :class:`Status`, or the program spec's ``invalid_status`` (a ``str``)
    when the domain refused the value. ``value`` is the validated phenotype (what
    ``ProgramSpec.validate`` returned) when ``ok``; ``error`` is a readable one-line
    message; ``detail`` is a short machine-friendly tag: the exception type, the
    validation ``code``, what was refused, ``"wall"``/``"cpu"`` for timeouts, the signal
    name for crashes. ``elapsed_s`` is the wall time of the child process (0 for programs
    that never ran).
    """

    ok: bool
    status: Status | str
    value: Any = None
    error: str = ""
    detail: str = ""
    elapsed_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Every limit a program runs under (what it may import comes from its ProgramSpec).

    Attributes:
        timeout_s: wall-clock limit per program (the worker kills the child at this time).
        cpu_s: RLIMIT_CPU per program in whole seconds (SIGXCPU, then SIGKILL a second
            later); ``None`` = ``ceil(timeout_s)``.
        memory_mb: RLIMIT_AS (address space) of the child, including what the
            pre-imported interpreter already maps.
        max_output_bytes: cap on printed output and on the serialized result.
        max_file_bytes: RLIMIT_FSIZE: largest file a program may write in its private dir.
        tmp_mb: size of the private writable tmpfs (``/w``), emptied after each program.
        max_open_files: RLIMIT_NOFILE.
        max_source_chars: longer programs are refused before parsing.
        guard: the static AST guard and the restricted builtins.
        audit_hook: the runtime audit hook refusing audited events.
        seccomp, namespaces, drop_privileges: OS layers (only switched off to test them).
    """

    timeout_s: float = 1.0
    cpu_s: int | None = None
    memory_mb: int = 256
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 1 << 20
    tmp_mb: int = 8
    max_open_files: int = 32
    max_source_chars: int = 100_000
    guard: bool = True
    audit_hook: bool = True
    seccomp: bool = True
    namespaces: bool = True
    drop_privileges: bool = True

    @property
    def cpu_limit(self) -> int:
        """RLIMIT_CPU in whole seconds (``cpu_s``, or ``timeout_s`` rounded up)."""
        return int(self.cpu_s if self.cpu_s is not None else max(1, math.ceil(self.timeout_s)))

    def worker_config(self, program: ProgramSpec) -> WorkerConfig:
        """What a worker is told at start-up: these limits and ``program`` as plain values."""
        return WorkerConfig(
            timeout_s=float(self.timeout_s),
            cpu_s=self.cpu_limit,
            memory_bytes=int(self.memory_mb) << 20,
            max_output_bytes=int(self.max_output_bytes),
            max_file_bytes=int(self.max_file_bytes),
            max_open_files=int(self.max_open_files),
            max_source_chars=int(self.max_source_chars),
            tmp_mb=int(self.tmp_mb),
            guard=bool(self.guard),
            audit_hook=bool(self.audit_hook),
            seccomp=bool(self.seccomp),
            namespaces=bool(self.namespaces),
            drop_privileges=bool(self.drop_privileges),
            entry=str(program.entry),
            imports=tuple(program.imports),
            aliases=dict(program.module_aliases),
            encode=str(program.encode),
            encode_options=program.encode_options,
        )


class SandboxError(RuntimeError):
    """The pool could not be started (or a required isolation layer is missing)."""


class SandboxIsolationWarning(RuntimeWarning):
    """An OS isolation layer is not available and the sandbox runs without it."""
