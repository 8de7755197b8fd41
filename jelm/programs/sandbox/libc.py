"""ctypes bindings to the few libc calls the sandbox's worker side makes (Linux).

``prctl``, ``mount``, ``umount2``, ``unshare``, raw ``syscall`` and a ``fork`` that skips
CPython's at-fork machinery; :func:`check` turns a failed call into ``OSError``.
Standard library only: imported by the worker processes (ELM §3: programs run there).
"""

from __future__ import annotations

import ctypes
import os

__all__ = [
    "PR_SET_DUMPABLE",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "PR_SET_SECCOMP",
    "check",
    "libc",
    "raw_fork",
]

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p,) * 3 + (ctypes.c_ulong, ctypes.c_char_p)
libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
libc.unshare.argtypes = (ctypes.c_int,)
libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

#: ``fork`` called with the GIL held and without CPython's at-fork machinery: the zygote is
#: single-threaded, so the interpreter state the child inherits is consistent, and skipping
#: ``PyOS_AfterFork_Child`` (thread bookkeeping, random's reseed, ...) spares the child the
#: copy-on-write page faults those would cause (the figures are in SANDBOX.md).
raw_fork = ctypes.PyDLL("libc.so.6", use_errno=True).fork
raw_fork.restype = ctypes.c_int
raw_fork.argtypes = ()


def check(ret: int, what: str) -> None:
    """Raise ``OSError`` (with errno) if a libc call returned non-zero."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
