"""Inside of the program sandbox: the worker process, its per-program child, and the walls.

ELM (Lehman et al., 2022, §3) treats programs as genotypes: every candidate the language
model writes is executed to obtain its phenotype (here a Sodarace walker). Those programs
are untrusted, so this module is the part of :mod:`jelm.programs.sandbox` that runs on the
far side of the process boundary. It is imported by the worker processes (and, for the
static guard, by the parent); it has no dependency beyond the standard library and
``jelm.domains.sodarace.api``, and never imports jax.

Layout of one worker (started by the parent as ``python -I -S -c ...``)::

    outer process (root pid namespace)            waits for the inner one, relays its exit
      inner process = pid 1 of a new pid namespace, new mount/net/ipc/uts namespaces,
      |               private tmpfs root (pivot_root), pre-imported walker API
      +-- child per program (fork): rlimits, uid nobody, no_new_privs, seccomp filter,
                                    audit hook, AST guard, restricted builtins, then exec

The worker never executes untrusted code itself; it only forks, waits, kills and relays
the child's raw result bytes to the parent, which parses and re-validates them.

Wire format (both directions): frames of ``>II`` (header length, payload length) followed
by the header and the payload. Parent -> worker headers are pickles from the trusted
parent; worker -> parent headers are JSON; the payload is the child's untrusted bytes.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import gc
import json
import marshal
import os
import pickle
import re
import resource
import select
import shutil
import signal
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any

# ----------------------------------------------------------------------------------------
# Static guard (AST). Used in the child before compiling, and importable by the parent.
# ----------------------------------------------------------------------------------------

DEFAULT_ALLOWED_IMPORTS: tuple[str, ...] = ("math", "random", "jelm.domains.sodarace.api")

#: Builtins a program may not call or even name: they reach files, code execution,
#: interpreter state or introspection that leads out of the restricted namespace.
FORBIDDEN_BUILTINS: frozenset[str] = frozenset(
    {
        "open",
        "exec",
        "eval",
        "compile",
        "__import__",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
        "help",
        "exit",
        "quit",
        "memoryview",
        "__build_class__",
        "__loader__",
        "__spec__",
        "__builtins__",
    }
)

#: Attribute names (besides anything starting with ``_``) that expose frames, code objects
#: or globals: the classic ways out of a restricted namespace without a dunder.
FORBIDDEN_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
        "co_code",
        "func_globals",
        "mro",
    }
)

#: Builtins that take an attribute name; with a constant name the guard checks it
#: statically, with a computed one the runtime replacement checks it.
_ATTR_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
_DUNDER_RE = re.compile(r"__\w+__")


class GuardViolation(Exception):
    """A program tried something the sandbox refuses (statically or at run time)."""


#: Dunder attributes a program may use (``super().__init__(...)`` in its own classes).
#: Defining dunder methods (``def __init__``, ``def __str__``) is always allowed.
SAFE_DUNDER_ATTRIBUTES: frozenset[str] = frozenset({"__init__"})


def _attr_refused(name: str) -> bool:
    """Whether an attribute name is off limits (private, dunder, or frame/code access)."""
    if name in SAFE_DUNDER_ATTRIBUTES:
        return False
    return name.startswith("_") or name in FORBIDDEN_ATTRIBUTES


def _module_allowed(name: str, allowed: Iterable[str]) -> bool:
    """Whether ``import name`` is permitted: exact allow-list entries only."""
    return name in set(allowed)


#: Fields that never hold a node (identifiers, flags, constants' values, contexts): the
#: walk skips them. Every other field is read and its nodes visited, as ``ast.walk`` does.
_LEAF_FIELDS = frozenset(
    {
        "ctx", "id", "attr", "arg", "name", "asname", "module", "level", "is_async",
        "conversion", "kind", "type_comment", "simple", "kwd_attrs", "rest", "n", "s",
        "lineno", "tag",
    }
)  # fmt: skip
_NODE_FIELDS: dict[type, tuple[str, ...]] = {}
#: Nodes that bind a plain identifier (not an ``ast.Name``): a dunder there could rebind
#: ``__builtins__`` and the like, so it is refused like a dunder ``Name``.
_BINDING_NODES = (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)


def _node_fields(t: type) -> tuple[str, ...]:
    fields = _NODE_FIELDS.get(t)
    if fields is None:
        fields = _NODE_FIELDS[t] = tuple(f for f in t._fields if f not in _LEAF_FIELDS)
    return fields


def check_tree(
    tree: ast.AST, allowed_imports: Iterable[str] = DEFAULT_ALLOWED_IMPORTS
) -> str | None:
    """Return the reason the static guard refuses a parsed program, or ``None`` if it passes.

    The guard is the sandbox's second wall (the OS layer is the first): it refuses imports
    outside ``allowed_imports``, the builtins in :data:`FORBIDDEN_BUILTINS`, any name or
    attribute starting with ``_`` (dunders such as ``__class__``/``__subclasses__``/
    ``__globals__``, and private module members such as ``random._os``), frame and code
    attributes, ``getattr``-family calls with a refused constant name, string constants
    that spell a dunder, ``match`` class patterns on refused attributes
    (``case object(__class__=c)`` reads ``__class__``), and dunder names bound by
    ``except ... as`` or ``match`` captures.

    Nodes are visited breadth-first in ``ast.walk`` order (so the reason reported is the
    one ``ast.walk`` would meet first), with a hand-written loop about 4x faster than
    ``ast.walk``: the guard runs on every program the ELM loop executes.
    """
    allowed = frozenset(allowed_imports)
    Name, Attribute, Constant, Call = ast.Name, ast.Attribute, ast.Constant, ast.Call
    AST = ast.AST
    todo = [tree]
    append = todo.append
    i = 0
    while i < len(todo):
        node = todo[i]
        i += 1
        t = type(node)
        if t is Name:
            ident = node.id
            if ident in FORBIDDEN_BUILTINS:
                return f"use of {ident!r} is not allowed"
            if ident.startswith("__") and ident != "__name__":
                return f"use of dunder name {ident!r} is not allowed"
            continue  # only ctx below
        if t is Constant:
            value = node.value
            if isinstance(value, str | bytes):
                text = value if isinstance(value, str) else value.decode("latin-1")
                match = _DUNDER_RE.search(text)
                if match:
                    return f"string constant spelling dunder {match.group(0)!r} is not allowed"
            continue  # no child nodes
        if t is Attribute:
            if _attr_refused(node.attr):
                return f"access to attribute {node.attr!r} is not allowed"
            append(node.value)
            continue
        if t is Call:
            func = node.func
            if type(func) is Name and func.id in _ATTR_BUILTINS and len(node.args) >= 2:
                arg = node.args[1]
                if (
                    isinstance(arg, Constant)
                    and isinstance(arg.value, str)
                    and _attr_refused(arg.value)
                ):
                    return f"{func.id}() of attribute {arg.value!r} is not allowed"
        elif t is ast.Import:
            for alias in node.names:
                if alias.name not in allowed:
                    return f"import of module {alias.name!r} is not allowed"
                if alias.asname and alias.asname.startswith("_"):
                    return f"import alias {alias.asname!r} is not allowed"
        elif t is ast.ImportFrom:
            if node.level:
                return "relative imports are not allowed"
            if (node.module or "") not in allowed:
                return f"import from module {node.module!r} is not allowed"
            for alias in node.names:
                if alias.name != "*" and alias.name.startswith("_"):
                    return f"import of private name {alias.name!r} is not allowed"
        elif t is ast.MatchClass:
            for attr in node.kwd_attrs:
                if _attr_refused(attr):
                    return f"match pattern on attribute {attr!r} is not allowed"
        elif t is ast.MatchMapping:
            if node.rest and node.rest.startswith("__"):
                return f"binding dunder name {node.rest!r} is not allowed"
        elif isinstance(node, _BINDING_NODES) and node.name and node.name.startswith("__"):
            return f"binding dunder name {node.name!r} is not allowed"
        for field in _NODE_FIELDS.get(t) or _node_fields(t):
            value = getattr(node, field, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, AST):
                        append(item)
            elif isinstance(value, AST):
                append(value)
    return None


def check_source(
    source: str, allowed_imports: Iterable[str] = DEFAULT_ALLOWED_IMPORTS
) -> str | None:
    """Parse ``source`` and run :func:`check_tree`; a syntax error is returned as a reason.

    Convenience for callers (e.g. the ELM loop) that want to pre-filter programs without
    executing them. The sandbox itself runs the same check inside the child process.
    """
    try:
        tree = ast.parse(source, "<program>")
    except (SyntaxError, ValueError) as exc:
        return f"syntax error: {exc}"
    return check_tree(tree, allowed_imports)


# ----------------------------------------------------------------------------------------
# Seccomp (x86_64) built by hand: a small classic-BPF allow-list.
# ----------------------------------------------------------------------------------------

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E

#: Refused system calls come back as ``OSError(errno=ERRNO_BASE + syscall_number)``, so the
#: child can report which call the kernel refused ("Unknown error 1065" = socket).
ERRNO_BASE = 1024

#: Exit codes the child harness uses when it cannot write its result.
EXIT_NO_MEMORY = 71
EXIT_HARNESS_ERROR = 70

X86_64_SYSCALLS: dict[str, int] = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
    "poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
    "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16,
    "pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "pipe": 22,
    "select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27,
    "madvise": 28, "dup": 32, "dup2": 33, "nanosleep": 35, "getitimer": 36, "alarm": 37,
    "setitimer": 38, "getpid": 39, "socket": 41, "connect": 42, "accept": 43, "sendto": 44,
    "recvfrom": 45, "bind": 49, "listen": 50, "socketpair": 53, "clone": 56, "fork": 57,
    "vfork": 58, "execve": 59, "exit": 60, "wait4": 61, "kill": 62, "uname": 63,
    "fcntl": 72, "flock": 73, "fsync": 74, "fdatasync": 75, "truncate": 76,
    "ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81,
    "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86, "unlink": 87,
    "symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91, "chown": 92, "umask": 95,
    "gettimeofday": 96, "getrlimit": 97, "getrusage": 98, "sysinfo": 99, "times": 100,
    "ptrace": 101, "getuid": 102, "getgid": 104, "setuid": 105, "setgid": 106,
    "geteuid": 107, "getegid": 108, "setpgid": 109, "getppid": 110, "getpgrp": 111,
    "setsid": 112, "getgroups": 115, "sigaltstack": 131, "personality": 135,
    "prctl": 157, "chroot": 161, "mount": 165, "umount2": 166, "reboot": 169,
    "gettid": 186, "tkill": 200, "futex": 202, "sched_getaffinity": 204,
    "getdents64": 217, "set_tid_address": 218, "restart_syscall": 219,
    "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231,
    "tgkill": 234, "openat": 257, "mkdirat": 258, "newfstatat": 262, "unlinkat": 263,
    "renameat": 264, "readlinkat": 267, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "unshare": 272, "set_robust_list": 273, "dup3": 292, "pipe2": 293, "prlimit64": 302,
    "setns": 308, "getcpu": 309, "process_vm_readv": 310, "process_vm_writev": 311,
    "getrandom": 318, "execveat": 322, "bpf": 321, "statx": 332, "rseq": 334,
    "pidfd_send_signal": 424, "io_uring_setup": 425, "clone3": 435, "close_range": 436,
    "capset": 126, "utimensat": 280, "setgroups": 116, "setresuid": 117, "setresgid": 119,
    "pidfd_open": 434, "faccessat2": 439,
}  # fmt: skip

#: What a program may do: memory, time, its own files in the private directory, exit.
ALLOWED_SYSCALLS: tuple[str, ...] = (
    "read", "write", "open", "close", "stat", "fstat", "lstat", "poll", "lseek", "mmap",
    "mprotect", "munmap", "brk", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
    "pread64", "pwrite64", "readv", "writev", "access", "select", "sched_yield", "mremap",
    "msync", "mincore", "madvise", "dup", "dup2", "dup3", "nanosleep", "getpid", "exit",
    "uname", "fcntl", "fsync", "fdatasync", "truncate", "ftruncate", "getdents", "getcwd",
    "chdir", "fchdir", "rename", "mkdir", "rmdir", "creat", "unlink", "readlink", "umask",
    "gettimeofday", "getrlimit", "getrusage", "sysinfo", "times", "getuid", "getgid",
    "geteuid", "getegid", "getppid", "getpgrp", "getgroups", "sigaltstack", "gettid",
    "futex", "sched_getaffinity", "getdents64", "set_tid_address", "restart_syscall",
    "clock_gettime", "clock_getres", "clock_nanosleep", "exit_group", "openat", "mkdirat",
    "newfstatat", "unlinkat", "renameat", "readlinkat", "faccessat", "faccessat2",
    "pselect6", "ppoll", "set_robust_list", "prlimit64", "getcpu", "getrandom", "statx",
    "rseq", "close_range",
)  # fmt: skip

#: Never legitimate for a walker program: the child is killed on the spot (SIGSYS), which
#: the parent reports as a forbidden operation (process creation / exec / tracing).
KILL_SYSCALLS: tuple[str, ...] = (
    "clone", "clone3", "fork", "vfork", "execve", "execveat", "ptrace",
    "process_vm_readv", "process_vm_writev",
)  # fmt: skip

#: Signal-sending calls: allowed only with the child's own pid as first argument.
SELF_ONLY_SYSCALLS: tuple[str, ...] = ("kill", "tkill", "tgkill")

_SYSCALL_NAMES = {v: k for k, v in X86_64_SYSCALLS.items()}
_PID_PLACEHOLDER = 0x7AB1D00D


def syscall_name(nr: int) -> str:
    """Human name of an x86_64 system call number (for refusal messages)."""
    return _SYSCALL_NAMES.get(nr, f"syscall #{nr}")


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build_seccomp_filter() -> tuple[bytes, list[int]]:
    """Build the child's whole seccomp policy as one BPF program (pid placeholder offsets).

    Policy: wrong architecture or x32 ABI -> kill; process creation/exec/ptrace -> kill;
    kill/tkill/tgkill -> allowed only on the child's own pid; the allow-list -> allowed;
    anything else -> ``errno = ERRNO_BASE + nr`` so the refusal can be named. The sandbox
    installs the same policy in two stacked parts (:func:`build_zygote_filter` once in the
    zygote, :func:`build_child_filter` per child); this single program is the reference
    the tests compare that pair against.
    """
    return _build_filter(ALLOWED_SYSCALLS, KILL_SYSCALLS, self_only=True)


#: System calls the zygote needs that a program may not make: the child's own filter
#: refuses them (clone is killed there) so the pair is exactly the child policy above.
ZYGOTE_EXTRA_SYSCALLS: tuple[str, ...] = (
    "clone", "kill", "tkill", "tgkill", "wait4", "pidfd_open", "pipe2", "prctl",
    "setresuid", "setresgid", "setgroups", "setuid", "setgid", "capset", "chmod",
)  # fmt: skip


def build_zygote_filter() -> bytes:
    """The zygote's filter, installed once and inherited by every child.

    The child allow-list plus what the zygote itself needs to fork, reap and drop a child's
    privileges (:data:`ZYGOTE_EXTRA_SYSCALLS`); exec, ptrace and the other ways out are
    killed here already. Each child stacks :func:`build_child_filter` on top; the kernel
    applies the strictest answer of the two, which is the policy of
    :func:`build_seccomp_filter`.
    """
    kill = tuple(n for n in KILL_SYSCALLS if n != "clone")
    prog, _ = _build_filter((*ALLOWED_SYSCALLS, *ZYGOTE_EXTRA_SYSCALLS), kill, self_only=False)
    return prog


def build_child_filter() -> tuple[bytes, int]:
    """The per-child filter (a few instructions; the zygote's filter does the rest).

    Kills process creation, exec and tracing; allows kill/tkill/tgkill only on the child's
    own pid (a placeholder patched in per child: returns the offset of that constant);
    refuses the zygote-only calls with ``ERRNO_BASE + nr``; allows the rest (which the
    zygote's allow-list still filters). Short on purpose: the kernel validates, JITs and
    builds its action cache per installation, and that cost grows with the length.
    """
    ld_w_abs, jeq_k, ret_k, ret_a, alu_add_k = 0x20, 0x15, 0x06, 0x16, 0x04
    deny = [
        X86_64_SYSCALLS[n]
        for n in ZYGOTE_EXTRA_SYSCALLS
        if n not in ALLOWED_SYSCALLS and n not in KILL_SYSCALLS and n not in SELF_ONLY_SYSCALLS
    ]
    kill = [X86_64_SYSCALLS[n] for n in KILL_SYSCALLS]
    self_only = [X86_64_SYSCALLS[n] for n in SELF_ONLY_SYSCALLS]
    # layout: ld nr | kill checks | self-only jumps | deny jumps | ALLOW |
    #         pid check (5) | err: ld nr ; add ; ret A
    n_kill, n_self, n_deny = 2 * len(kill), len(self_only), len(deny)
    pidchk = 1 + n_kill + n_self + n_deny + 1  # index of the pid check block
    err = pidchk + 5
    prog: list[bytes] = [_bpf(ld_w_abs, 0)]
    for nr in kill:
        prog += [_bpf(jeq_k, nr, 0, 1), _bpf(ret_k, SECCOMP_RET_KILL_PROCESS)]
    for nr in self_only:
        here = len(prog)
        prog.append(_bpf(jeq_k, nr, pidchk - here - 1, 0))
    for nr in deny:
        here = len(prog)
        prog.append(_bpf(jeq_k, nr, err - here - 1, 0))
    prog.append(_bpf(ret_k, SECCOMP_RET_ALLOW))
    assert len(prog) == pidchk
    pid_slot = len(prog) + 1
    prog += [
        _bpf(ld_w_abs, 16),  # low half of arg0 ...
        _bpf(jeq_k, _PID_PLACEHOLDER, 0, 3),  # ... is not our pid -> err
        _bpf(ld_w_abs, 20),  # high half of arg0 ...
        _bpf(jeq_k, 0, 0, 1),  # ... is not 0 -> err
        _bpf(ret_k, SECCOMP_RET_ALLOW),
    ]
    assert len(prog) == err
    prog += [
        _bpf(ld_w_abs, 0),
        _bpf(alu_add_k, SECCOMP_RET_ERRNO | ERRNO_BASE),
        _bpf(ret_a, 0),
    ]
    return b"".join(prog), 8 * pid_slot + 4


def _build_filter(
    allowed: Iterable[str], kill: Iterable[str], *, self_only: bool
) -> tuple[bytes, list[int]]:
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    ret_a, alu_add_k = 0x16, 0x04
    prog: list[bytes] = []
    pid_slots: list[int] = []
    prog.append(_bpf(ld_w_abs, 4))  # A = arch
    prog.append(_bpf(jeq_k, AUDIT_ARCH_X86_64, 1, 0))
    prog.append(_bpf(ret_k, SECCOMP_RET_KILL_PROCESS))
    prog.append(_bpf(ld_w_abs, 0))  # A = nr
    prog.append(_bpf(jge_k, 0x40000000, 0, 1))  # x32 ABI
    prog.append(_bpf(ret_k, SECCOMP_RET_KILL_PROCESS))
    for name in kill:
        prog.append(_bpf(jeq_k, X86_64_SYSCALLS[name], 0, 1))
        prog.append(_bpf(ret_k, SECCOMP_RET_KILL_PROCESS))
    if self_only:
        for name in SELF_ONLY_SYSCALLS:
            nr = X86_64_SYSCALLS[name]
            prog.append(_bpf(jeq_k, nr, 0, 6))
            prog.append(_bpf(ld_w_abs, 16))  # low half of arg0
            pid_slots.append(len(prog))
            prog.append(_bpf(jeq_k, _PID_PLACEHOLDER, 0, 3))
            prog.append(_bpf(ld_w_abs, 20))  # high half of arg0
            prog.append(_bpf(jeq_k, 0, 0, 1))
            prog.append(_bpf(ret_k, SECCOMP_RET_ALLOW))
            prog.append(_bpf(ret_k, SECCOMP_RET_ERRNO | (ERRNO_BASE + nr)))
    # The allow-list as ranges of consecutive numbers: a short filter is JIT-compiled faster.
    jgt_k = 0x25
    nrs = sorted({X86_64_SYSCALLS[name] for name in allowed})
    ranges: list[list[int]] = []
    for nr in nrs:
        if ranges and nr == ranges[-1][1] + 1:
            ranges[-1][1] = nr
        else:
            ranges.append([nr, nr])
    for lo, hi in ranges:
        if lo == hi:
            prog.append(_bpf(jeq_k, lo, 0, 1))
        else:
            prog.append(_bpf(jge_k, lo, 0, 2))
            prog.append(_bpf(jgt_k, hi, 1, 0))
        prog.append(_bpf(ret_k, SECCOMP_RET_ALLOW))
    prog.append(_bpf(alu_add_k, SECCOMP_RET_ERRNO | ERRNO_BASE))  # A = ERRNO | base + nr
    prog.append(_bpf(ret_a, 0))
    offsets = [8 * i + 4 for i in pid_slots]  # the k field of each pid comparison
    return b"".join(prog), offsets


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


# ----------------------------------------------------------------------------------------
# Namespaces, mounts and privileges (ctypes on libc).
# ----------------------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155
SYS_CAPSET = 126

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
#: ``fork`` called with the GIL held and without CPython's at-fork machinery: the worker is
#: single-threaded, so the interpreter state the child inherits is consistent, and skipping
#: ``PyOS_AfterFork_Child`` (thread bookkeeping, random's reseed, ...) saves the child
#: ~150 copy-on-write page faults (measured: 1.3 ms -> 0.65 ms per fork+exit on 2 cores).
_raw_fork = ctypes.PyDLL("libc.so.6", use_errno=True).fork
_raw_fork.restype = ctypes.c_int
_raw_fork.argtypes = ()
_libc.mount.argtypes = (ctypes.c_char_p,) * 3 + (ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.prctl.argtypes = (
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = lambda s: None if s is None else s.encode()
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _setup_namespaces(layers: dict[str, Any]) -> bool:
    """Unshare user (if not root), mount, net, ipc, uts and pid namespaces; record them.

    Returns whether a new pid namespace was created (the caller must then fork once so the
    worker loop runs as its pid 1).
    """
    uid, gid = os.getuid(), os.getgid()
    wanted = {
        "mount": CLONE_NEWNS,
        "net": CLONE_NEWNET,
        "ipc": CLONE_NEWIPC,
        "uts": CLONE_NEWUTS,
        "pid": CLONE_NEWPID,
    }
    if uid != 0:
        if _libc.unshare(CLONE_NEWUSER) == 0:
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"0 {uid} 1")
            _write_file("/proc/self/gid_map", f"0 {gid} 1")
            layers["namespaces"].append("user")
        else:
            layers["problems"].append(f"user namespace: {os.strerror(ctypes.get_errno())}")
    flags = 0
    for v in wanted.values():
        flags |= v
    if _libc.unshare(flags) == 0:
        layers["namespaces"].extend(wanted)
    else:  # try one at a time to learn what is missing
        for name, flag in wanted.items():
            if _libc.unshare(flag) == 0:
                layers["namespaces"].append(name)
            else:
                layers["problems"].append(f"{name} namespace: {os.strerror(ctypes.get_errno())}")
    return "pid" in layers["namespaces"]


def _setup_root(layers: dict[str, Any], tmp_mb: int, child_uid: int, child_gid: int) -> str:
    """Pivot into a private tmpfs root holding only ``/w`` (the program's work dir).

    The new root is read-only and empty but for ``/w``, a size- and inode-limited tmpfs
    owned by the child's uid; the host filesystem is detached entirely, so neither root nor
    nobody can read or write it from a child. Returns the work directory's path.
    """
    base = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    _mount("jelm-sandbox", base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=256k,mode=755")
    os.mkdir(base + "/w", 0o700)
    opts = f"size={tmp_mb}m,nr_inodes=1024,mode=700,uid={child_uid},gid={child_gid}"
    _mount("jelm-work", base + "/w", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    os.mkdir(base + "/old", 0o700)
    _check(_libc.syscall(SYS_PIVOT_ROOT, (base).encode(), (base + "/old").encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/old", MNT_DETACH), "umount old root")
    os.rmdir("/old")
    _mount(
        None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None
    )
    layers["filesystem"] = "private tmpfs root (pivot_root), host fs detached; /w writable"
    return "/w"


def _nobody_ids() -> tuple[int, int] | None:
    """The uid/gid children drop to, if this process can change uid (root, not in userns)."""
    if os.getuid() != 0:
        return None
    try:
        with open("/proc/self/uid_map") as f:
            full = any(line.split()[2] == "4294967295" for line in f if line.strip())
    except OSError:
        full = True
    if not full:  # a user namespace with a single mapping: no other uid exists
        return None
    return 65534, 65534


# ----------------------------------------------------------------------------------------
# The child: restrictions, then the program.
# ----------------------------------------------------------------------------------------


class _Config:
    """Per-worker settings sent by the parent (plain attributes from a dict)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.timeout_s: float = d["timeout_s"]
        self.cpu_s: int = d["cpu_s"]
        self.memory_bytes: int = d["memory_bytes"]
        self.max_output_bytes: int = d["max_output_bytes"]
        self.max_file_bytes: int = d["max_file_bytes"]
        self.max_open_files: int = d["max_open_files"]
        self.max_source_chars: int = d["max_source_chars"]
        self.tmp_mb: int = d["tmp_mb"]
        self.allowed_imports: tuple[str, ...] = tuple(d["allowed_imports"])
        self.guard: bool = d["guard"]
        self.audit_hook: bool = d["audit_hook"]
        self.seccomp: bool = d["seccomp"]
        self.namespaces: bool = d["namespaces"]
        self.drop_privileges: bool = d["drop_privileges"]
        self.walker_limits: Any = d["walker_limits"]
        self.walker_module: str = d["walker_module"]


class _OutputTooLarge(BaseException):
    """Raised when a program prints more than the output cap (not catchable as Exception)."""


#: Per-child mutable state. The worker never runs programs, so its copy stays pristine and
#: every forked child starts from it (copy-on-write).
_STATE: dict[str, Any] = {"refused": [], "output_overflow": False, "exec_budget": 1}


class _CappedWriter:
    """Stand-in for ``sys.stdout``/``sys.stderr`` that counts and drops, up to a cap."""

    def __init__(self, cap: int) -> None:
        self._left = cap

    def write(self, s: Any) -> int:
        n = len(s) if isinstance(s, str | bytes) else 0
        self._left -= n
        if self._left < 0:
            _STATE["output_overflow"] = True
            raise _OutputTooLarge("program output exceeds the cap")
        return n

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


def _safe_str(obj: Any, limit: int = 2000) -> str:
    """``str(obj)`` that survives hostile ``__str__`` methods and truncates."""
    try:
        text = str(obj)
        if not isinstance(text, str):
            raise TypeError("__str__ returned non-string")
    except BaseException as exc:  # the object's __str__ is untrusted
        try:
            text = f"<unprintable: __str__ raised {type(exc).__name__}>"
        except BaseException:
            text = "<unprintable>"
    return text[:limit]


def _type_name(obj: Any) -> str:
    """Name of ``type(obj)`` read without calling anything the program defined."""
    try:
        name = type.__dict__["__name__"].__get__(type(obj))
        return str.__str__(name)[:200] if isinstance(name, str) else "<unknown>"
    except BaseException:
        return "<unknown>"


def _refuse(what: str) -> GuardViolation:
    _STATE["refused"].append(what)
    return GuardViolation(f"operation refused by the sandbox: {what}")


def _make_builtins(allowed_imports: tuple[str, ...], modules: dict[str, Any]) -> dict[str, Any]:
    """The builtins a guarded program sees: no file/exec/introspection, checked imports."""
    import builtins as _b

    safe = {k: v for k, v in vars(_b).items() if k not in FORBIDDEN_BUILTINS}
    real_getattr, real_setattr, real_delattr, real_hasattr = getattr, setattr, delattr, hasattr
    allowed = frozenset(allowed_imports)

    def guarded_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        if level or name not in allowed:
            raise _refuse(f"import of module {_safe_str(name, 80)!r}")
        for item in fromlist or ():
            if not isinstance(item, str) or item.startswith("_"):
                raise _refuse(f"import of private name {_safe_str(item, 80)!r} from {name!r}")
        if fromlist:
            return modules[name]
        return modules[name.partition(".")[0]]

    def check(name: Any, fn: str) -> None:
        if not isinstance(name, str) or _attr_refused(name):
            raise _refuse(f"{fn}() of attribute {_safe_str(name, 80)!r}")

    def safe_getattr(obj: Any, name: Any, *default: Any) -> Any:
        check(name, "getattr")
        return real_getattr(obj, name, *default)

    def safe_hasattr(obj: Any, name: Any) -> bool:
        check(name, "hasattr")
        return real_hasattr(obj, name)

    def safe_setattr(obj: Any, name: Any, value: Any) -> None:
        check(name, "setattr")
        real_setattr(obj, name, value)

    def safe_delattr(obj: Any, name: Any) -> None:
        check(name, "delattr")
        real_delattr(obj, name)

    safe.update(
        __import__=guarded_import,
        __build_class__=_b.__build_class__,
        getattr=safe_getattr,
        hasattr=safe_hasattr,
        setattr=safe_setattr,
        delattr=safe_delattr,
    )
    return safe


#: Audit events a running program may raise; everything else is refused (runtime guard).
_AUDIT_ALLOWED = frozenset({"time.sleep"})
_AUDIT_NAMED = frozenset(
    {"open", "os.system", "subprocess.Popen", "os.kill", "import", "socket.connect"}
)


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    """Refuse every audited runtime event (open, os.system, socket, ctypes, ...) but one exec."""
    if event in _AUDIT_ALLOWED:
        return
    if event == "exec" and _STATE["exec_budget"] > 0:
        _STATE["exec_budget"] -= 1
        return
    what = event
    if event in _AUDIT_NAMED and args:
        what = f"{event} {_safe_str(args[0], 120)}"
    raise _refuse(what)


#: Built once (in the worker, before any fork): ``json.dumps`` with options builds a new
#: encoder per call, and every object that touches is a page a child would copy.
_ENCODER = json.JSONEncoder(allow_nan=False, default=_safe_str)


def _rec(status: str, error: str = "", detail: str = "", walker: Any = None) -> dict[str, Any]:
    return {"status": status, "error": error, "detail": detail, "walker": walker}


class _Runner:
    """Everything a worker prepares once so that each forked child does as little as possible.

    Forking is cheap; what costs in a child is every page it touches (copy-on-write faults
    cost ~2.5 us each in this VM) and every Python call it makes before the program runs.
    So the source is parsed, guarded and compiled in the manager (no program code runs
    there); the zygote applies once everything a child can inherit (fds 0-2 on /dev/null,
    the work dir, every rlimit but CPU, no_new_privs, the seccomp allow-list, a frozen and
    disabled collector); a child only sets its CPU limit, drops its uid and stacks its
    small seccomp filter.
    """

    def __init__(
        self,
        cfg: _Config,
        layers: dict[str, Any],
        modules: dict[str, Any],
        devnull: int,
        workdir: str,
    ) -> None:
        self.cfg = cfg
        self.layers = layers
        self.modules = modules
        self.devnull = devnull
        self.workdir = workdir
        self.walker_api = modules[cfg.walker_module]
        self.builtins = _make_builtins(cfg.allowed_imports, modules) if cfg.guard else None
        self.seccomp = False
        self.capset = bool(layers.get("capabilities_dropped_by") == "capset")
        self.child_ids = layers.get("child_ids")
        rl = resource
        #: Set once in the zygote and inherited: none of them hinders the zygote itself
        #: (its address space is ~20 MB, it writes only to pipes, keeps < 10 fds open).
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
        self.nproc_in_zygote = bool(self.child_ids)
        if self.nproc_in_zygote:
            self.zygote_rlimits.append((rl.RLIMIT_NPROC, (0, 0)))
        #: CPU time is per process and the zygote's own accumulates: set in each child.
        self.cpu_limit = (cfg.cpu_s, cfg.cpu_s + 1)
        self.workdir_stamp = self._stamp()

    def enable_seccomp(self) -> None:
        """Build both filters; the child's stays in ctypes memory, patched with each pid."""
        self.seccomp = True
        self.zygote_filter = build_zygote_filter()
        prog, self.pid_offset = build_child_filter()
        self.child_buf = bytearray(prog)
        self._cbuf = (ctypes.c_char * len(prog)).from_buffer(self.child_buf)
        self._fprog = _SockFprog(len(prog) // 8, ctypes.addressof(self._cbuf))
        self.fprog_addr = ctypes.addressof(self._fprog)

    def disable_seccomp(self) -> None:
        self.seccomp = False

    # -- in the manager -------------------------------------------------------------------

    def prepare(self, source: Any) -> tuple[Any, dict[str, Any] | None]:
        """Parse, guard and compile in the worker; return (code, None) or (None, record)."""
        cfg = self.cfg
        if not isinstance(source, str):
            return None, _rec("wrong_type", "program is not a str", "source")
        if len(source) > cfg.max_source_chars:
            return None, _rec(
                "forbidden",
                f"program has {len(source)} characters (max {cfg.max_source_chars})",
                "source_too_large",
            )
        try:
            tree = ast.parse(source, "<program>")
            if cfg.guard:
                reason = check_tree(tree, cfg.allowed_imports)
                if reason:
                    return None, _rec("forbidden", f"static guard: {reason}", reason)
            return compile(tree, "<program>", "exec"), None
        except SyntaxError as exc:
            msg = f"{type(exc).__name__}: {exc.msg} (line {exc.lineno})"
            return None, _rec("syntax_error", msg, type(exc).__name__)
        except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
            return None, _rec(
                "syntax_error", f"{type(exc).__name__}: {_safe_str(exc)}", type(exc).__name__
            )

    # -- in the zygote, once --------------------------------------------------------------

    def zygote_setup(self) -> None:
        """Apply every wall a child can inherit (the zygote never runs program code)."""
        for target in (0, 1, 2):
            os.dup2(self.devnull, target)
        os.chdir(self.workdir)
        if self.child_ids:
            os.setgroups([])
        for res, lim in self.zygote_rlimits:
            resource.setrlimit(res, lim)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        if self.seccomp:
            prog = self.zygote_filter
            buf = ctypes.create_string_buffer(prog, len(prog))
            fprog = _SockFprog(len(prog) // 8, ctypes.addressof(buf))
            _check(
                _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0),
                "seccomp (zygote)",
            )
        # os.fork reseeded random: give every program the same state (deterministic
        # phenotypes); children are forked without CPython's at-fork reseed.
        rnd = self.modules.get("random")
        if rnd is not None:
            rnd.seed(0)
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
        if self.child_ids:
            uid, gid = self.child_ids
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        else:
            if self.capset:
                hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
                data = (ctypes.c_uint32 * 6)()
                _check(_libc.syscall(SYS_CAPSET, hdr, data), "capset")
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        if self.seccomp:
            struct.pack_into("=I", self.child_buf, self.pid_offset, os.getpid())
            _check(
                _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self.fprog_addr, 0, 0), "seccomp"
            )

    def run(self, code: Any, entry: str) -> dict[str, Any] | bytes:
        """Run one compiled program's ``entry()`` in the restricted child; return its record.

        Statuses follow the parent's ``Status`` values; a walker comes back already encoded.
        The parent trusts none of this: it re-validates any walker.
        """
        cfg = self.cfg
        sys.stdout = sys.stderr = _CappedWriter(cfg.max_output_bytes)  # type: ignore[assignment]
        import builtins as _b

        g: dict[str, Any] = {"__builtins__": self.builtins or _b, "__name__": "__program__"}
        walker_api = self.walker_api
        try:
            if cfg.audit_hook:
                sys.addaudithook(_audit_hook)
            exec(code, g)
            fn = g.get(entry)
            if not callable(fn):
                return _rec(
                    "exception",
                    f"NameError: the program defines no callable {entry!r}",
                    "NameError",
                )
            value = fn()
            if _STATE["output_overflow"]:
                return _rec(
                    "output_too_large", "program printed more than the output cap", "stdout"
                )
            if _STATE["refused"]:
                return _rec(
                    "forbidden", f"operation refused: {_STATE['refused'][0]}", _STATE["refused"][0]
                )
            if not isinstance(value, walker_api.Walker):
                tn = _type_name(value)
                return _rec("wrong_type", f"{entry}() returned {tn}, not a Walker", tn)
            # The parent validates every walker it receives (same limits), so the child does
            # not pay for it twice: it checks the counts, so that a walker far over the caps
            # is refused before it is serialized, and validates in full only when the walker
            # cannot be serialized, to name the broken rule.
            try:
                lim = cfg.walker_limits
                nj, nl = len(value.joints), len(value.muscles)
                if not (0 < nj <= lim.max_joints and 0 < nl <= lim.max_links):
                    value.validate(lim)
                try:
                    return _ENCODER.encode(_rec("ok", walker=value.to_dict())).encode()
                except Exception:
                    value.validate(lim)
                    raise
            except walker_api.WalkerValidationError as exc:
                code_ = _safe_str(getattr(exc, "code", "invalid"), 80)
                return _rec("invalid_walker", f"invalid walker: {_safe_str(exc)}", code_)
        except _OutputTooLarge:
            return _rec("output_too_large", "program printed more than the output cap", "stdout")
        except MemoryError:
            return _rec(
                "memory_limit", "MemoryError: the program exceeded its memory limit", "MemoryError"
            )
        except BaseException as exc:  # untrusted code: classify everything
            return self._classify_exception(exc)

    def _classify_exception(self, exc: BaseException) -> dict[str, Any]:
        if _STATE["output_overflow"]:
            return _rec("output_too_large", "program printed more than the output cap", "stdout")
        if _STATE["refused"]:
            return _rec(
                "forbidden", f"operation refused: {_STATE['refused'][0]}", _STATE["refused"][0]
            )
        err = exc.errno if isinstance(exc, OSError) else None
        if isinstance(err, int) and ERRNO_BASE <= err < ERRNO_BASE + 1024:
            name = syscall_name(err - ERRNO_BASE)
            return _rec("forbidden", f"system call {name!r} refused by seccomp", name)
        if err == 27:  # EFBIG: RLIMIT_FSIZE (CPython ignores SIGXFSZ, so write() fails)
            return _rec(
                "output_too_large", "wrote a file larger than the file size limit", "file_size"
            )
        if isinstance(exc, MemoryError):
            return _rec(
                "memory_limit", "MemoryError: the program exceeded its memory limit", "MemoryError"
            )
        tname = _type_name(exc)
        where = ""
        try:
            tb = exc.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == "<program>":
                    where = f" (line {tb.tb_lineno})"
                tb = tb.tb_next
        except BaseException:
            pass
        return _rec("exception", f"{tname}: {_safe_str(exc)}{where}", tname)

    def child(self, code: Any, entry: str, wfd: int) -> None:
        """Body of the forked child: restrict, run, write one JSON record, ``_exit``."""
        try:
            self.restrict(wfd)
        except BaseException:
            os._exit(EXIT_HARNESS_ERROR)
        try:
            record = self.run(code, entry)
            data = record if isinstance(record, bytes) else _ENCODER.encode(record).encode()
            if len(data) > self.cfg.max_output_bytes:
                msg = f"result of {len(data)} bytes exceeds the cap"
                data = json.dumps(_rec("output_too_large", msg, "result")).encode()
            view = memoryview(data)
            while view:
                n = os.write(wfd, view)
                view = view[n:]
        except MemoryError:
            os._exit(EXIT_NO_MEMORY)
        except BaseException:
            os._exit(EXIT_HARNESS_ERROR)
        os._exit(0)

    # -- back in the zygote ---------------------------------------------------------------

    def fork_run(self, code: Any, entry: str) -> tuple[tuple[Any, ...], bytes]:
        """Fork a child for one compiled program, enforce wall-clock and output caps, reap it.

        ``code`` is unmarshalled here, in the zygote, rather than in the child: the child
        then touches (copies) a few pages of a finished code object instead of faulting in
        fresh memory for every object it builds (~70 page faults, 0.2 ms, less per child).
        Returns the fields of :data:`_RES` after the job id, and the child's raw bytes.
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
        pid = _raw_fork()
        if pid == 0:  # child
            self.child(code, entry, w)
            os._exit(EXIT_HARNESS_ERROR)  # not reached
        os.close(w)
        if pid < 0:
            os.close(r)
            return (time.monotonic() - t0, 0, 0, _FORK_FAILED, -1, 0, 0.0), b""
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
            _FORKED,
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

    def zygote_loop(self, job_fd: int, out_fd: int) -> None:
        """Fork one child per job received from the manager; write each result to ``out_fd``.

        ``out_fd`` is the parent's pipe: results go straight to the parent, without a relay
        through the manager. Jobs in: :data:`_ZJOB` + entry + body, where the body is
        marshalled code (``kind`` 0) or a ready result record to pass on (``kind`` 1:
        programs refused before any fork). Results out: ``_OUT`` frames of kind
        ``_KIND_RESULT`` holding :data:`_RES` + the child's raw bytes.
        """
        buf = bytearray()
        read, unpack, hsize = os.read, _ZJOB.unpack_from, _ZJOB.size
        while True:
            while len(buf) < hsize:
                b = read(job_fd, 1 << 16)
                if not b:
                    os._exit(0)
                buf += b
            kind, job_id, el, bl = unpack(buf)
            end = hsize + el + bl
            while len(buf) < end:
                b = read(job_fd, 1 << 16)
                if not b:
                    os._exit(0)
                buf += b
            entry = bytes(buf[hsize : hsize + el]).decode()
            body = bytes(buf[hsize + el : end])
            del buf[:end]
            if kind == 0:
                fields, payload = self.fork_run(marshal.loads(body), entry)
            else:
                fields, payload = (0.0, 0, 0, 0, 0, 0, 0.0), body
            _write_all(
                out_fd,
                _OUT.pack(_KIND_RESULT, _RES.size + len(payload))
                + _RES.pack(job_id, *fields)
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


#: manager -> zygote: kind (0 = run code, 1 = pass a record on), job id, entry and body sizes.
_ZJOB = struct.Struct(">BqHI")
#: worker -> parent frames: kind, body size. Kinds: a JSON control message, or a result.
_OUT = struct.Struct(">BI")
_KIND_CONTROL = 1
_KIND_RESULT = 2
#: A result: job id, elapsed, timed out, output overflow, how it ran (below), exit status
#: (-1 if killed), signal (0 if none), CPU seconds.
_RES = struct.Struct(">qdBBBiid")
_NOT_FORKED = 0
_FORKED = 1
_FORK_FAILED = 2


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ----------------------------------------------------------------------------------------
# The worker loop.
# ----------------------------------------------------------------------------------------


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        b = os.read(fd, n)
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def _send(fd: int, header: dict[str, Any]) -> None:
    """A control message to the parent (start-up only)."""
    body = json.dumps(header).encode()
    _write_all(fd, _OUT.pack(_KIND_CONTROL, len(body)) + body)


def _import_allowed(names: Iterable[str]) -> dict[str, Any]:
    """Pre-import every allowed module (and its parents) so children never touch the disk."""
    import importlib

    modules: dict[str, Any] = {}
    for name in names:
        mod = importlib.import_module(name)
        modules[name] = mod
        parts = name.split(".")
        for i in range(1, len(parts)):
            modules.setdefault(".".join(parts[:i]), sys.modules[".".join(parts[:i])])
    return modules


def _spawn_zygote(runner: _Runner, out_fd: int, keep: tuple[int, ...] = ()) -> tuple[int, int]:
    """Fork the zygote writing its results to ``out_fd``; return (pid, job pipe write end).

    In the zygote every fd but the job pipe, ``out_fd``, ``/dev/null`` and ``keep`` is
    closed (the parent's command pipe in particular).
    """
    job_r, job_w = os.pipe2(os.O_CLOEXEC)
    gc.collect()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(job_w)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            lo = 3
            for fd in sorted({job_r, out_fd, runner.devnull, *keep}):
                if fd >= lo:
                    os.closerange(lo, fd)
                    lo = fd + 1
            os.closerange(lo, 1 << 16)
            runner.zygote_setup()
            runner.zygote_loop(job_r, out_fd)
        finally:
            os._exit(EXIT_HARNESS_ERROR)
    os.close(job_r)
    return pid, job_w


def _job_frame(kind: int, job_id: int, entry: str, body: bytes) -> bytes:
    eb = entry.encode()
    return _ZJOB.pack(kind, job_id, len(eb), len(body)) + eb + body


def _probe(runner: _Runner) -> dict[str, Any]:
    """Run one trivial program through a throw-away zygote with every restriction.

    Returns the result fields (``exit`` 0 and a record on success).
    """
    res_r, res_w = os.pipe2(os.O_CLOEXEC)
    pid, job_w = _spawn_zygote(runner, res_w)
    os.close(res_w)
    code, _ = runner.prepare("def make_walker():\n    return None\n")
    fields: dict[str, Any] = {"exit": None, "problem": "no answer"}
    try:
        _write_all(job_w, _job_frame(0, -1, "make_walker", marshal.dumps(code)))
        head = _read_timeout(res_r, _OUT.size, runner.cfg.timeout_s + 5.0)
        if head is not None:
            _kind, size = _OUT.unpack(head)
            body = _read_timeout(res_r, size, 5.0) or b""
            if len(body) >= _RES.size:
                _id, el, to, _ov, how, ex, sg, _cpu = _RES.unpack_from(body)
                fields = {"exit": ex, "signal": sg, "timed_out": to, "how": how, "elapsed": el}
                fields["record"] = body[_RES.size :].decode(errors="replace")[:500]
    except OSError as exc:
        fields["problem"] = str(exc)
    finally:
        os.close(job_w)
        os.close(res_r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return fields


def serve(in_fd: int, out_fd: int) -> None:
    """Worker entry: read the config, isolate, pre-import, then run jobs until EOF."""
    head = _read_exact(in_fd, 8)
    if head is None:
        return
    hl, pl = struct.unpack(">II", head)
    init = pickle.loads(_read_exact(in_fd, hl) or b"")
    _read_exact(in_fd, pl)
    sys.path[:] = list(init["sys_path"])
    cfg = _Config(pickle.loads(init["config"]))  # after sys.path: it may hold WalkerLimits
    allowed = tuple(dict.fromkeys((*cfg.allowed_imports, cfg.walker_module)))
    modules = _import_allowed(allowed)
    import linecache

    for mod in modules.values():  # so tracebacks into allowed modules have source lines
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
        "rlimits": ["CPU", "AS", "FSIZE", "NOFILE", "NPROC", "CORE", "MEMLOCK", "MSGQUEUE"],
        "pid1": False,
        "problems": [],
        "arch": os.uname().machine,
    }
    devnull = os.open(os.devnull, os.O_RDWR)
    ids = _nobody_ids() if cfg.drop_privileges else None
    if cfg.namespaces:
        try:
            new_pid = _setup_namespaces(layers)
        except OSError as exc:
            layers["problems"].append(f"namespaces: {exc}")
            new_pid = False
        if new_pid:
            sync_r, sync_w = os.pipe()
            inner = os.fork()
            if inner:  # outer: report the inner pid, then wait and mirror its exit
                os.close(sync_r)
                _send(out_fd, {"kind": "inner_pid", "pid": inner})
                os.close(sync_w)
                os.close(in_fd)
                os.close(out_fd)
                _, st = os.waitpid(inner, 0)
                os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)
            os.close(sync_w)
            os.read(sync_r, 1)  # wait until the outer has sent our pid
            os.close(sync_r)
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            layers["pid1"] = os.getpid() == 1
    else:
        layers["problems"].append("namespaces disabled by configuration")
    child_ids = ids or (os.getuid(), os.getgid())
    workdir = ""
    if "mount" in layers["namespaces"]:
        try:
            workdir = _setup_root(layers, cfg.tmp_mb, *child_ids)
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
    runner = _Runner(cfg, layers, modules, devnull, workdir)
    if cfg.seccomp:
        if os.uname().machine == "x86_64":
            runner.enable_seccomp()
            layers["seccomp"] = (
                "allow-list (classic BPF) installed once in the zygote + a per-child filter; "
                "fork/exec/ptrace kill the child"
            )
        else:
            layers["problems"].append(f"seccomp filter not built for {os.uname().machine}")
    else:
        layers["problems"].append("seccomp disabled by configuration")
    # Probe: one child with every restriction must start and report back.
    probe = _probe(runner)
    if probe["exit"] != 0 and runner.seccomp:
        layers["problems"].append(f"seccomp probe failed ({probe}); seccomp disabled")
        runner.disable_seccomp()
        layers["seccomp"] = False
        probe = _probe(runner)
    if probe["exit"] != 0:
        layers["problems"].append(f"probe child failed: {probe}")
    _send(out_fd, {"kind": "hello", "layers": layers, "probe": probe})
    # From here on the zygote writes results straight to the parent. The manager lets go of
    # its copy of the pipe, so if the zygote dies the parent sees EOF at once.
    _zygote_pid, job_w = _spawn_zygote(runner, out_fd)
    os.close(out_fd)
    gc.collect()
    gc.freeze()
    gc.disable()  # parsing makes many short-lived, acyclic objects; collect now and then
    n_jobs = 0
    while True:
        head = _read_exact(in_fd, 8)
        if head is None:
            return
        hl, pl = struct.unpack(">II", head)
        msg = pickle.loads(_read_exact(in_fd, hl) or b"")
        _read_exact(in_fd, pl)
        if msg[0] == "exit":
            return
        out = []
        for job_id, source, entry in msg[1]:
            code, record = runner.prepare(source)
            if record is not None:
                out.append(_job_frame(1, job_id, entry, json.dumps(record).encode()))
            else:
                out.append(_job_frame(0, job_id, entry, marshal.dumps(code)))
        _write_all(job_w, b"".join(out))  # EPIPE (the zygote died) ends the manager
        n_jobs += len(out)
        if n_jobs >= 2000:
            n_jobs = 0
            gc.collect()


def _read_timeout(fd: int, n: int, timeout_s: float) -> bytes | None:
    """Read exactly ``n`` bytes within ``timeout_s``; ``None`` on EOF or timeout."""
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
