"""One sandbox worker process: isolation, the zygote, a fresh fork per program, limits.

ELM (§3) executes every program a language model writes; this module is the far side of
the sandbox's process boundary, started by the parent as ``python -I -S -c ...`` and
entered through :func:`main`::

    outer process (root pid namespace)            waits for the inner one, relays its exit
      inner process = manager: pid 1 of new pid/mount/net/ipc/uts namespaces, private
      |               tmpfs root (pivot_root), pre-imported modules; parses, guards and
      |               compiles each program (no program code runs here)
      +-- zygote (fork, once): fds on /dev/null, work dir, rlimits, no_new_privs, the
          |                    seccomp allow-list; forks, times, caps and reaps children
          +-- child per program (fork): CPU limit, privilege drop, own seccomp filter,
                                        then the program (jelm.programs.sandbox.runner)

Every program runs in a process of its own that dies after it, so nothing a program does
can reach the next. Standard library only (plus the modules programs may import, and the
spec's encoder): never jax.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import marshal
import os
import pickle
import resource
import select
import shutil
import signal
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from jelm.programs.sandbox import namespaces
from jelm.programs.sandbox.libc import PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, check, libc, raw_fork
from jelm.programs.sandbox.runner import Runner
from jelm.programs.sandbox.seccomp import ChildFilter, build_zygote_filter, install_filter
from jelm.programs.sandbox.wire import (
    EXIT_HARNESS_ERROR,
    FORK_FAILED,
    FORKED,
    JOB_RECORD,
    JOB_RUN,
    KIND_RESULT,
    OUT,
    RES,
    ZJOB,
    WorkerConfig,
    job_frame,
    read_message,
    read_timeout,
    send_control,
    write_all,
)

__all__ = ["Zygote", "import_modules", "main", "serve"]

#: The rlimits every child runs under (reported in the isolation summary).
RLIMITS = ("CPU", "AS", "FSIZE", "NOFILE", "NPROC", "CORE", "MEMLOCK", "MSGQUEUE")


class Zygote:
    """The walls a child inherits, and the fork-run-reap of one program.

    Forking is cheap; what costs in a child is every page it touches and every Python call
    it makes before the program runs (the figures are in SANDBOX.md). So the zygote
    applies once everything a child can inherit (fds 0-2 on /dev/null, the work dir, every
    rlimit but CPU, no_new_privs, the seccomp allow-list, a frozen and disabled
    collector); a child only sets its CPU limit, drops its privileges and stacks its small
    seccomp filter (:meth:`restrict`).
    """

    def __init__(self, runner: Runner, layers: dict[str, Any], devnull: int, workdir: str):
        cfg = runner.cfg
        self.cfg = cfg
        self.runner = runner
        self.random = sys.modules.get("random")
        self.devnull = devnull
        self.workdir = workdir
        self.seccomp: ChildFilter | None = None
        self.capset = bool(layers.get("capabilities_dropped_by") == "capset")
        ids = layers.get("child_ids")
        self.child_ids: tuple[int, int] | None = (ids[0], ids[1]) if ids else None
        rl = resource
        #: Set once in the zygote and inherited: none of them hinders the zygote itself
        #: (it is small, writes only to pipes and keeps fewer than 10 fds open).
        self.zygote_rlimits = [
            (rl.RLIMIT_AS, (cfg.memory_bytes, cfg.memory_bytes)),
            (rl.RLIMIT_FSIZE, (cfg.max_file_bytes, cfg.max_file_bytes)),
            (rl.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files)),
            (rl.RLIMIT_CORE, (0, 0)),
            (rl.RLIMIT_MEMLOCK, (0, 0)),
            (rl.RLIMIT_MSGQUEUE, (0, 0)),
        ]
        # RLIMIT_NPROC = 0 does not stop real root (the zygote) from forking, but stops a
        # child once it is uid nobody. Without a uid drop (user namespace) the zygote would
        # be stopped too, so then each child sets it after clearing its capabilities.
        if self.child_ids:
            self.zygote_rlimits.append((rl.RLIMIT_NPROC, (0, 0)))
        #: CPU time is per process and the zygote's own accumulates: set in each child.
        self.cpu_limit = (cfg.cpu_s, cfg.cpu_s + 1)
        self.workdir_stamp = self._stamp()

    def enable_seccomp(self) -> None:
        """Build both filters (installed by :meth:`setup` and :meth:`restrict`)."""
        self.zygote_filter = build_zygote_filter()
        self.seccomp = ChildFilter()

    def disable_seccomp(self) -> None:
        self.seccomp = None

    # -- in the zygote, once --------------------------------------------------------------

    def setup(self) -> None:
        """Apply every wall a child can inherit (the zygote never runs program code)."""
        for target in (0, 1, 2):
            os.dup2(self.devnull, target)
        os.chdir(self.workdir)
        if self.child_ids:
            os.setgroups([])
        for res, lim in self.zygote_rlimits:
            resource.setrlimit(res, lim)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        if self.seccomp is not None:
            install_filter(self.zygote_filter, "seccomp (zygote)")
        # os.fork reseeded random: give every program the same state (deterministic
        # phenotypes); children are forked without CPython's at-fork reseed.
        if self.random is not None:
            self.random.seed(0)
        # A child lives for one program: collecting cycles would only touch (and copy)
        # inherited pages. RLIMIT_AS still bounds what it can allocate.
        gc.collect()
        gc.freeze()
        gc.disable()

    # -- in the child ---------------------------------------------------------------------

    def restrict(self, wfd: int) -> None:
        """The per-child walls (before any program code runs); the rest is inherited."""
        os.closerange(3, wfd)
        os.closerange(wfd + 1, 1 << 16)
        resource.setrlimit(resource.RLIMIT_CPU, self.cpu_limit)
        namespaces.drop_privileges(self.child_ids, self.capset)
        if self.seccomp is not None:
            self.seccomp.install(os.getpid())

    # -- back in the zygote ---------------------------------------------------------------

    def fork_run(self, code: Any) -> tuple[tuple[Any, ...], bytes]:
        """Fork a child for one compiled program, enforce wall-clock and output caps, reap it.

        ``code`` is unmarshalled here, in the zygote, rather than in the child: the child
        then touches (copies) a few pages of a finished code object instead of faulting in
        fresh memory for every object it builds. Returns the fields of
        :data:`~jelm.programs.sandbox.wire.RES` after the job id, and the child's raw bytes.
        """
        # Everything the wait below needs is allocated before the fork: until the child
        # exits, each page the zygote writes is copied too.
        cfg = self.cfg
        cap = cfg.max_output_bytes + 4096
        chunks: list[bytes] = []
        size = 0
        timed_out = overflow = False
        r, w = os.pipe2(os.O_CLOEXEC)
        poller = select.poll()
        poller.register(r, select.POLLIN)
        t0 = time.monotonic()
        deadline = t0 + cfg.timeout_s
        pid = raw_fork()
        if pid == 0:  # child
            try:
                self.restrict(w)
            except BaseException:
                os._exit(EXIT_HARNESS_ERROR)
            self.runner.finish(code, w)
        os.close(w)
        if pid < 0:
            os.close(r)
            return (time.monotonic() - t0, 0, 0, FORK_FAILED, -1, 0, 0.0), b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not poller.poll(int(left * 1000) + 1):
                continue
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
            size += len(b)
            if size > cap:
                overflow = True
                break
        os.close(r)
        got = 0
        if not (timed_out or overflow):
            # EOF: the child exited (its address space is torn down before its fds are
            # closed, so it is normally reapable now) or it closed the pipe itself.
            got, status, ru = os.wait4(pid, os.WNOHANG)
            if not got:
                timed_out = not _wait_exit(pid, deadline)
        if not got:
            if timed_out or overflow:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _, status, ru = os.wait4(pid, 0)
        elapsed = time.monotonic() - t0
        self._clean_workdir()
        return (
            elapsed,
            timed_out,
            overflow,
            FORKED,
            os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
            os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
            ru.ru_utime + ru.ru_stime,
        ), b"" if overflow else b"".join(chunks)

    def _stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.workdir)
        return st.st_ctime_ns, st.st_mtime_ns, st.st_mode

    def _clean_workdir(self) -> None:
        """Empty the private work dir if the program touched it.

        Any change of an entry updates the directory's ctime, which (unlike mtime) a
        program cannot set back. If the dir cannot be restored the zygote exits: the
        parent then replaces the whole worker, fresh tmpfs included.
        """
        try:
            if self._stamp() == self.workdir_stamp:
                return
            for name in os.listdir(self.workdir):
                p = os.path.join(self.workdir, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
            os.chmod(self.workdir, 0o700)
            if os.listdir(self.workdir):
                raise OSError("work dir not empty after cleaning")
            self.workdir_stamp = self._stamp()
        except OSError:
            os._exit(EXIT_HARNESS_ERROR)

    def loop(self, job_fd: int, out_fd: int) -> None:
        """Fork one child per job received from the manager; write each result to ``out_fd``.

        ``out_fd`` is the parent's pipe: results go straight to the parent, without a relay
        through the manager. Jobs in: :data:`~jelm.programs.sandbox.wire.ZJOB` + body.
        Results out: ``OUT`` frames of kind ``KIND_RESULT`` holding ``RES`` + the child's
        raw bytes.
        """
        buf = bytearray()
        read, unpack, hsize = os.read, ZJOB.unpack_from, ZJOB.size
        while True:
            while len(buf) < hsize:
                b = read(job_fd, 1 << 16)
                if not b:
                    os._exit(0)
                buf += b
            kind, job_id, bl = unpack(buf)
            end = hsize + bl
            while len(buf) < end:
                b = read(job_fd, 1 << 16)
                if not b:
                    os._exit(0)
                buf += b
            body = bytes(buf[hsize:end])
            del buf[:end]
            if kind == JOB_RUN:
                fields, payload = self.fork_run(marshal.loads(body))
            else:
                fields, payload = (0.0, 0, 0, 0, 0, 0, 0.0), body
            write_all(
                out_fd,
                OUT.pack(KIND_RESULT, RES.size + len(payload))
                + RES.pack(job_id, *fields)
                + payload,
            )


def _wait_exit(pid: int, deadline: float) -> bool:
    """Wait (until ``deadline``) for a child that closed its result pipe; ``True`` if it died."""
    pidfd = os.pidfd_open(pid)
    try:
        left = deadline - time.monotonic()
        return left > 0 and bool(select.select([pidfd], [], [], left)[0])
    finally:
        os.close(pidfd)


# -- the worker ---------------------------------------------------------------------------


def import_modules(cfg: WorkerConfig) -> dict[str, Any]:
    """Pre-import every importable module (and its parents) so children never touch the
    disk, and install the module aliases; returns the module of every name an ``import``
    may bind (importable names and their parent packages)."""
    modules: dict[str, Any] = {}

    def add(name: str, module: Any) -> None:
        modules[name] = module
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            modules.setdefault(parent, sys.modules[parent])

    for name in cfg.imports:
        add(name, importlib.import_module(name))
    for alias, target in cfg.aliases.items():
        module = importlib.import_module(target)
        parent, _, leaf = alias.rpartition(".")
        if parent:  # so that ``import a.b.alias`` binds ``a`` with the alias reachable
            setattr(_package(parent), leaf, module)
        sys.modules[alias] = module  # so that unguarded imports find it too
        add(alias, module)
    return modules


def _package(name: str) -> Any:
    """The package ``name``, imported, or an empty stand-in if there is none."""
    try:
        return importlib.import_module(name)
    except ImportError:
        module = sys.modules[name] = types.ModuleType(name)
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(_package(parent), leaf, module)
        return module


def load_encoder(ref: str) -> Callable[[Any, Any], Any]:
    """The function a ``"module:function"`` reference names."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _spawn_zygote(zygote: Zygote, out_fd: int) -> tuple[int, int]:
    """Fork the zygote writing its results to ``out_fd``; return (pid, job pipe write end).

    In the zygote every fd but the job pipe, ``out_fd`` and ``/dev/null`` is closed (the
    parent's command pipe in particular).
    """
    job_r, job_w = os.pipe2(os.O_CLOEXEC)
    gc.collect()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(job_w)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            lo = 3
            for fd in sorted({job_r, out_fd, zygote.devnull}):
                if fd >= lo:
                    os.closerange(lo, fd)
                    lo = fd + 1
            os.closerange(lo, 1 << 16)
            zygote.setup()
            zygote.loop(job_r, out_fd)
        finally:
            os._exit(EXIT_HARNESS_ERROR)
    os.close(job_r)
    return pid, job_w


