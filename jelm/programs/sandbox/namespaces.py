"""The namespace and privilege layer of the program sandbox (Linux, ctypes on libc).

ELM (§3) runs every program a language model writes; this module builds the walls a
worker puts up before it runs any: new user (when not root), pid, mount, net, ipc and uts
namespaces; a private read-only tmpfs root (``pivot_root``) holding only the program's
writable work dir; and the per-child privilege drop (uid ``nobody``, or all capabilities
cleared inside a user namespace). Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import resource
from typing import Any

from jelm.programs.sandbox.libc import check, libc

__all__ = ["drop_privileges", "nobody_ids", "setup_namespaces", "setup_root"]

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
#: ``capset`` header version 3 (_LINUX_CAPABILITY_VERSION_3).
_CAP_VERSION_3 = 0x20080522
#: The uid/gid children drop to when the worker is real root.
NOBODY = 65534


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    enc = lambda s: None if s is None else s.encode()
    check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def setup_namespaces(layers: dict[str, Any]) -> bool:
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
        if libc.unshare(CLONE_NEWUSER) == 0:
            _write_file("/proc/self/setgroups", "deny")
            _write_file("/proc/self/uid_map", f"0 {uid} 1")
            _write_file("/proc/self/gid_map", f"0 {gid} 1")
            layers["namespaces"].append("user")
        else:
            layers["problems"].append(f"user namespace: {os.strerror(ctypes.get_errno())}")
    flags = 0
    for v in wanted.values():
        flags |= v
    if libc.unshare(flags) == 0:
        layers["namespaces"].extend(wanted)
    else:  # try one at a time to learn what is missing
        for name, flag in wanted.items():
            if libc.unshare(flag) == 0:
                layers["namespaces"].append(name)
            else:
                layers["problems"].append(f"{name} namespace: {os.strerror(ctypes.get_errno())}")
    return "pid" in layers["namespaces"]


def setup_root(layers: dict[str, Any], tmp_mb: int, child_uid: int, child_gid: int) -> str:
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
    check(libc.syscall(SYS_PIVOT_ROOT, (base).encode(), (base + "/old").encode()), "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/old", MNT_DETACH), "umount old root")
    os.rmdir("/old")
    _mount(
        None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None
    )
    layers["filesystem"] = "private tmpfs root (pivot_root), host fs detached; /w writable"
    return "/w"


def nobody_ids() -> tuple[int, int] | None:
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
    return NOBODY, NOBODY


def drop_privileges(child_ids: tuple[int, int] | None, capset: bool) -> None:
    """Drop a child's privileges for good (it is about to run a program).

    With ``child_ids`` (the worker is real root): ``setresgid``/``setresuid`` to them
    (supplementary groups were dropped in the zygote). Otherwise, in a user namespace
    where no other uid exists: clear every capability (if ``capset``) and set
    ``RLIMIT_NPROC`` to 0, which stops a process once it has no ``CAP_SYS_RESOURCE``.
    """
    if child_ids:
        uid, gid = child_ids
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        return
    if capset:
        hdr = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()
        check(libc.syscall(SYS_CAPSET, hdr, data), "capset")
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
