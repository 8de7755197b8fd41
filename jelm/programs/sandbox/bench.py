"""Throughput of the program sandbox: ``python -m jelm.programs.sandbox.bench``.

Prints exactly one JSON line on stdout: programs/s for a domain's seed programs (ELM's
starting genotypes, Lehman et al. 2022 §3; ``--domain``, default ``sodarace``) and for a
mix of hostile programs, with the isolation layers that were active and the limits in
force. Progress and warnings go to stderr. Figures and how they were measured:
``jelm/programs/SANDBOX.md``.

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

from jelm.programs.sandbox.pool import Sandbox
from jelm.programs.sandbox.types import SandboxLimits

#: Fast-failing hostile programs, ``{entry}`` standing for the domain's entry function
#: (infinite loops are left out: each one simply costs a worker ``timeout_s`` and would
#: measure the timeout, not the sandbox).
HOSTILE: tuple[str, ...] = (
    "def {entry}(:\n    pass",
    "def {entry}():\n    return 1 / 0",
    "import os\ndef {entry}():\n    os.system('id')",
    "def {entry}():\n    return open('/etc/passwd').read()",
    "def {entry}():\n    return 42",
    "def {entry}():\n    return bytes(10**10)",
    "def {entry}():\n    while True:\n        print('x' * 100000)",
    "def {entry}():\n    return {entry}()",
    "def {entry}():\n    return getattr(1, '_' * 2 + 'class' + '_' * 2)",
    "def {entry}():\n    return ().__class__.__base__.__subclasses__()",
)


def hostile_programs(entry: str) -> list[str]:
    """:data:`HOSTILE` for a domain whose programs define ``entry``."""
    return [p.replace("{entry}", entry) for p in HOSTILE]


def seed_programs(domain: Any) -> list[str]:
    """The texts of a :class:`~jelm.domains.base.Domain`'s seed programs."""
    return [domain.seed_program(name) for name in domain.seed_names()]


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
    return n / dt, dict(collections.Counter(str(r.status) for r in results)), cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its JSON line."""
    from jelm.domains import DOMAINS, make_domain

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", default="sodarace", choices=DOMAINS.names())
    ap.add_argument("--n", type=int, default=3000, help="seed programs to execute")
    ap.add_argument("--n-hostile", type=int, default=3000, help="hostile programs to execute")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    args = ap.parse_args(argv)

    domain = make_domain(args.domain)
    program = domain.program
    seeds = seed_programs(domain)
    hostile = hostile_programs(program.entry)
    limits = SandboxLimits()
    with Sandbox(program, workers=args.workers, limits=limits) as sb:
        run(sb, seeds, min(200, args.n))  # warm-up
        seed_runs = [run(sb, seeds, args.n) for _ in range(args.repeats)]
        hostile_runs = [run(sb, hostile, args.n_hostile) for _ in range(args.repeats)]
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
            "seed_cpu_bound_programs_per_s": (
                round(cpus / seed_cpu["total"] * 1e3, 1) if seed_cpu["total"] > 0 else None
            ),
            "n_seed": args.n,
            "n_hostile": args.n_hostile,
            "seed_statuses": seed_runs[-1][1],
            "hostile_statuses": hostile_runs[-1][1],
            "domain": args.domain,
            "n_distinct_seeds": len(seeds),
            "workers": sb.n_workers,
            "cpus": os.cpu_count(),
            "isolation": {k: v for k, v in iso.items() if k != "limits"},
            "limits": iso.get("limits"),
            "python": sys.version.split()[0],
        }
    print(json.dumps(out, default=str), flush=True)
    return out


if __name__ == "__main__":
    main()
