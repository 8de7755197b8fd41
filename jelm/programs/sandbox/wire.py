"""What the program sandbox's processes say to each other: framing, records, constants.

ELM (§3) runs every generated program; the sandbox does it in three kinds of process:

* parent -> worker (pipe): frames of ``>II`` (header length, payload length), the header a
  pickle from the trusted parent: first ``{"config": pickled WorkerConfig, "sys_path":
  [...]}``, then ``("jobs", [(job id, source), ...])`` or ``("exit",)``.
* manager -> zygote (pipe inside the worker): :data:`ZJOB` + body, where the body is
  marshalled code (kind :data:`JOB_RUN`) or a finished record to pass on (kind
  :data:`JOB_RECORD`: a program refused before any fork).
* child -> zygote (pipe): the untrusted bytes of one JSON record (:func:`record`).
* worker -> parent (pipe): :data:`OUT` frames: a JSON control message
  (:data:`KIND_CONTROL`, start-up only) or a result (:data:`KIND_RESULT`: :data:`RES` +
  the child's raw bytes, which the parent parses and re-validates).

Standard library only: both sides import it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import select
import struct
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CHILD_STATUSES",
    "EXIT_HARNESS_ERROR",
    "EXIT_NO_MEMORY",
    "FORKED",
    "FORK_FAILED",
    "HEADER",
    "INVALID",
    "JOB_RECORD",
    "JOB_RUN",
    "KIND_CONTROL",
    "KIND_RESULT",
    "NOT_FORKED",
    "OUT",
    "RES",
    "ZJOB",
    "WorkerConfig",
    "frame",
    "job_frame",
    "read_exact",
    "read_message",
    "read_timeout",
    "record",
    "send_control",
    "write_all",
]


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, sent once at start-up (the parent's limits and program
    spec reduced to plain values; see :class:`jelm.programs.sandbox.SandboxLimits` and
    :class:`jelm.programs.spec.ProgramSpec` for their meaning)."""

    timeout_s: float
    cpu_s: int
    memory_bytes: int
    max_output_bytes: int
    max_file_bytes: int
    max_open_files: int
    max_source_chars: int
    tmp_mb: int
    guard: bool
    audit_hook: bool
    seccomp: bool
    namespaces: bool
    drop_privileges: bool
    #: The function each program defines and the child calls.
    entry: str
    #: Modules a program may import (pre-imported by the worker).
    imports: tuple[str, ...]
    #: Other names a program may import a module under: alias -> module.
    aliases: Mapping[str, str]
    #: ``"module:function"`` turning ``entry()``'s value into plain data, and its options.
    encode: str
    encode_options: Any = None

    @property
    def importable(self) -> tuple[str, ...]:
        """Every name an ``import`` in a program may name."""
        return tuple(dict.fromkeys((*self.imports, *self.aliases)))


# -- parent -> worker ---------------------------------------------------------------------

#: Header length, payload length (the payload is unused: 0 bytes).
HEADER = struct.Struct(">II")


def frame(obj: Any) -> bytes:
    """One parent -> worker message."""
    h = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(h), 0) + h


def read_message(fd: int) -> Any:
    """The next parent -> worker message, or ``None`` at EOF."""
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    hl, pl = HEADER.unpack(head)
    body = read_exact(fd, hl)
    if body is None or read_exact(fd, pl) is None:
        return None
    return pickle.loads(body)


# -- manager -> zygote --------------------------------------------------------------------

#: Job kind (:data:`JOB_RUN` or :data:`JOB_RECORD`), job id, body size.
ZJOB = struct.Struct(">BqI")
JOB_RUN = 0
JOB_RECORD = 1


def job_frame(kind: int, job_id: int, body: bytes) -> bytes:
    """One manager -> zygote job."""
    return ZJOB.pack(kind, job_id, len(body)) + body


# -- child -> zygote ----------------------------------------------------------------------

#: The record status of a value the spec's encoder refused as invalid; the parent reports
#: it as the spec's ``invalid_status`` (``invalid_walker``).
INVALID = "invalid"
#: Every status a child may claim (the parent treats anything else as garbage). The others
#: (timeout, crashed, internal_error) only the worker and the parent can establish.
CHILD_STATUSES: tuple[str, ...] = (
    "ok",
    "syntax_error",
    "exception",
    "memory_limit",
    "forbidden",
    "wrong_type",
    "output_too_large",
    INVALID,
)

#: Exit codes of a child that could not write its record.
EXIT_HARNESS_ERROR = 70
EXIT_NO_MEMORY = 71


def record(status: str, error: str = "", detail: str = "", value: Any = None) -> dict[str, Any]:
    """A child's result record: ``value`` is the encoded phenotype when ``status`` is ok."""
    return {"status": status, "error": error, "detail": detail, "value": value}


# -- worker -> parent ---------------------------------------------------------------------

#: Frame kind, body size.
OUT = struct.Struct(">BI")
KIND_CONTROL = 1
KIND_RESULT = 2
#: A result: job id, elapsed, timed out, output overflow, how it ran (below), exit status
#: (-1 if killed), signal (0 if none), CPU seconds.
RES = struct.Struct(">qdBBBiid")
NOT_FORKED = 0
FORKED = 1
FORK_FAILED = 2


def send_control(fd: int, message: dict[str, Any]) -> None:
    """A control message to the parent (start-up only)."""
    body = json.dumps(message).encode()
    write_all(fd, OUT.pack(KIND_CONTROL, len(body)) + body)


# -- plumbing -----------------------------------------------------------------------------


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking fd."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_exact(fd: int, n: int) -> bytes | None:
    """Exactly ``n`` bytes from a blocking fd, or ``None`` at EOF."""
    chunks = []
    while n:
        b = os.read(fd, n)
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def read_timeout(fd: int, n: int, timeout_s: float) -> bytes | None:
    """Exactly ``n`` bytes within ``timeout_s``; ``None`` on EOF or timeout."""
    deadline = time.monotonic() + timeout_s
    chunks = []
    while n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        b = os.read(fd, n)
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)
