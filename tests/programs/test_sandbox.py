"""Tests for jelm.programs.sandbox: classification, isolation, and hostile programs.

Every hostile program runs in real processes. The ``os_only`` sandbox switches the static
guard and the audit hook off, so what it stops is stopped by the OS layer alone
(namespaces, private root, uid drop, rlimits, seccomp).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
import uuid
import warnings

import pytest

from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source, seed_walker
from jelm.programs.sandbox import (
    DEFAULT_ALLOWED_IMPORTS,
    Result,
    Sandbox,
    SandboxIsolationWarning,
    SandboxLimits,
    Status,
    check_source,
    execute,
    shutdown_default_sandbox,
)

API = "jelm.domains.sodarace.api"
IMPORTS = ("math", "random", API)

WALKER = f"""
from {API} import walker_creator
import math

def make_walker():
    wc = walker_creator()
    js = [wc.add_joint(3 * math.cos(i), 3 + 3 * math.sin(i)) for i in range(6)]
    for i in range(6):
        wc.add_muscle(js[i], js[(i + 1) % 6])
    return wc.get_walker()
"""


def body(code: str, imports: str = "") -> str:
    """A program whose make_walker runs ``code`` first, then returns a valid walker."""
    indented = "\n".join("    " + line for line in code.strip().splitlines())
    head = "def make_walker():\n" + indented
    return imports + "\n" + WALKER.replace("def make_walker():", head)


#: With the guard off, allowed imports only say what the workers pre-import (children have no
#: filesystem to import from): give hostile programs every tool they could want.
HOSTILE_IMPORTS = (
    *IMPORTS,
    "os",
    "sys",
    "signal",
    "socket",
    "subprocess",
    "threading",
    "ctypes",
    "time",
)


def limits(**kw: object) -> SandboxLimits:
    kw = {"walker_module": API, "allowed_imports": IMPORTS, "timeout_s": 1.0, **kw}
    return SandboxLimits(**kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, limits=limits()) as s:
        yield s


@pytest.fixture(scope="module")
def os_only():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxIsolationWarning)
        with Sandbox(
            workers=2, limits=limits(guard=False, audit_hook=False, allowed_imports=HOSTILE_IMPORTS)
        ) as s:
            yield s


def by_name(sandbox: Sandbox, programs: dict[str, str]) -> dict[str, Result]:
    names = list(programs)
    return dict(zip(names, sandbox.execute([programs[n] for n in names]), strict=True))


# -- the static guard (no processes) -------------------------------------------------------


@pytest.mark.parametrize(
    "src",
    [
        "import os",
        "import subprocess",
        "from os import system",
        "from random import _os",
        "import random\nrandom._os.system('id')",
        "open('/etc/passwd')",
        "exec('1')",
        "eval('1')",
        "compile('1', 'x', 'exec')",
        "__import__('os')",
        "globals()",
        "x = ().__class__.__bases__[0].__subclasses__()",
        "x = __builtins__",
        "getattr(1, '__class__')",
        "def f(): pass\nf.__globals__",
        "g = (i for i in [1])\ng.gi_frame.f_back",
        "s = '__class__'",
        "from . import x",
    ],
)
def test_guard_refuses(src: str) -> None:
    assert check_source(src, IMPORTS) is not None


def test_guard_accepts_walker_program() -> None:
    assert check_source(WALKER, IMPORTS) is None
    assert check_source("import random\nx = random.random()", IMPORTS) is None


def test_guard_reports_syntax_error() -> None:
    assert "syntax error" in (check_source("def (", IMPORTS) or "")


# -- the real seed programs -----------------------------------------------------------------


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_passes_default_guard(name: str) -> None:
    assert check_source(seed_source(name), DEFAULT_ALLOWED_IMPORTS) is None


def test_seeds_in_sandbox_match_in_process(sb: Sandbox) -> None:
    """Every seed, under the default limits, gives exactly the walker it gives in-process."""
    with Sandbox(workers=2, limits=SandboxLimits()) as default_sb:
        res = default_sb.execute([seed_source(n) for n in SEED_NAMES] * 2)
    for name, r in zip(SEED_NAMES * 2, res, strict=True):
        assert r.ok and r.status is Status.OK, (name, r)
        assert r.walker == seed_walker(name).to_dict(), name
    # and the same through the module's shared test pool (explicit limits)
    for name, r in zip(SEED_NAMES, sb.execute([seed_source(n) for n in SEED_NAMES]), strict=True):
        assert r.ok and r.walker == seed_walker(name).to_dict(), (name, r)


# -- classification -------------------------------------------------------------------------


def test_good_program_returns_validated_walker(sb: Sandbox) -> None:
    (r,) = sb.execute([WALKER])
    assert r.ok and r.status is Status.OK, r
    assert len(r.walker["joints"]) == 6 and len(r.walker["muscles"]) == 6
    assert r.elapsed_s > 0 and r.error == ""


def test_failures_are_classified_in_input_order(sb: Sandbox) -> None:
    progs = {
        "good": WALKER,
        "syntax": "def make_walker(:\n    pass",
        "exception": "def make_walker():\n    return 1 / 0",
        "bad_str": (
            "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
            "def make_walker():\n    raise E()"
        ),
        "wrong_type": "def make_walker():\n    return {'joints': []}",
        "none": "def make_walker():\n    return None",
        "no_entry": "x = 1",
        "million_joints": body("for i in range(10**6):\n    wc.add_joint(i % 50, i // 50 % 50)")
        .replace("wc = walker_creator()\n", "")
        .replace("def make_walker():\n", "def make_walker():\n    wc = walker_creator()\n"),
        "huge_stdout": "def make_walker():\n    while True:\n        print('x' * 10000)",
        "sys_exit": "def make_walker():\n    raise SystemExit(3)",
        "recursion": "def make_walker():\n    return make_walker()",
        "loop": "def make_walker():\n    while True:\n        pass",
        "good2": WALKER,
    }
    res = by_name(sb, progs)
    assert list(res) == list(progs)
    assert res["good"].ok and res["good2"].ok
    assert res["syntax"].status is Status.SYNTAX_ERROR
    assert res["exception"].status is Status.EXCEPTION
    assert res["exception"].detail == "ZeroDivisionError" and "division" in res["exception"].error
    assert res["bad_str"].status is Status.EXCEPTION and "unprintable" in res["bad_str"].error
    assert res["wrong_type"].status is Status.WRONG_TYPE and res["wrong_type"].detail == "dict"
    assert res["none"].status is Status.WRONG_TYPE
    assert res["no_entry"].status is Status.EXCEPTION
    assert res["million_joints"].status in (Status.INVALID_WALKER, Status.TIMEOUT), res[
        "million_joints"
    ]
    assert res["huge_stdout"].status is Status.OUTPUT_TOO_LARGE
    assert res["sys_exit"].status is Status.EXCEPTION and res["sys_exit"].detail == "SystemExit"
    assert (
        res["recursion"].status is Status.EXCEPTION and res["recursion"].detail == "RecursionError"
    )
    # The wall-clock limit normally fires first; on a loaded machine the CPU limit can.
    assert res["loop"].status is Status.TIMEOUT and res["loop"].detail in ("wall", "cpu")
    for r in res.values():
        assert isinstance(r.error, str) and (r.ok or r.error)


def test_invalid_walker_has_code(sb: Sandbox) -> None:
    src = WALKER.replace("range(6)", "range(100)").replace("% 6", "% 100")
    (r,) = sb.execute([src])
    assert r.status is Status.INVALID_WALKER and r.detail and r.detail != "malformed", r


def test_memory_bomb(sb: Sandbox) -> None:
    progs = [
        "def make_walker():\n    return bytearray(10**10)",
        "def make_walker():\n    x = []\n    while True:\n        x.append(bytes(5 * 10**7))",
    ]
    for r in sb.execute(progs):
        assert r.status is Status.MEMORY_LIMIT, r


# -- hostile programs, guard on -------------------------------------------------------------

HOSTILE_GUARDED = {
    "import_os": "import os\ndef make_walker():\n    os.system('id')",
    "open": "def make_walker():\n    return open('/etc/passwd').read()",
    "getattr_built": (
        "def make_walker():\n    n = '_' * 2 + 'class' + '_' * 2\n    return getattr(1, n)"
    ),
    "subclasses": "def make_walker():\n    return ().__class__.__base__.__subclasses__()",
    "builtins": "def make_walker():\n    return __builtins__",
    "random_os": "import random\ndef make_walker():\n    return random._os",
    "eval": "def make_walker():\n    return eval('1')",
    "dyn_import": "def make_walker():\n    imp = getattr(print, 'x' + '__self__'[1:])\n",
    "format_escape": "def make_walker():\n    return '{0.__class__}'.format(1)",
}


def test_hostile_programs_refused_by_guard(sb: Sandbox) -> None:
    res = by_name(sb, HOSTILE_GUARDED)
    for name, r in res.items():
        assert r.status is Status.FORBIDDEN, (name, r)
        assert r.error, name
    assert "os" in res["import_os"].error
    (ok,) = sb.execute([WALKER])
    assert ok.ok


# -- hostile programs with the guard and audit hook OFF: the OS layer alone -----------------


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


# -- the pool -------------------------------------------------------------------------------


def test_isolation_report(sb: Sandbox) -> None:
    iso = sb.isolation
    for key in ("namespaces", "filesystem", "seccomp", "rlimits", "limits", "missing"):
        assert key in iso
    if os.geteuid() == 0:
        assert {"pid", "mount", "net"} <= set(iso["namespaces"])
        assert iso["seccomp"] and iso["uid"] == 65534
        assert iso["missing"] == []


def test_missing_layer_warns() -> None:
    with (
        pytest.warns(SandboxIsolationWarning, match="seccomp"),
        Sandbox(workers=1, limits=limits(seccomp=False)) as s,
    ):
        assert s.isolation["seccomp"] is False
        assert s.execute([WALKER])[0].ok


def test_worker_killed_from_outside_is_replaced() -> None:
    # A generous time limit: a busy machine (parallel tests) must not turn the slow
    # programs into timeouts, which would hide what this test is about.
    slow = body("t = 0\nfor i in range(2 * 10**6):\n    t += i")
    with Sandbox(workers=2, limits=limits(timeout_s=30.0)) as sb:

        def killer() -> None:
            time.sleep(0.15)
            w = sb._workers[0]
            os.kill(w.inner_pid or w.proc.pid, signal.SIGKILL)

        t = threading.Thread(target=killer)
        t.start()
        res = sb.execute([slow] * 6)
        t.join()
        assert len(res) == 6
        assert sum(r.ok for r in res) >= 5
        assert {r.status for r in res} <= {Status.OK, Status.INTERNAL_ERROR}
        assert all(r.ok for r in sb.execute([WALKER] * 4))


def test_batch_deadline(sb: Sandbox) -> None:
    loop = "def make_walker():\n    while True:\n        pass"
    with Sandbox(workers=2, limits=limits(timeout_s=10.0)) as s:
        t = time.monotonic()
        res = s.execute([loop] * 6 + [WALKER], deadline_s=0.5)
        assert time.monotonic() - t < 2.0
        assert all(r.status is Status.TIMEOUT for r in res[:6])
        assert all(r.ok for r in s.execute([WALKER] * 3))


def test_non_string_program(sb: Sandbox) -> None:
    res = sb.execute([WALKER, b"bytes", None])  # type: ignore[list-item]
    assert res[0].ok and res[1].status is Status.WRONG_TYPE and res[2].status is Status.WRONG_TYPE


def test_module_level_execute() -> None:
    try:
        res = execute([WALKER, "x ="], limits=limits())
        assert res[0].ok and res[1].status is Status.SYNTAX_ERROR
    finally:
        shutdown_default_sandbox()


def test_result_is_frozen(sb: Sandbox) -> None:
    (r,) = sb.execute([WALKER])
    with pytest.raises(AttributeError):
        r.ok = False  # type: ignore[misc]
    assert str(Status.OK) == "ok"


def test_random_is_deterministic_across_programs(sb: Sandbox) -> None:
    src = "import random\n" + WALKER.replace("3 * math.cos(i)", "3 * math.cos(i) + random.random()")
    res = sb.execute([src] * 6)
    assert all(r.ok for r in res)
    assert len({str(r.walker) for r in res}) == 1


# -- the pieces behind the throughput work (no processes) -----------------------------------


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


def test_stacked_seccomp_filters_equal_the_reference_policy() -> None:
    """Zygote filter (installed once) + child filter (per child) == the single child policy."""
    from jelm.programs import _sandbox_worker as sw

    pid = 4242
    ref, offsets = sw.build_seccomp_filter()
    ref = bytearray(ref)
    for off in offsets:
        struct.pack_into("=I", ref, off, pid)
    zygote = sw.build_zygote_filter()
    child, off = sw.build_child_filter()
    child = bytearray(child)
    struct.pack_into("=I", child, off, pid)
    arches = (sw.AUDIT_ARCH_X86_64, 0x40000003)
    nrs = [*range(0, 460), 0x40000000 + 1, -1]
    args = (pid, pid + 1, 0, -1, pid + (1 << 32), 1)
    for arch in arches:
        for nr in nrs:
            for arg0 in args:
                want = _run_bpf(bytes(ref), nr, arch, arg0)
                got = _strictest(
                    _run_bpf(bytes(child), nr, arch, arg0), _run_bpf(zygote, nr, arch, arg0)
                )
                assert got == want, (sw.syscall_name(nr), hex(arch), arg0, hex(got), hex(want))
    # and the policy itself: fork kills, socket is refused by name, kill only on oneself
    assert _run_bpf(bytes(ref), 57, arches[0], 0) == sw.SECCOMP_RET_KILL_PROCESS
    assert _run_bpf(bytes(ref), 41, arches[0], 0) == sw.SECCOMP_RET_ERRNO | (sw.ERRNO_BASE + 41)
    assert _run_bpf(bytes(ref), 62, arches[0], pid) == sw.SECCOMP_RET_ALLOW
    assert _run_bpf(bytes(ref), 62, arches[0], 1) != sw.SECCOMP_RET_ALLOW


def _mutated_walker_dicts() -> list[object]:
    out: list[object] = []
    for name in SEED_NAMES:
        d = seed_walker(name).to_dict()
        j0, m0 = d["joints"][0], d["muscles"][0]
        variants = [
            {"joints": [*d["joints"], list(j0)], "muscles": d["muscles"]},
            {"joints": [[float("nan"), 1.0], *d["joints"][1:]], "muscles": d["muscles"]},
            {"joints": ["x", *d["joints"][1:]], "muscles": d["muscles"]},
            {"joints": [[1e9, 0.0], *d["joints"][1:]], "muscles": d["muscles"]},
            {"joints": d["joints"], "muscles": [[0, 0, {"type": "muscle"}], *d["muscles"]]},
            {"joints": d["joints"], "muscles": [[0, 999, m0[2]], *d["muscles"][1:]]},
            {"joints": d["joints"], "muscles": [[0, 1, {"type": "bogus"}], *d["muscles"]]},
            {"joints": d["joints"], "muscles": [[0, 1, {"type": "muscle", "amplitude": 50}]]},
            {"joints": d["joints"], "muscles": [[0, 1, {"type": "muscle", "x": 1}]]},
            {"joints": d["joints"], "muscles": [[True, 1, {"type": "muscle"}]]},
            {"joints": d["joints"], "muscles": [[0, 1]]},
            {"joints": d["joints"], "muscles": []},
            {"joints": [], "muscles": d["muscles"]},
            {"joints": d["joints"], "muscles": d["muscles"] * 30},
            {"joints": d["joints"], "muscles": d["muscles"], "extra": 1},
            {"joints": tuple(d["joints"]), "muscles": d["muscles"]},
            {"joints": d["joints"]},
            [d["joints"], d["muscles"]],
        ]
        out += [d, *variants]
    return out


def test_parent_validation_fast_path_matches_from_dict(sb: Sandbox) -> None:
    from jelm.domains.sodarace import api as walker_api

    def outcome(fn, d):
        try:
            return ("ok", fn(d))
        except walker_api.WalkerValidationError as exc:
            return (type(exc).__name__, str(exc))

    for d in _mutated_walker_dicts():
        want = outcome(lambda x: walker_api.Walker.from_dict(x).to_dict(), d)
        assert outcome(sb._validated_walker, d) == want, d


@pytest.mark.parametrize(
    "src",
    [
        "match x:\n    case object(__class__=c):\n        pass",
        "match x:\n    case object(_private=c):\n        pass",
        "try:\n    pass\nexcept Exception as __builtins__:\n    pass",
        "match x:\n    case __builtins__:\n        pass",
        "match x:\n    case {**__builtins__}:\n        pass",
    ],
)
def test_guard_refuses_match_and_binding_escapes(src: str) -> None:
    assert check_source(src, IMPORTS) is not None


def test_match_class_escape_refused_in_sandbox(sb: Sandbox) -> None:
    """``case object(__subclasses__=s)`` reads dunders without an Attribute node."""
    src = (
        "def make_walker():\n    match ():\n        case object(__class__=c):\n            pass\n"
        "    match c:\n        case object(__base__=b):\n            pass\n"
        "    match b:\n        case object(__subclasses__=s):\n            pass\n"
        "    return len(s())\n"
    )
    (r,) = sb.execute([src])
    assert r.status is Status.FORBIDDEN and "__class__" in r.error, r
