"""Soak test: 10,000 mixed good and hostile programs through one sandbox pool.

Afterwards there must be no leaked processes or file descriptors, the parent's memory must
not have grown, and the pool must still answer correctly. Marked slow (second CI pass).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
import warnings

import psutil
import pytest

from jelm.domains.sodarace.domain import PROGRAM
from jelm.programs.sandbox import Sandbox, SandboxIsolationWarning, SandboxLimits, Status
from tests.programs.sandbox.programs import WALKER as GOOD

#: An invalid walker: 100 joints (the cap is 64).
INVALID = GOOD.replace("range(6)", "range(100)").replace("% 6", "% 100")

#: (program, expected status) pairs: guard-refused, OS-stopped, crashing and good programs.
MIX: list[tuple[str, Status | str]] = [
    (INVALID, PROGRAM.invalid_status),
    (GOOD, Status.OK),
    ("def make_walker(:\n    pass", Status.SYNTAX_ERROR),
    ("def make_walker():\n    return 1 / 0", Status.EXCEPTION),
    ("import os\ndef make_walker():\n    os.fork()", Status.FORBIDDEN),
    ("def make_walker():\n    return bytes(10**10)", Status.MEMORY_LIMIT),
    ("def make_walker():\n    while True:\n        print('x' * 100000)", Status.OUTPUT_TOO_LARGE),
    ("def make_walker():\n    return 42", Status.WRONG_TYPE),
    ("def make_walker():\n    return ().__class__.__base__.__subclasses__()", Status.FORBIDDEN),
    (GOOD, Status.OK),
]
OS_MIX: list[tuple[str, Status | str]] = [
    ("import os\ndef make_walker():\n    os.fork()", Status.FORBIDDEN),
    ("import os\ndef make_walker():\n    os._exit(3)", Status.CRASHED),
    ("import os\ndef make_walker():\n    os.system('true')", Status.FORBIDDEN),
    ("def make_walker():\n    open('/tmp/jelm-soak', 'w')", Status.EXCEPTION),
    ("import os, signal\ndef make_walker():\n    os.kill(1, signal.SIGKILL)", Status.FORBIDDEN),
    ("def make_walker():\n    open('f', 'w').write('x' * 1000)\n    return 1", Status.WRONG_TYPE),
    (GOOD, Status.OK),
]
LOOP = ("def make_walker():\n    while True:\n        pass", Status.TIMEOUT)


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:  # a child that just exited
        return 0


def _live_children(me: psutil.Process, before: set[int]) -> list[psutil.Process]:
    """``me``'s descendants that are not zombies (gone ones skipped), except those alive
    before the test (``before``: other tests' helpers in this worker, not the sandbox's)."""
    live = []
    for p in me.children(recursive=True):
        if p.pid in before:
            continue
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                live.append(p)
        except psutil.NoSuchProcess:
            pass
    return live


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_soak_10k_mixed_programs() -> None:
    me = psutil.Process()
    fds0 = _fds()
    children0 = {p.pid for p in me.children(recursive=True)}
    # Generous limits: a good program must not time out while other tests load the CPU.
    limits = SandboxLimits(timeout_s=2.0)
    os_limits = SandboxLimits(timeout_s=2.0, guard=False, audit_hook=False)
    os_program = dataclasses.replace(
        PROGRAM, allowed_imports=(*PROGRAM.allowed_imports, "os", "signal")
    )
    t0 = time.monotonic()
    total = 0
    rss_samples: list[int] = []
    pool_rss: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxIsolationWarning)
        with (
            Sandbox(program=PROGRAM, workers=2, limits=limits) as sb,
            Sandbox(program=os_program, workers=2, limits=os_limits) as osb,
        ):
            worker_pids = {p.pid for p in me.children(recursive=True)} - children0
            assert worker_pids
            for _round in range(10):
                batch = [MIX[i % len(MIX)] for i in range(700)] + [LOOP] * 2
                res = sb.execute([p for p, _ in batch])
                for (_, want), r in zip(batch, res, strict=True):
                    assert r.status == want, r
                os_batch = [OS_MIX[i % len(OS_MIX)] for i in range(300)]
                res = osb.execute([p for p, _ in os_batch])
                for (_, want), r in zip(os_batch, res, strict=True):
                    assert r.status == want, r
                total += len(batch) + len(os_batch)
                gc.collect()
                rss_samples.append(me.memory_info().rss)
                pool_rss.append(sum(_rss(p) for p in me.children(recursive=True)))
                # no child process outlives its program: only workers (+ zygotes) remain
                # once the last programs' processes have exited (give them 5 s under load)
                live = _live_children(me, children0)
                deadline = time.monotonic() + 5.0
                while len(live) > 4 * 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
                    live = _live_children(me, children0)
                assert len(live) <= 4 * 3, [(p.pid, p.name(), p.status()) for p in live]
                assert not os.path.exists("/tmp/jelm-soak")
            assert sb.stats["workers_replaced"] == 0 and osb.stats["workers_replaced"] == 0
            assert all(r.ok for r in sb.execute([GOOD] * 20))
    assert total >= 10_000
    elapsed = time.monotonic() - t0
    time.sleep(0.2)
    assert _fds() == fds0
    leftover = [p for p in me.children(recursive=True) if p.pid not in children0]
    assert leftover == [], leftover
    # parent memory: flat after the first rounds (allow 16 MiB of allocator noise)
    assert rss_samples[-1] - rss_samples[1] < 16 << 20, rss_samples
    # workers (managers, zygotes) too: their memory stays flat
    assert pool_rss[-1] - pool_rss[1] < 16 << 20, pool_rss
    print(f"soak: {total} programs in {elapsed:.1f} s")
