"""The program sandbox's parent side: a pool of isolated workers and its scheduler.

In ELM (§3) every program a language model writes is executed to get its phenotype, and
the loop runs thousands per generation. :class:`Sandbox` keeps a persistent pool of
worker processes (:mod:`jelm.programs.sandbox.worker`) for one domain's
:class:`~jelm.programs.spec.ProgramSpec`, feeds them batches of program texts, watches for
hung and dead workers (killed and replaced), and returns one classified
:class:`~jelm.programs.sandbox.types.Result` per program, in input order.
:func:`execute` runs a batch on a shared pool created on first use.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import selectors
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jelm.programs.sandbox.classify import Classifier, Report
from jelm.programs.sandbox.handle import WorkerHandle
from jelm.programs.sandbox.types import (
    Result,
    SandboxError,
    SandboxIsolationWarning,
    SandboxLimits,
    Status,
)
from jelm.programs.sandbox.wire import KIND_RESULT, RES, WorkerConfig, frame

if TYPE_CHECKING:
    from jelm.programs.spec import ProgramSpec

__all__ = ["Sandbox", "execute", "shutdown_default_sandbox"]

log = logging.getLogger("jelm.programs.sandbox")


class Sandbox:
    """A persistent pool of isolated workers executing one domain's untrusted programs.

    Create once (each worker takes a moment to start), call :meth:`execute` for every
    batch, :meth:`close` at the end (or use ``with``). ``isolation`` reports which OS
    layers are active; a missing layer is logged and warned about
    (:class:`SandboxIsolationWarning`), or refused with ``strict=True``.

    Args:
        program: how the domain's programs run: the entry they define, what they may
            import, how the child encodes the value and how the parent validates it.
        workers: worker processes (default: the number of CPUs).
        limits: the limits every program runs under.
        strict: raise :class:`SandboxError` instead of warning when an OS layer is missing.
        chunk: most programs queued on one worker at a time.
        start_timeout_s: how long the workers may take to start.
    """

    #: Extra seconds the parent waits beyond ``timeout_s`` before declaring a worker hung.
    HANG_GRACE_S = 2.0

    def __init__(
        self,
        program: ProgramSpec,
        workers: int | None = None,
        limits: SandboxLimits | None = None,
        *,
        strict: bool = False,
        chunk: int = 16,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.program = program
        self.limits = limits or SandboxLimits()
        self.n_workers = max(1, workers or os.cpu_count() or 1)
        self.chunk = max(1, chunk)
        self.strict = strict
        self._lock = threading.Lock()
        self._config = self.limits.worker_config(program)
        self._init_frame = frame({"config": pickle.dumps(self._config), "sys_path": list(sys.path)})
        self._workers: list[WorkerHandle] = []
        self._isolation: dict[str, Any] | None = None
        self._closed = False
        self.stats = collections.Counter[str]()
        self._classify = Classifier(program, self.limits, self.stats)
        try:
            for i in range(self.n_workers):
                self._workers.append(self._spawn(i))
            self._wait_ready(self._workers, start_timeout_s)
        except BaseException:
            self.close()
            raise
        self._report_isolation()

    # -- pool management ------------------------------------------------------------------

    def _spawn(self, index: int) -> WorkerHandle:
        w = WorkerHandle(self._init_frame, index)
        w.flush()
        self.stats["workers_started"] += 1
        return w

    def _handle_control(self, w: WorkerHandle, header: dict[str, Any]) -> None:
        if header.get("kind") == "inner_pid":
            w.inner_pid = int(header["pid"])
        elif header.get("kind") == "hello":
            w.layers = header["layers"]
            w.head_since = time.monotonic()
            if self._isolation is None:
                self._isolation = _summarize(self.limits, self._config, w.layers)

    def _wait_ready(self, workers: list[WorkerHandle], timeout_s: float) -> None:
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
                        if kind != KIND_RESULT:
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

    def _replace(self, w: WorkerHandle) -> WorkerHandle:
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

    def execute(self, programs: Sequence[str], *, deadline_s: float | None = None) -> list[Result]:
        """Run each program's entry in isolation; return one Result per program, in order.

        ``deadline_s`` bounds the whole call: programs not finished by then come back as
        ``TIMEOUT`` (detail ``"batch_deadline"``) and the workers running them are
        replaced. Without it, the call is bounded by the per-program limits.
        """
        if self._closed:
            raise SandboxError("sandbox is closed")
        with self._lock:
            return self._execute(list(programs), deadline_s)

    def _execute(self, programs: list[str], deadline_s: float | None) -> list[Result]:
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
        registered: dict[int, tuple[WorkerHandle, int]] = {}

        def sync_registration() -> None:
            """Keep the selector in step: read end of every live worker, write end if queued."""
            want: dict[int, tuple[WorkerHandle, int]] = {}
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
                            jobs.append((i, programs[i]))
                        if not w.inflight:
                            w.head_since = now
                        w.inflight.extend(j[0] for j in jobs)
                        w.out += frame(("jobs", jobs))
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
                        if kind != KIND_RESULT:
                            self._handle_control(w, json.loads(body))
                            continue
                        if len(body) < RES.size:
                            self.stats["protocol_errors"] += 1
                            w.dead = True
                            break
                        jid, *fields = RES.unpack_from(body)
                        if not w.inflight or jid != w.inflight[0]:
                            self.stats["protocol_errors"] += 1
                            w.dead = True
                            break
                        i = w.inflight.popleft()
                        w.head_since = time.monotonic()
                        if results[i] is None:
                            results[i] = self._classify(Report(*fields), body[RES.size :])
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

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every worker (politely, then by SIGKILL) and reap them."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            if not w.dead:
                w.out += frame(("exit",))
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


def _summarize(
    limits: SandboxLimits, config: WorkerConfig, layers: dict[str, Any]
) -> dict[str, Any]:
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
        "limits": {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name != "encode_options"  # the domain's own values, not always JSON
        },
        "problems": list(layers.get("problems", [])),
        "missing": missing,
    }


_default: Sandbox | None = None
_default_key: tuple[Any, ...] | None = None
_default_lock = threading.Lock()


def execute(
    programs: Sequence[str],
    program: ProgramSpec,
    *,
    limits: SandboxLimits | None = None,
    workers: int | None = None,
    deadline_s: float | None = None,
) -> list[Result]:
    """Module-level convenience: run ``programs`` on a shared pool created on first use.

    The pool is rebuilt if ``program``/``limits``/``workers`` change and closed at
    interpreter exit (or by :func:`shutdown_default_sandbox`).
    """
    global _default, _default_key
    key = (program, limits or SandboxLimits(), workers)
    with _default_lock:
        if _default is None or _default_key != key:
            if _default is not None:
                _default.close()
            _default = Sandbox(program, workers=workers, limits=key[1])
            _default_key = key
        sb = _default
    return sb.execute(programs, deadline_s=deadline_s)


def shutdown_default_sandbox() -> None:
    """Close the module-level pool used by :func:`execute`, if any."""
    global _default, _default_key
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None
        _default_key = None


atexit.register(shutdown_default_sandbox)
