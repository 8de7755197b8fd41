"""Throughput of the program sandbox: ``python -m jelm.programs.bench_sandbox``.

Prints exactly one JSON line on stdout: programs/s for the seed programs (ELM's starting
genotypes, Lehman et al. 2022 §3) and for a mix of hostile programs, with the isolation
layers that were active and the limits in force. Progress and warnings go to stderr.

Besides the wall-clock rate it reports the CPU time one program costs, summed over every
process involved (the calling process, each worker's manager and zygote, and the children
the zygotes forked and reaped; read from ``/proc``), split by role. The work is CPU bound,
so ``cpus / cpu_ms_per_program`` is the rate an otherwise idle machine can reach; on a
shared machine the wall-clock rate is lower, and the CPU figures say why.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import time
from typing import Any

from jelm.programs.sandbox import Sandbox, SandboxLimits

#: Fast-failing hostile programs (infinite loops are left out: each one simply costs a
#: worker ``timeout_s`` and would measure the timeout, not the sandbox).
HOSTILE: tuple[str, ...] = (
    "def make_walker(:\n    pass",
    "def make_walker():\n    return 1 / 0",
    "import os\ndef make_walker():\n    os.system('id')",
    "def make_walker():\n    return open('/etc/passwd').read()",
    "def make_walker():\n    return 42",
    "def make_walker():\n    return bytes(10**10)",
    "def make_walker():\n    while True:\n        print('x' * 100000)",
    "def make_walker():\n    return make_walker()",
    "def make_walker():\n    return getattr(1, '_' * 2 + 'class' + '_' * 2)",
    "def make_walker():\n    return ().__class__.__base__.__subclasses__()",
)


def seed_programs() -> tuple[list[str], str]:
    """The seed programs from ``jelm.domains.sodarace.seeds`` (and where they came from)."""
    from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source

    return [seed_source(name) for name in SEED_NAMES], "jelm.domains.sodarace.seeds"


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; children files per thread)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _proc_cpu(pid: int) -> tuple[float, float]:
    """(own CPU s, CPU s of reaped children) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck, (int(fields[13]) + int(fields[14])) / tck


def _cpu_by_role(sb: Sandbox) -> dict[str, float]:
    """CPU seconds so far: parent, managers, zygotes, and the children they reaped."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    roles = collections.Counter({"parent": ru.ru_utime + ru.ru_stime})
    managers = {w.inner_pid for w in sb._workers}
    for w in sb._workers:
        for pid in _descendants(w.proc.pid):
            own, reaped = _proc_cpu(pid)
            if pid in managers:
                roles["manager"] += own
            else:  # the zygote (a program child alive right now is counted when reaped)
                roles["zygote"] += own
                roles["children"] += reaped
    return dict(roles)


def run(sb: Sandbox, programs: list[str], n: int) -> tuple[float, dict[str, int], dict[str, float]]:
    """Execute ``n`` programs (cycling through ``programs``) in one batch.

    Returns the rate, the status counts and the CPU ms per program by role.
    """
    batch = [programs[i % len(programs)] for i in range(n)]
    c0 = _cpu_by_role(sb)
    t = time.perf_counter()
    results = sb.execute(batch)
    dt = time.perf_counter() - t
    c1 = _cpu_by_role(sb)
    cpu = {k: round((c1.get(k, 0.0) - c0.get(k, 0.0)) / n * 1e3, 3) for k in c1}
    cpu["total"] = round(sum(cpu.values()), 3)
    return n / dt, dict(collections.Counter(r.status.value for r in results)), cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its JSON line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000, help="seed programs to execute")
    ap.add_argument("--n-hostile", type=int, default=3000, help="hostile programs to execute")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    args = ap.parse_args(argv)

    seeds, source = seed_programs()
    limits = SandboxLimits()
    with Sandbox(workers=args.workers, limits=limits) as sb:
        run(sb, seeds, min(200, args.n))  # warm-up
        seed_runs = [run(sb, seeds, args.n) for _ in range(args.repeats)]
        hostile_runs = [run(sb, list(HOSTILE), args.n_hostile) for _ in range(args.repeats)]
        iso = sb.isolation
        seed_cpu = min((c for _, _, c in seed_runs), key=lambda c: c["total"])
        hostile_cpu = min((c for _, _, c in hostile_runs), key=lambda c: c["total"])
        cpus = os.cpu_count() or 1
        out = {
            "bench": "jelm.programs.sandbox",
            "seed_programs_per_s": round(max(r for r, _, _ in seed_runs), 1),
            "hostile_programs_per_s": round(max(r for r, _, _ in hostile_runs), 1),
            "seed_runs_per_s": [round(r, 1) for r, _, _ in seed_runs],
            "hostile_runs_per_s": [round(r, 1) for r, _, _ in hostile_runs],
            "seed_cpu_ms_per_program": seed_cpu,
            "hostile_cpu_ms_per_program": hostile_cpu,
            "seed_cpu_bound_programs_per_s": round(cpus / seed_cpu["total"] * 1e3, 1),
            "n_seed": args.n,
            "n_hostile": args.n_hostile,
            "seed_statuses": seed_runs[-1][1],
            "hostile_statuses": hostile_runs[-1][1],
            "seeds": source,
            "n_distinct_seeds": len(seeds),
            "workers": sb.n_workers,
            "cpus": os.cpu_count(),
            "goal_seed_programs_per_s": 1000,
            "isolation": {k: v for k, v in iso.items() if k != "limits"},
            "limits": iso.get("limits"),
            "python": sys.version.split()[0],
        }
    print(json.dumps(out, default=str), flush=True)
    return out


if __name__ == "__main__":
    main()
