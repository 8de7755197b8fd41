"""Throughput of the program sandbox: ``python -m jelm.programs.bench_sandbox``.

Prints exactly one JSON line on stdout: programs/s for the seed programs (ELM's starting
genotypes, Lehman et al. 2022 §3) and for a mix of hostile programs, with the isolation
layers that were active and the limits in force. Progress and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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
    """The seed programs from ``jelm.programs.seeds`` (and where they came from)."""
    from jelm.programs.seeds import SEED_NAMES, seed_source

    return [seed_source(name) for name in SEED_NAMES], "jelm.programs.seeds"


def run(sb: Sandbox, programs: list[str], n: int) -> tuple[float, dict[str, int]]:
    """Execute ``n`` programs (cycling through ``programs``) in one batch; return rate, counts."""
    batch = [programs[i % len(programs)] for i in range(n)]
    t = time.perf_counter()
    results = sb.execute(batch)
    dt = time.perf_counter() - t
    return n / dt, dict(collections.Counter(r.status.value for r in results))


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
        out = {
            "bench": "jelm.programs.sandbox",
            "seed_programs_per_s": round(max(r for r, _ in seed_runs), 1),
            "hostile_programs_per_s": round(max(r for r, _ in hostile_runs), 1),
            "seed_runs_per_s": [round(r, 1) for r, _ in seed_runs],
            "hostile_runs_per_s": [round(r, 1) for r, _ in hostile_runs],
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