def _probe(zygote: Zygote) -> dict[str, Any]:
    """Run one trivial program through a throw-away zygote with every restriction.

    Returns the result fields (``exit`` 0 and a record on success).
    """
    res_r, res_w = os.pipe2(os.O_CLOEXEC)
    pid, job_w = _spawn_zygote(zygote, res_w)
    os.close(res_w)
    code, _ = zygote.runner.prepare(f"def {zygote.cfg.entry}():\n    return None\n")
    fields: dict[str, Any] = {"exit": None, "problem": "no answer"}
    try:
        write_all(job_w, job_frame(JOB_RUN, -1, marshal.dumps(code)))
        head = read_timeout(res_r, OUT.size, zygote.cfg.timeout_s + 5.0)
        if head is not None:
            _kind, size = OUT.unpack(head)
            body = read_timeout(res_r, size, 5.0) or b""
            if len(body) >= RES.size:
                _id, el, to, _ov, how, ex, sg, _cpu = RES.unpack_from(body)
                fields = {"exit": ex, "signal": sg, "timed_out": to, "how": how, "elapsed": el}
                fields["record"] = body[RES.size :].decode(errors="replace")[:500]
    except OSError as exc:
        fields["problem"] = str(exc)
    finally:
        os.close(job_w)
        os.close(res_r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return fields


def _isolate(cfg: WorkerConfig, layers: dict[str, Any], in_fd: int, out_fd: int) -> str:
    """Namespaces, pid 1, private root and privilege plan; returns the work dir."""
    ids = namespaces.nobody_ids() if cfg.drop_privileges else None
    if cfg.namespaces:
        try:
            new_pid = namespaces.setup_namespaces(layers)
        except OSError as exc:
            layers["problems"].append(f"namespaces: {exc}")
            new_pid = False
        if new_pid:
            sync_r, sync_w = os.pipe()
            inner = os.fork()
            if inner:  # outer: report the inner pid, then wait and mirror its exit
                os.close(sync_r)
                send_control(out_fd, {"kind": "inner_pid", "pid": inner})
                os.close(sync_w)
                os.close(in_fd)
                os.close(out_fd)
                _, st = os.waitpid(inner, 0)
                os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)
            os.close(sync_w)
            os.read(sync_r, 1)  # wait until the outer has sent our pid
            os.close(sync_r)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            layers["pid1"] = os.getpid() == 1
    else:
        layers["problems"].append("namespaces disabled by configuration")
    child_ids = ids or (os.getuid(), os.getgid())
    workdir = ""
    if "mount" in layers["namespaces"]:
        try:
            workdir = namespaces.setup_root(layers, cfg.tmp_mb, *child_ids)
        except OSError as exc:
            layers["problems"].append(f"private root: {exc}")
    if not workdir:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="jelm-sandbox-")
        os.chown(workdir, *child_ids)
        layers["filesystem"] = f"host filesystem; private dir {workdir} (no mount isolation)"
    if ids:
        layers["child_ids"] = list(ids)
    elif cfg.drop_privileges:  # no other uid to drop to (user namespace): drop capabilities
        layers["capabilities_dropped_by"] = "capset"
    return workdir


