"""The parent's verdict on one program: a worker's report and the child's bytes -> Result.

ELM (§3) keeps a program's phenotype only if running it went right. The worker reports
how the child ended (:class:`Report`) and relays the child's record untouched; the child
is untrusted from its first instruction, so :class:`Classifier` parses the record
strictly (non-finite numbers refused, unknown statuses treated as garbage) and
re-validates every value with the domain's ``ProgramSpec.validate``.
"""

from __future__ import annotations

import collections
import json
import signal
from typing import TYPE_CHECKING, Any, NamedTuple

from jelm.programs.sandbox.types import Result, SandboxLimits, Status
from jelm.programs.sandbox.wire import (
    CHILD_STATUSES,
    EXIT_HARNESS_ERROR,
    EXIT_NO_MEMORY,
    FORK_FAILED,
    INVALID,
)

if TYPE_CHECKING:
    from jelm.programs.spec import ProgramSpec

__all__ = ["Classifier", "Report"]


class Report(NamedTuple):
    """How a child ended, as its worker saw it (the fields of ``wire.RES`` after the id)."""

    elapsed: float = 0.0
    timed_out: int = 0
    overflow: int = 0
    how: int = 0
    exit: int = 0  # -1 if killed
    signal: int = 0  # 0 if none
    cpu: float = 0.0


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in a result")


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class Classifier:
    """Turns reports and records into :class:`Result` objects for one pool.

    Args:
        program: the pool's program spec (validation, the word for an invalid value).
        limits: the pool's limits (named in the messages).
        stats: counters the pool reports (``executed``, ``fork_failures``).
    """

    def __init__(
        self,
        program: ProgramSpec,
        limits: SandboxLimits,
        stats: collections.Counter[str] | None = None,
    ) -> None:
        self.program = program
        self.limits = limits
        self.stats = stats if stats is not None else collections.Counter()
        self.invalid = program.invalid_status
        # Statuses a child may claim for itself, by their record name.
        self.claims: dict[str, Status | str] = {
            s: Status(s) for s in CHILD_STATUSES if s != INVALID
        }
        self.claims[INVALID] = self.invalid

    def __call__(self, report: Report, payload: bytes) -> Result:
        """The Result of one program that reached a worker."""
        elapsed = float(report.elapsed)
        self.stats["executed"] += 1
        if report.timed_out:
            msg = f"exceeded the wall-clock limit of {self.limits.timeout_s:g} s"
            return Result(False, Status.TIMEOUT, None, msg, "wall", elapsed)
        if report.how == FORK_FAILED:
            self.stats["fork_failures"] += 1
            msg = "the sandbox could not fork a process for the program"
            return Result(False, Status.INTERNAL_ERROR, None, msg, "fork_failed", elapsed)
        if report.overflow:
            msg = f"result exceeded {self.limits.max_output_bytes} bytes"
            return Result(False, Status.OUTPUT_TOO_LARGE, None, msg, "result", elapsed)
        if payload:
            return self.record(payload, elapsed)
        return self.death(report, elapsed)

    def record(self, payload: bytes, elapsed: float = 0.0) -> Result:
        """The Result a child's record says, its value re-validated."""
        try:
            rec = json.loads(payload, parse_constant=_reject_constant)
            claim = rec["status"]
            status = self.claims[claim]
            error = str(rec.get("error", ""))[:2000]
            detail = str(rec.get("detail", ""))[:200]
        except Exception:
            msg = "the program left a malformed result"
            return Result(False, Status.CRASHED, None, msg, "malformed", elapsed)
        word = self.program.phenotype
        if claim == INVALID:
            return Result(False, status, None, f"invalid {word}: {error}", detail, elapsed)
        if status is not Status.OK:
            return Result(False, status, None, error, detail, elapsed)
        return self.validated(rec.get("value"), elapsed)

    def validated(self, raw: Any, elapsed: float = 0.0) -> Result:
        """The Result of a value a child reported ok: the domain validates it again."""
        word = self.program.phenotype
        try:
            value = self.program.validate(raw)
        except ValueError as exc:
            code = str(getattr(exc, "code", "invalid"))[:200]
            msg = f"invalid {word}: {exc}"[:2000]
            return Result(False, self.invalid, None, msg, code, elapsed)
        except Exception as exc:
            msg = f"invalid {word} data: {type(exc).__name__}: {exc}"[:2000]
            return Result(False, self.invalid, None, msg, "malformed", elapsed)
        return Result(True, Status.OK, value, "", "", elapsed)

    def death(self, report: Report, elapsed: float) -> Result:
        """The Result of a child that left no record: how it died."""
        sig = report.signal or None
        cpu_limit = self.limits.cpu_limit
        if sig == signal.SIGSYS:
            msg = "killed by seccomp: the program tried to create a process, exec or trace"
            return Result(False, Status.FORBIDDEN, None, msg, "seccomp_kill", elapsed)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and report.cpu >= cpu_limit - 0.05):
            msg = f"exceeded the CPU limit of {cpu_limit} s"
            return Result(False, Status.TIMEOUT, None, msg, "cpu", elapsed)
        if sig == signal.SIGXFSZ:
            msg = f"wrote a file larger than {self.limits.max_file_bytes} bytes"
            return Result(False, Status.OUTPUT_TOO_LARGE, None, msg, "file_size", elapsed)
        if sig is not None:
            name = _signame(int(sig))
            hint = " (stack overflow?)" if sig == signal.SIGSEGV else ""
            msg = f"the program died of {name}{hint}"
            return Result(False, Status.CRASHED, None, msg, name, elapsed)
        code = None if report.exit < 0 else report.exit
        if code == EXIT_NO_MEMORY:
            return Result(
                False, Status.MEMORY_LIMIT, None, "ran out of memory", "MemoryError", elapsed
            )
        if code == EXIT_HARNESS_ERROR:
            msg = "the sandbox harness failed in the child (limits too tight?)"
            return Result(False, Status.CRASHED, None, msg, "harness", elapsed)
        msg = f"the program exited with status {code} without returning"
        return Result(False, Status.CRASHED, None, msg, f"exit_{code}", elapsed)
