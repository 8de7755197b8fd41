"""The sandbox's OS layer alone (namespaces, private root, privilege drop, rlimits,
seccomp) against hostile programs: the ``os_only`` pool has the static guard and the
audit hook off and lets programs import os, socket, ctypes, ... Every program runs in
real processes."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from jelm.programs.sandbox import Sandbox, SandboxError, SandboxIsolationWarning, Status
from tests.programs.sandbox.programs import HOSTILE, WALKER, body, by_name, limits


def test_os_layer_blocks_process_creation(os_only: Sandbox, tmp_path) -> None:
    marker = tmp_path / "ran"
    progs = {
        "system": body(f"os.system('touch {marker}')", "import os"),
        "subprocess": body(f"subprocess.run(['touch', '{marker}'])", "import subprocess"),
        "fork_bomb": body("while True:\n    os.fork()", "import os"),
        "posix_spawn": body(
            f"os.posix_spawn('/usr/bin/touch', ['touch', '{marker}'], {{}})", "import os"
        ),
        "thread": body("threading.Thread(target=print).start()", "import threading"),
        "ctypes_fork": body("ctypes.CDLL(None).fork()", "import ctypes"),
    }
    res = by_name(os_only, progs)
    for name, r in res.items():
        assert r.status is Status.FORBIDDEN, (name, r)
        # seccomp kills fork, clone and exec; subprocess already fails on a refused pipe2
        want = ("pipe2", "seccomp_kill") if name == "subprocess" else ("seccomp_kill",)
        assert r.detail in want, (name, r)
    assert not marker.exists()


def test_os_layer_blocks_writes_and_reads(os_only: Sandbox, tmp_path) -> None:
    target = tmp_path / f"written-{uuid.uuid4().hex}"
    tmp_target = f"/tmp/jelm-sandbox-test-{uuid.uuid4().hex}"
    here = os.path.abspath(f"jelm-sandbox-test-{uuid.uuid4().hex}")
    progs = {
        "write_host": body(f"open({str(target)!r}, 'w').write('x')"),
        "write_tmp": body(f"open({tmp_target!r}, 'w').write('x')"),
        "write_cwd_abs": body(f"open({here!r}, 'w').write('x')"),
        "passwd": body("return open('/etc/passwd').read()"),
        "write_private": body("open('scratch.txt', 'w').write('x' * 1000)"),
        "big_file": body("open('big.bin', 'wb').write(b'x' * (4 << 20))"),
    }
    res = by_name(os_only, progs)
    assert not target.exists() and not os.path.exists(tmp_target) and not os.path.exists(here)
    for name in ("write_host", "write_tmp", "write_cwd_abs", "passwd"):
        assert res[name].status is Status.EXCEPTION, (name, res[name])
    assert res["passwd"].detail == "FileNotFoundError"
    assert res["write_private"].ok, res["write_private"]
    assert res["big_file"].status is Status.OUTPUT_TOO_LARGE, res["big_file"]


def test_private_dir_not_shared_between_programs(os_only: Sandbox) -> None:
    write = body("open('leak.txt', 'w').write('secret')")
    read = body("assert not os.path.exists('leak.txt'), os.listdir('.')", "import os")
    res = os_only.execute([write, read, write, read])
    assert all(r.ok for r in res), res


def test_os_layer_blocks_network(os_only: Sandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    progs = {
        "connect": body(f"socket.socket().connect(('127.0.0.1', {port}))", "import socket"),
        "ctypes_connect": body(
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "fd = libc.socket(2, 1, 0)\n"
            "if fd < 0:\n"
            "    raise OSError(ctypes.get_errno(), 'socket failed')",
            "import ctypes",
        ),
        "udp": body(
            "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))",
            "import socket",
        ),
    }
    res = by_name(os_only, progs)
    for name, r in res.items():
        assert r.status is Status.FORBIDDEN, (name, r)
        assert "socket" in r.detail
    with pytest.raises(TimeoutError):
        server.accept()
    server.close()


def test_os_layer_protects_parent_and_pool(os_only: Sandbox) -> None:
    me = os.getpid()
    progs = {
        "kill_test": body(f"os.kill({me}, signal.SIGKILL)", "import os, signal"),
        "kill_parent": body("os.kill(os.getppid(), signal.SIGKILL)", "import os, signal"),
        "kill_all": body("os.kill(-1, signal.SIGKILL)", "import os, signal"),
        "kill_group": body("os.killpg(0, signal.SIGKILL)", "import os, signal"),
        "ignore_term": body(
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "signal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
            "import signal",
        ),
        "alarm": body(
            "signal.signal(signal.SIGALRM, lambda *a: None)\n"
            "signal.alarm(1)\nwhile True:\n    pass",
            "import signal",
        ),
        "os_exit": body("os._exit(0)", "import os"),
        "self_kill": body("os.kill(os.getpid(), signal.SIGKILL)", "import os, signal"),
        "deep_c_recursion": body(
            "sys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)", "import sys"
        ),
        "good": WALKER,
    }
    res = by_name(os_only, progs)
    for name in ("kill_test", "kill_parent", "kill_all", "kill_group"):
        assert res[name].status is Status.FORBIDDEN and "kill" in res[name].detail, (
            name,
            res[name],
        )
    assert res["ignore_term"].status is Status.TIMEOUT
    assert res["alarm"].status is Status.TIMEOUT
    assert res["os_exit"].status is Status.CRASHED
    assert res["self_kill"].status is Status.CRASHED and res["self_kill"].detail == "SIGKILL"
    assert res["deep_c_recursion"].status in (
        Status.CRASHED,
        Status.EXCEPTION,
        Status.MEMORY_LIMIT,
        Status.TIMEOUT,
    )
    assert res["good"].ok
    assert all(r.ok for r in os_only.execute([WALKER] * 8))


def test_os_layer_memory_and_output(os_only: Sandbox) -> None:
    progs = {
        "bytes": body("x = bytearray(10**10)"),
        "stdout_fd": body("os.write(1, b'x' * (10 << 20))", "import os"),
        "print": body("print('y' * (4 << 20))"),
    }
    res = by_name(os_only, progs)
    assert res["bytes"].status is Status.MEMORY_LIMIT
    assert res["stdout_fd"].ok  # fd 1 is /dev/null: nothing reaches anyone
    assert res["print"].status is Status.OUTPUT_TOO_LARGE


# -- the isolation report -------------------------------------------------------------------


def test_isolation_report(sb: Sandbox) -> None:
    iso = sb.isolation
    for key in ("namespaces", "filesystem", "seccomp", "rlimits", "limits", "missing"):
        assert key in iso
    assert iso["limits"]["entry"] == "make_walker" and iso["limits"]["timeout_s"] == 1.0
    if os.geteuid() == 0:
        assert {"pid", "mount", "net"} <= set(iso["namespaces"])
        assert iso["seccomp"] and iso["uid"] == 65534
        assert iso["missing"] == []


def test_missing_layer_warns() -> None:
    with (
        pytest.warns(SandboxIsolationWarning, match="seccomp"),
        Sandbox(program=HOSTILE, workers=1, limits=limits(seccomp=False)) as s,
    ):
        assert s.isolation["seccomp"] is False
        assert "seccomp filter" in s.isolation["missing"]
        assert s.execute([WALKER])[0].ok


def test_missing_layer_refused_when_strict() -> None:
    with pytest.raises(SandboxError, match="running without: seccomp filter"):
        Sandbox(program=HOSTILE, workers=1, limits=limits(seccomp=False), strict=True)