def serve(in_fd: int, out_fd: int) -> None:
    """Worker entry: read the config, pre-import, isolate, then run jobs until EOF."""
    init = read_message(in_fd)
    if init is None:
        return
    sys.path[:] = list(init["sys_path"])
    cfg: WorkerConfig = pickle.loads(init["config"])  # after sys.path: it holds domain types
    modules = import_modules(cfg)
    encode = load_encoder(cfg.encode)
    import linecache

    for mod in {id(m): m for m in modules.values()}.values():  # source lines in tracebacks
        fn = getattr(mod, "__file__", None)
        if fn:
            linecache.getlines(fn)
    layers: dict[str, Any] = {
        "namespaces": [],
        "filesystem": "host filesystem (no mount namespace)",
        "seccomp": False,
        "child_ids": None,
        "capabilities_dropped_by": None,
        "no_new_privs": True,
        "rlimits": list(RLIMITS),
        "pid1": False,
        "problems": [],
        "arch": os.uname().machine,
    }
    devnull = os.open(os.devnull, os.O_RDWR)
    workdir = _isolate(cfg, layers, in_fd, out_fd)
    runner = Runner(cfg, modules, encode)
    zygote = Zygote(runner, layers, devnull, workdir)
    if cfg.seccomp:
        if os.uname().machine == "x86_64":
            zygote.enable_seccomp()
            layers["seccomp"] = (
                "allow-list (classic BPF) installed once in the zygote + a per-child filter; "
                "fork/exec/ptrace kill the child"
            )
        else:
            layers["problems"].append(f"seccomp filter not built for {os.uname().machine}")
    else:
        layers["problems"].append("seccomp disabled by configuration")
    # Probe: one child with every restriction must start and report back.
    probe = _probe(zygote)
    if probe["exit"] != 0 and zygote.seccomp is not None:
        layers["problems"].append(f"seccomp probe failed ({probe}); seccomp disabled")
        zygote.disable_seccomp()
        layers["seccomp"] = False
        probe = _probe(zygote)
    if probe["exit"] != 0:
        layers["problems"].append(f"probe child failed: {probe}")
    send_control(out_fd, {"kind": "hello", "layers": layers, "probe": probe})
    # From here on the zygote writes results straight to the parent. The manager lets go of
    # its copy of the pipe, so if the zygote dies the parent sees EOF at once.
    _zygote_pid, job_w = _spawn_zygote(zygote, out_fd)
    os.close(out_fd)
    gc.collect()
    gc.freeze()
    gc.disable()  # parsing makes many short-lived, acyclic objects; collect now and then
    n_jobs = 0
    while True:
        msg = read_message(in_fd)
        if msg is None or msg[0] == "exit":
            return
        out = []
        for job_id, source in msg[1]:
            code, rec = runner.prepare(source)
            if rec is not None:
                out.append(job_frame(JOB_RECORD, job_id, json.dumps(rec).encode()))
            else:
                out.append(job_frame(JOB_RUN, job_id, marshal.dumps(code)))
        write_all(job_w, b"".join(out))  # EPIPE (the zygote died) ends the manager
        n_jobs += len(out)
        if n_jobs >= 2000:
            n_jobs = 0
            gc.collect()


def main() -> None:
    """Process entry point: move the pipes off fds 0/1 so stray prints cannot corrupt them."""
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    with contextlib.suppress(BrokenPipeError):
        serve(in_fd, out_fd)
    os._exit(0)


if __name__ == "__main__":
    main()
