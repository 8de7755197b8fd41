"""The seccomp layer: a hand-built classic-BPF system-call allow-list (x86_64).

Part of the program sandbox's OS wall (ELM §3 runs every generated program; each is
untrusted). :func:`build_seccomp_filter` is the child policy as one reference program;
the sandbox installs it as two stacked filters whose combination equals it: the zygote's
(:func:`build_zygote_filter`, once) and a short per-child one (:func:`build_child_filter`,
patched with the child's pid by :class:`ChildFilter`). Standard library only.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable

from jelm.programs.sandbox.libc import PR_SET_SECCOMP, check, libc

__all__ = [
    "ALLOWED_SYSCALLS",
    "AUDIT_ARCH_X86_64",
    "ERRNO_BASE",
    "KILL_SYSCALLS",
    "SECCOMP_RET_ALLOW",
    "SECCOMP_RET_ERRNO",
    "SECCOMP_RET_KILL_PROCESS",
    "SELF_ONLY_SYSCALLS",
    "X86_64_SYSCALLS",
    "ZYGOTE_EXTRA_SYSCALLS",
    "ChildFilter",
    "build_child_filter",
    "build_seccomp_filter",
    "build_zygote_filter",
    "install_filter",
    "syscall_name",
]

SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E

#: Refused system calls come back as ``OSError(errno=ERRNO_BASE + syscall_number)``, so the
#: child can report which call the kernel refused ("Unknown error 1065" = socket).
ERRNO_BASE = 1024

#: x86_64 system call numbers of the calls the policies name.
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

#: Never legitimate for a program: the child is killed on the spot (SIGSYS), which
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


def install_filter(prog: bytes, what: str = "seccomp") -> None:
    """Install a BPF program on the calling thread (``no_new_privs`` must be set)."""
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.addressof(buf))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), what)


class ChildFilter:
    """The per-child filter, kept in ctypes memory and patched with each child's pid.

    Built once (in the worker, before any fork); a child only writes its pid into the
    buffer and makes one ``prctl`` call.
    """

    def __init__(self) -> None:
        prog, self.pid_offset = build_child_filter()
        self.buf = bytearray(prog)
        self._cbuf = (ctypes.c_char * len(prog)).from_buffer(self.buf)
        self._fprog = _SockFprog(len(prog) // 8, ctypes.addressof(self._cbuf))
        self.fprog_addr = ctypes.addressof(self._fprog)

    def install(self, pid: int) -> None:
        """Install the filter in the calling process, whose pid is ``pid``."""
        struct.pack_into("=I", self.buf, self.pid_offset, pid)
        check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self.fprog_addr, 0, 0), "seccomp")
