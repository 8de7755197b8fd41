"""Sandboxed execution of untrusted walker programs.

In ELM (Lehman et al., 2022, §3) the genotype is a Python program and the phenotype is
what running it yields: here the Sodarace walker returned by ``make_walker()``. Every
program a language model writes must be treated as broken or hostile, and the ELM loop
executes thousands per generation, so this module runs batches of program texts in a
persistent pool of isolated worker processes and returns one classified :class:`Result`
per program, in input order::

    from jelm.programs.sandbox import Sandbox, execute

    with Sandbox() as sb:                    # owns the worker pool
        results = sb.execute(programs)       # list[Result], same order as programs
    results = execute(programs)              # module-level pool, created on first use

Walls, outermost first (details and measured figures in ``SANDBOX.md``):

1. OS: each worker is pid 1 of fresh pid/mount/net/ipc/uts namespaces, pivoted into an
   empty read-only tmpfs root with one small writable tmpfs (``/w``); per program it forks
   a child that sets rlimits (CPU, address space, file size, open files, no processes),
   drops to uid ``nobody`` (or drops capabilities), sets no_new_privs and installs a
   seccomp allow-list (fork/exec/ptrace kill the child; sockets, mounts, signals to other
   processes and everything unlisted fail). The worker enforces the wall-clock timeout
   and output cap and the parent re-validates every walker; a hung or dead worker is
   killed and replaced.
2. Runtime guard in the child: an audit hook refusing every audited event (``open``,
   ``os.system``, ``socket.*``, ``ctypes.*``, ``import`` of uncached modules...), and
   restricted builtins (no ``open``/``exec``/``eval``/..., allow-listed ``__import__``,
   ``getattr`` family refusing ``_``-names).
3. Static guard: an AST check (:func:`check_source`) before compiling.

Layers 2 and 3 can be switched off (``SandboxLimits(guard=False, audit_hook=False)``); the
OS layer must hold alone, and ``tests/test_sandbox.py`` proves it with hostile programs.
The module imports nothing of jax.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import enum
import importlib
import json
import logging
import math
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

from jelm.programs._sandbox_worker import (
    _FORK_FAILED,
    _KIND_RESULT,
    _OUT,
    _RES,
    DEFAULT_ALLOWED_IMPORTS,
    GuardViolation,
    check_source,
    check_tree,
)

__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
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
    "shutdown_default_sandbox",
]

log = logging.getLogger(__name__)

WALKER_MODULE = "jelm.domains.sodarace.api"


class Status(enum.StrEnum):
    """How running one program ended. ``OK`` is the only success."""

    OK = "ok"
    SYNTAX_ERROR = "syntax_error"
    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    FORBIDDEN = "forbidden"
    INVALID_WALKER = "invalid_walker"
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

    ``walker`` is the validated walker dict (``Walker.to_dict()`` format) when ``ok``;
    ``error`` is a readable one-line message; ``detail`` is a short machine-friendly tag:
    the exception type, the validation ``code``, what was refused, ``"wall"``/``"cpu"``
    for timeouts, the signal name for crashes. ``elapsed_s`` is the wall time of the
    child process (0 for programs that never ran).
    """

    ok: bool
    status: Status
    walker: dict[str, Any] | None = None
    error: str = ""
    detail: str = ""
    elapsed_s: float = 0.0

    @property
    def value(self) -> dict[str, Any] | None:
        return self.walker


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Every limit a program runs under. Defaults are for ELM's walker programs.

    Attributes:
        timeout_s: wall-clock limit per program (the worker kills the child at this time).
        cpu_s: RLIMIT_CPU per program in whole seconds (SIGXCPU, then SIGKILL a second
            later); ``None`` = ``ceil(timeout_s)``.
        memory_mb: RLIMIT_AS (address space) of the child, including the ~30 MB the
            pre-imported interpreter already maps.
        max_output_bytes: cap on printed output and on the serialized result.
        max_file_bytes: RLIMIT_FSIZE: largest file a program may write in its private dir.
        tmp_mb: size of the private writable tmpfs (``/w``), emptied after each program.
        max_open_files: RLIMIT_NOFILE.
        max_source_chars: longer programs are refused before parsing.
        allowed_imports: modules a program may import (each pre-imported by the workers).
        guard: the static AST guard and the restricted builtins.
        audit_hook: the runtime audit hook refusing audited events.
        seccomp, namespaces, drop_privileges: OS layers (only switched off to test them).
        walker_limits: ``walker_api.WalkerLimits`` used to validate walkers (in the child
            and again in the parent); ``None`` = ``walker_api.DEFAULT_LIMITS``.
    """

    timeout_s: float = 1.0
    cpu_s: int | None = None
    memory_mb: int = 256
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 1 << 20
    tmp_mb: int = 8
    max_open_files: int = 32
    max_source_chars: int = 100_000
    allowed_imports: tuple[str, ...] = DEFAULT_ALLOWED_IMPORTS
    guard: bool = True
    audit_hook: bool = True
    seccomp: bool = True
    namespaces: bool = True
    drop_privileges: bool = True
    walker_limits: Any = None
    walker_module: str = "jelm.domains.sodarace.api"

    def to_worker(self) -> dict[str, Any]:
        """The plain dict sent to workers at start-up."""
        walker_limits = self.walker_limits
        if walker_limits is None:
            walker_limits = importlib.import_module(self.walker_module).DEFAULT_LIMITS
        return {
            "timeout_s": float(self.timeout_s),
            "cpu_s": int(
                self.cpu_s if self.cpu_s is not None else max(1, math.ceil(self.timeout_s))
            ),
            "memory_bytes": int(self.memory_mb) << 20,
            "max_output_bytes": int(self.max_output_bytes),
            "max_file_bytes": int(self.max_file_bytes),
            "max_open_files": int(self.max_open_files),
            "max_source_chars": int(self.max_source_chars),
            "tmp_mb": int(self.tmp_mb),
            "allowed_imports": tuple(self.allowed_imports),
            "guard": bool(self.guard),
            "audit_hook": bool(self.audit_hook),
            "seccomp": bool(self.seccomp),
            "namespaces": bool(self.namespaces),
            "drop_privileges": bool(self.drop_privileges),
            "walker_limits": walker_limits,
            "walker_module": self.walker_module,
        }


class SandboxError(RuntimeError):
    """The pool could not be started (or a required isolation layer is missing)."""


class SandboxIsolationWarning(RuntimeWarning):
    """An OS isolation layer is not available and the sandbox runs without it."""


# Statuses a child may claim for itself (anything else it sends is treated as garbage).
_CHILD_STATUSES = {
    s.value: s for s in Status if s not in (Status.TIMEOUT, Status.INTERNAL_ERROR, Status.CRASHED)
}
_HEADER = struct.Struct(">II")


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in walker")


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class _Worker:
    """One worker: the ``python -I -S`` process pair and the parent's view of its queue."""

    def __init__(self, init_frame: bytes, index: int) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = (
            f"import sys; sys.path.insert(0, {root!r}); "
            "from jelm.programs._sandbox_worker import main; main()"
        )
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("JELM_SANDBOX_DEBUG") else subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        os.set_blocking(self.wfd, False)
        self.inner_pid: int | None = None
        self.layers: dict[str, Any] | None = None
        self.buf = bytearray()
        self.out = bytearray(init_frame)
        self.inflight: collections.deque[int] = collections.deque()
        self.head_since = time.monotonic()
        self.started = time.monotonic()
        self.dead = False

    @property
    def ready(self) -> bool:
        return self.layers is not None and not self.dead

    def flush(self) -> None:
        """Write as much of the outgoing buffer as the pipe takes without blocking."""
        while self.out:
            try:
                n = os.write(self.wfd, self.out)
            except BlockingIOError:
                return
            except (BrokenPipeError, OSError):
                self.dead = True
                self.out.clear()
                return
            del self.out[:n]

    def frames(self) -> list[tuple[int, bytes]]:
        """Read what is available and return the complete ``(kind, body)`` frames.

        EOF marks the worker dead (its zygote and manager are gone).
        """
        try:
            data = os.read(self.rfd, 1 << 20)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":
            self.dead = True
        elif data:
            self.buf += data
        out = []
        buf, hs = self.buf, _OUT.size
        pos, n = 0, len(buf)
        while n - pos >= hs:
            kind, size = _OUT.unpack_from(buf, pos)
            if n - pos - hs < size:
                break
            out.append((kind, bytes(buf[pos + hs : pos + hs + size])))
            pos += hs + size
        if pos:
            del buf[:pos]
        return out

    def kill(self) -> None:
        """SIGKILL the inner worker (and so its pid namespace) and the outer process."""
        self.dead = True
        for pid in (self.inner_pid, self.proc.pid):
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        """Close the pipes and wait for the outer process (bounded)."""
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _frame(obj: Any) -> bytes:
    h = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(h), 0) + h


