"""jelm.programs.sandbox.seccomp: the stacked filters equal the reference policy (checked
with a classic-BPF interpreter, no processes)."""

from __future__ import annotations

import struct

import pytest

from jelm.programs.sandbox import seccomp as S

PID = 4242
X86_64 = S.AUDIT_ARCH_X86_64
I386 = 0x40000003


def _run_bpf(prog: bytes, nr: int, arch: int, arg0: int) -> int:
    """Classic-BPF interpreter for the instructions the sandbox's filters use."""
    data = struct.pack("=iI", nr, arch) + b"\0" * 8 + struct.pack("=Q", arg0 % (1 << 64))
    data += b"\0" * (64 - len(data))
    insns = [struct.unpack_from("=HBBI", prog, 8 * k) for k in range(len(prog) // 8)]
    a, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            a = struct.unpack_from("=I", data, k)[0]
        elif code in (0x15, 0x35, 0x25):
            hit = {0x15: a == k, 0x35: a >= k, 0x25: a > k}[code]
            pc += jt if hit else jf
        elif code == 0x04:
            a = (a + k) & 0xFFFFFFFF
        elif code == 0x06:
            return k
        elif code == 0x16:
            return a
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


def _strictest(first: int, second: int) -> int:
    """What the kernel returns for stacked filters: the highest-precedence action (KILL_PROCESS
    0x80000000 first, ALLOW last: the lowest as a signed 32-bit number); on a tie the most
    recently installed filter's value (``first``)."""

    def signed(v: int) -> int:
        action = v & 0xFFFF0000
        return action - (1 << 32) if action & 0x80000000 else action

    return first if signed(first) <= signed(second) else second


@pytest.fixture(scope="module")
def reference() -> bytes:
    ref, offsets = S.build_seccomp_filter()
    buf = bytearray(ref)
    for off in offsets:
        struct.pack_into("=I", buf, off, PID)
    return bytes(buf)


def test_stacked_filters_equal_the_reference_policy(reference: bytes) -> None:
    """Zygote filter (installed once) + child filter (per child) == the single child policy."""
    zygote = S.build_zygote_filter()
    child, off = S.build_child_filter()
    child = bytearray(child)
    struct.pack_into("=I", child, off, PID)
    nrs = [*range(0, 460), 0x40000000 + 1, -1]
    args = (PID, PID + 1, 0, -1, PID + (1 << 32), 1)
    for arch in (X86_64, I386):
        for nr in nrs:
            for arg0 in args:
                want = _run_bpf(reference, nr, arch, arg0)
                got = _strictest(
                    _run_bpf(bytes(child), nr, arch, arg0), _run_bpf(zygote, nr, arch, arg0)
                )
                assert got == want, (S.syscall_name(nr), hex(arch), arg0, hex(got), hex(want))


def test_the_policy(reference: bytes) -> None:
    """Fork kills, socket is refused by name, kill only on oneself, the allow-list passes,
    another architecture and the x32 ABI kill."""
    nr = S.X86_64_SYSCALLS

    def run(name: str, arg0: int = 0, arch: int = X86_64) -> int:
        return _run_bpf(reference, nr[name], arch, arg0)

    for name in S.KILL_SYSCALLS:
        assert run(name) == S.SECCOMP_RET_KILL_PROCESS, name
    for name in S.ALLOWED_SYSCALLS:
        assert run(name) == S.SECCOMP_RET_ALLOW, name
    assert run("socket") == S.SECCOMP_RET_ERRNO | (S.ERRNO_BASE + 41)
    assert run("mount") == S.SECCOMP_RET_ERRNO | (S.ERRNO_BASE + 165)
    for name in S.SELF_ONLY_SYSCALLS:
        assert run(name, PID) == S.SECCOMP_RET_ALLOW, name
        assert run(name, 1) == S.SECCOMP_RET_ERRNO | (S.ERRNO_BASE + nr[name]), name
    assert run("read", arch=I386) == S.SECCOMP_RET_KILL_PROCESS
    assert _run_bpf(reference, 0x40000000, X86_64, 0) == S.SECCOMP_RET_KILL_PROCESS


def test_tables_are_consistent() -> None:
    assert not set(S.ALLOWED_SYSCALLS) & set(S.KILL_SYSCALLS)
    named = {*S.ALLOWED_SYSCALLS, *S.KILL_SYSCALLS, *S.SELF_ONLY_SYSCALLS}
    assert named | set(S.ZYGOTE_EXTRA_SYSCALLS) <= set(S.X86_64_SYSCALLS)
    assert S.syscall_name(41) == "socket" and S.syscall_name(9999) == "syscall #9999"