class Sandbox:
    """A persistent pool of isolated workers executing untrusted walker programs.

    Create once (start-up costs about a tenth of a second per worker), call
    :meth:`execute` for every batch, :meth:`close` at the end (or use ``with``).
    ``isolation`` reports which OS layers are active; a missing layer is logged and
    warned about (:class:`SandboxIsolationWarning`), or refused with ``strict=True``.
    """

    #: Extra seconds the parent waits beyond ``timeout_s`` before declaring a worker hung.
    HANG_GRACE_S = 2.0

    def __init__(
        self,
        workers: int | None = None,
        limits: SandboxLimits | None = None,
        *,
        program: Any = None,
        strict: bool = False,
        chunk: int = 16,
        start_timeout_s: float = 30.0,
    ) -> None:
        """Start ``workers`` worker processes (default: the number of CPUs) and wait for them."""
        self.limits = limits or SandboxLimits()
        self.n_workers = max(1, workers or os.cpu_count() or 1)
        self.chunk = max(1, chunk)
        self.strict = strict
        self._lock = threading.Lock()
        self._walker_limits = self.limits.to_worker()["walker_limits"]
        self._init_frame = _frame(
            {"config": pickle.dumps(self.limits.to_worker()), "sys_path": list(sys.path)}
        )
        self._walker_api = importlib.import_module(self.limits.walker_module)
        self._workers: list[_Worker] = []
        self._isolation: dict[str, Any] | None = None
        self._closed = False
        self.stats = collections.Counter[str]()
        try:
            for i in range(self.n_workers):
                self._workers.append(self._spawn(i))
            self._wait_ready(self._workers, start_timeout_s)
        except BaseException:
            self.close()
            raise
        self._report_isolation()

    # -- pool management ------------------------------------------------------------------

    def _spawn(self, index: int) -> _Worker:
        w = _Worker(self._init_frame, index)
        w.flush()
        self.stats["workers_started"] += 1
        return w

    def _handle_control(self, w: _Worker, header: dict[str, Any]) -> None:
        if header.get("kind") == "inner_pid":
            w.inner_pid = int(header["pid"])
        elif header.get("kind") == "hello":
            w.layers = header["layers"]
            w.head_since = time.monotonic()
            if self._isolation is None:
                self._isolation = _summarize(self.limits, w.layers)

    def _wait_ready(self, workers: list[_Worker], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [w for w in workers if not w.ready]
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError("sandbox workers did not start in time")
            with selectors.DefaultSelector() as sel:
                for w in pending:
                    sel.register(w.rfd, selectors.EVENT_READ, w)
                for key, _ in sel.select(left):
                    w = key.data
                    for kind, body in w.frames():
                        if kind != _KIND_RESULT:
                            self._handle_control(w, json.loads(body))
            for w in pending:
                w.flush()
                if w.dead and not w.ready:
                    raise SandboxError(
                        f"sandbox worker exited during start-up (code {w.proc.poll()})"
                    )
            pending = [w for w in pending if not w.ready]

    def _report_isolation(self) -> None:
        iso = self.isolation
        log.info("jelm sandbox: %d workers; isolation %s", self.n_workers, json.dumps(iso))
        missing = iso["missing"]
        if missing:
            msg = "jelm sandbox running without: " + "; ".join(missing)
            if self.strict:
                self.close()
                raise SandboxError(msg)
            log.warning(msg)
            warnings.warn(msg, SandboxIsolationWarning, stacklevel=3)

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        self.stats["workers_replaced"] += 1
        nw = self._spawn(w.index)
        self._workers[w.index] = nw
        return nw

    @property
    def isolation(self) -> dict[str, Any]:
        """Which isolation layers are active (as reported by the workers' start-up probe)."""
        return dict(self._isolation or {})

    # -- execution ------------------------------------------------------------------------

    def execute(
        self,
        programs: Sequence[str],
        entry: str = "make_walker",
        *,
        deadline_s: float | None = None,
    ) -> list[Result]:
        """Run each program's ``entry()`` in isolation; return one Result per program, in order.

        ``deadline_s`` bounds the whole call: programs not finished by then come back as
        ``TIMEOUT`` (detail ``"batch_deadline"``) and the workers running them are
        replaced. Without it, the call is bounded by the per-program limits.
        """
        if self._closed:
            raise SandboxError("sandbox is closed")
        with self._lock:
            return self._execute(list(programs), entry, deadline_s)

    def _execute(self, programs: list[str], entry: str, deadline_s: float | None) -> list[Result]:
        n = len(programs)
        results: list[Result | None] = [None] * n
        pending: collections.deque[int] = collections.deque(range(n))
        for i, src in enumerate(programs):
            if not isinstance(src, str):
                results[i] = Result(
                    False, Status.WRONG_TYPE, None, "program is not a str", type(src).__name__
                )
                pending.remove(i)
        t_start = time.monotonic()
        batch_deadline = t_start + deadline_s if deadline_s is not None else None
        hang_after = self.limits.timeout_s + self.HANG_GRACE_S
        done = sum(r is not None for r in results)
        sel = selectors.DefaultSelector()
        registered: dict[int, tuple[_Worker, int]] = {}

        def sync_registration() -> None:
            """Keep the selector in step: read end of every live worker, write end if queued."""
            want: dict[int, tuple[_Worker, int]] = {}
            for w in self._workers:
                if not w.dead:
                    want[w.rfd] = (w, selectors.EVENT_READ)
                    if w.out:
                        want[w.wfd] = (w, selectors.EVENT_WRITE)
            for fd in list(registered):
                if fd not in want or registered[fd] != want[fd]:
                    sel.unregister(fd)
                    del registered[fd]
            for fd, (w, ev) in want.items():
                if fd not in registered:
                    sel.register(fd, ev, w)
                    registered[fd] = (w, ev)

        try:
            while done < n:
                now = time.monotonic()
                if batch_deadline is not None and now >= batch_deadline:
                    for w in list(self._workers):
                        if w.inflight:
                            self._replace(w)
                    for i in range(n):
                        if results[i] is None:
                            results[i] = Result(
                                False,
                                Status.TIMEOUT,
                                None,
                                "batch deadline exceeded before the program finished",
                                "batch_deadline",
                            )
                    done = n
                    break
                # feed idle workers
                for w in list(self._workers):
                    if w.ready and pending and len(w.inflight) < self.chunk:
                        share = max(
                            1, min(self.chunk, math.ceil(len(pending) / (2 * self.n_workers)))
                        )
                        jobs = []
                        while pending and len(jobs) < share:
                            i = pending.popleft()
                            jobs.append((i, programs[i], entry))
                        if not w.inflight:
                            w.head_since = now
                        w.inflight.extend(j[0] for j in jobs)
                        w.out += _frame(("jobs", jobs))
                        w.flush()
                # hung workers
                for w in list(self._workers):
                    if w.inflight and now - w.head_since > hang_after:
                        i = w.inflight.popleft()
                        results[i] = Result(
                            False,
                            Status.TIMEOUT,
                            None,
                            "worker stopped responding; killed",
                            "worker_hung",
                            now - w.head_since,
                        )
                        done += 1
                        pending.extendleft(reversed(w.inflight))
                        w.inflight.clear()
                        self._replace(w)
                    elif not w.ready and not w.dead and now - w.started > 30:
                        self._replace(w)
                # wait for output
                timeouts = [w.head_since + hang_after - now for w in self._workers if w.inflight]
                if batch_deadline is not None:
                    timeouts.append(batch_deadline - now)
                wait = max(0.0, min(timeouts, default=1.0))
                sync_registration()
                for key, mask in sel.select(wait):
                    w = key.data
                    if w.dead:
                        continue
                    if mask & selectors.EVENT_WRITE:
                        w.flush()
                        continue
                    for kind, body in w.frames():
                        if kind != _KIND_RESULT:
                            self._handle_control(w, json.loads(body))
                            continue
                        if len(body) < _RES.size:
                            self.stats["protocol_errors"] += 1
                            w.dead = True
                            break
                        jid, el, to, ov, how, ex, sg, cpu = _RES.unpack_from(body)
                        if not w.inflight or jid != w.inflight[0]:
                            self.stats["protocol_errors"] += 1
                            w.dead = True
                            break
                        i = w.inflight.popleft()
                        w.head_since = time.monotonic()
                        if results[i] is None:
                            header = {
                                "elapsed": el,
                                "timed_out": to,
                                "overflow": ov,
                                "how": how,
                                "exit": None if ex < 0 else ex,
                                "signal": sg or None,
                                "cpu": cpu,
                            }
                            results[i] = self._classify(header, body[_RES.size :])
                            done += 1
                    if w.dead:
                        if w.inflight:
                            i = w.inflight.popleft()
                            results[i] = Result(
                                False,
                                Status.INTERNAL_ERROR,
                                None,
                                "sandbox worker died while running the program",
                                "worker_died",
                            )
                            done += 1
                            pending.extendleft(reversed(w.inflight))
                            w.inflight.clear()
                        self._replace(w)
        finally:
            sel.close()
        self.stats["programs"] += n
        return [r for r in results if r is not None]

    def _validated_walker(self, d: Any) -> dict[str, Any]:
        """Validate a walker dict from a child (untrusted) and return its canonical form.

        Same checks and errors as ``Walker.from_dict(d, limits).to_dict()``. For the usual
        shape (a dict of exactly two lists) it skips ``from_dict``'s first pass over the
        entries: ``validate`` parses every entry (raising ``MalformedWalker`` for a bad
        one) before it checks the rules, so the result is the same at half the cost.
        """
        api = self._walker_api
        if (
            type(d) is dict
            and len(d) == 2
            and type(d.get("joints")) is list
            and type(d.get("muscles")) is list
        ):
            walker = api.Walker.__new__(api.Walker)
            walker.joints, walker.muscles = d["joints"], d["muscles"]
            return walker.validate(self._walker_limits).to_dict()
        return api.Walker.from_dict(d, self._walker_limits).to_dict()

    def _classify(self, h: dict[str, Any], payload: bytes) -> Result:
        """Turn the worker's report and the child's untrusted bytes into a Result."""
        elapsed = float(h.get("elapsed", 0.0))
        self.stats["executed"] += 1
        if h.get("timed_out"):
            return Result(
                False,
                Status.TIMEOUT,
                None,
                f"exceeded the wall-clock limit of {self.limits.timeout_s:g} s",
                "wall",
                elapsed,
            )
        if h.get("how") == _FORK_FAILED:
            self.stats["fork_failures"] += 1
            return Result(
                False,
                Status.INTERNAL_ERROR,
                None,
                "the sandbox could not fork a process for the program",
                "fork_failed",
                elapsed,
            )
        if h.get("overflow"):
            return Result(
                False,
                Status.OUTPUT_TOO_LARGE,
                None,
                f"result exceeded {self.limits.max_output_bytes} bytes",
                "result",
                elapsed,
            )
        sig = h.get("signal")
        if payload:
            try:
                rec = json.loads(payload, parse_constant=_reject_constant)
                status = _CHILD_STATUSES[rec["status"]]
                error = str(rec.get("error", ""))[:2000]
                detail = str(rec.get("detail", ""))[:200]
            except Exception:
                return Result(
                    False,
                    Status.CRASHED,
                    None,
                    "the program left a malformed result",
                    "malformed",
                    elapsed,
                )
            if status is not Status.OK:
                return Result(False, status, None, error, detail, elapsed)
            try:
                walker = self._validated_walker(rec["walker"])
            except self._walker_api.WalkerValidationError as exc:
                return Result(
                    False,
                    Status.INVALID_WALKER,
                    None,
                    f"invalid walker: {exc}",
                    str(getattr(exc, "code", "invalid")),
                    elapsed,
                )
            except Exception as exc:
                return Result(
                    False,
                    Status.INVALID_WALKER,
                    None,
                    f"invalid walker data: {type(exc).__name__}: {exc}"[:2000],
                    "malformed",
                    elapsed,
                )
            return Result(True, Status.OK, walker, "", "", elapsed)
        cpu = float(h.get("cpu", 0.0))
        cpu_limit = self.limits.to_worker()["cpu_s"]
        if sig == signal.SIGSYS:
            return Result(
                False,
                Status.FORBIDDEN,
                None,
                "killed by seccomp: the program tried to create a process, exec or trace",
                "seccomp_kill",
                elapsed,
            )
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= cpu_limit - 0.05):
            return Result(
                False,
                Status.TIMEOUT,
                None,
                f"exceeded the CPU limit of {cpu_limit} s",
                "cpu",
                elapsed,
            )
        if sig == signal.SIGXFSZ:
            return Result(
                False,
                Status.OUTPUT_TOO_LARGE,
                None,
                f"wrote a file larger than {self.limits.max_file_bytes} bytes",
                "file_size",
                elapsed,
            )
        if sig is not None:
            name = _signame(int(sig))
            hint = " (stack overflow?)" if sig == signal.SIGSEGV else ""
            return Result(
                False, Status.CRASHED, None, f"the program died of {name}{hint}", name, elapsed
            )
        code = h.get("exit")
        if code == 71:
            return Result(
                False, Status.MEMORY_LIMIT, None, "ran out of memory", "MemoryError", elapsed
            )
        if code == 70:
            return Result(
                False,
                Status.CRASHED,
                None,
                "the sandbox harness failed in the child (limits too tight?)",
                "harness",
                elapsed,
            )
        return Result(
            False,
            Status.CRASHED,
            None,
            f"the program exited with status {code} without returning",
            f"exit_{code}",
            elapsed,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker (politely, then by SIGKILL) and reap them."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            if not w.dead:
                w.out += _frame(("exit",))
                w.flush()
        deadline = time.monotonic() + 1.0
        for w in self._workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            w.kill()
        self._workers = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit module globals (contextlib included) may already be None.
        try:  # noqa: SIM105 (contextlib itself may be gone at interpreter exit)
            self.close()
        except Exception:
            pass


def _summarize(limits: SandboxLimits, layers: dict[str, Any]) -> dict[str, Any]:
    """The ``Sandbox.isolation`` report: active layers, limits, and what is missing."""
    missing: list[str] = []
    ns = list(layers.get("namespaces", []))
    for name in ("pid", "mount", "net"):
        if name not in ns:
            missing.append(f"{name} namespace")
    if not str(layers.get("filesystem", "")).startswith("private tmpfs root"):
        missing.append("private filesystem root")
    if not layers.get("seccomp"):
        missing.append("seccomp filter")
    if not layers.get("child_ids") and not layers.get("capabilities_dropped_by"):
        missing.append("privilege drop")
    if not limits.guard:
        missing.append("static guard (disabled)")
    if not limits.audit_hook:
        missing.append("audit hook (disabled)")
    w = limits.to_worker()
    return {
        "namespaces": ns,
        "filesystem": layers.get("filesystem"),
        "seccomp": layers.get("seccomp"),
        "uid": (layers.get("child_ids") or [None])[0],
        "capabilities": "dropped by setuid"
        if layers.get("child_ids")
        else layers.get("capabilities_dropped_by"),
        "no_new_privs": layers.get("no_new_privs"),
        "pid1_worker": layers.get("pid1"),
        "rlimits": layers.get("rlimits"),
        "audit_hook": limits.audit_hook,
        "ast_guard": limits.guard,
        "limits": {k: v for k, v in w.items() if k != "walker_limits"},
        "problems": list(layers.get("problems", [])),
        "missing": missing,
    }


_default: Sandbox | None = None
_default_key: tuple[Any, ...] | None = None
_default_lock = threading.Lock()


def execute(
    programs: Sequence[str],
    entry: str = "make_walker",
    *,
    limits: SandboxLimits | None = None,
    workers: int | None = None,
    deadline_s: float | None = None,
) -> list[Result]:
    """Module-level convenience: run ``programs`` on a shared pool created on first use.

    The pool is rebuilt if ``limits``/``workers`` change and closed at interpreter exit
    (or by :func:`shutdown_default_sandbox`).
    """
    global _default, _default_key
    key = (limits or SandboxLimits(), workers)
    with _default_lock:
        if _default is None or _default_key != key:
            if _default is not None:
                _default.close()
            _default = Sandbox(workers=workers, limits=key[0])
            _default_key = key
        sb = _default
    return sb.execute(programs, entry, deadline_s=deadline_s)


def shutdown_default_sandbox() -> None:
    """Close the module-level pool used by :func:`execute`, if any."""
    global _default, _default_key
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None
        _default_key = None


atexit.register(shutdown_default_sandbox)
