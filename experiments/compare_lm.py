"""The shipped diff model (``lm_diff``) against GP from the square and CPPN seeds.

    python experiments/compare_lm.py [--generations 10] [--batch 32] [--random-seeds 0 1]
        [--operators lm_diff gp]

For every seed (square, cppn_fixed, cppn_mutable), operator (lm_diff with the model jelm
ships at the default temperature 0.8, the same sampled without copying the parent,
without line-similarity placement, at 0.5,
gp; ``--operators`` picks some) and random seed, one Sodarace run
(12 x 12 x 12 grid, flat ground, 600 steps) at the same number of evaluations. From each
run's ledger: the share of children whose diff applied, whose program ran, and that gave
a valid walker; from its metrics: QD-score and coverage against evaluations. Writes,
next to this file:

- ``results/lm_<seed>_<operator>_<rs>.jsonl``: each run's per-generation metrics
  (``lm_diff_T05`` for the colder runs);
- ``lm_vs_gp.md``: the table;
- ``lm_vs_gp_<seed>.png``: QD-score, coverage and max fitness against evaluations.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import tempfile
from pathlib import Path

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from comparison import HERE, cell, run_once  # experiments/comparison.py, beside this script
from jelm.io import plots
from jelm.qd.ledger import Ledger

SEEDS = ("square", "cppn_fixed", "cppn_mutable")
#: The compared operators: table label -> run settings. ``lm_diff`` samples at the
#: configuration's default temperature (0.8), its context and removed lines copying the
#: parent, and places hunks by line similarity when exact and fuzzy placement fail;
#: ``lm_diff no copy`` samples unconstrained (``lm.copy: false``); ``lm_diff strict``
#: places no hunk by similarity (``lm.similar: null``); the small shipped model writes
#: diffs that apply more often when it samples colder, so ``lm_diff T=0.5`` measures
#: that trade.
OPERATORS: dict[str, dict] = {
    "lm_diff": {"mutation": "lm_diff"},
    "lm_diff no copy": {"mutation": "lm_diff", "lm": {"copy": False}},
    "lm_diff strict": {"mutation": "lm_diff", "lm": {"similar": None}},
    "lm_diff T=0.5": {"mutation": "lm_diff", "lm": {"temperature": 0.5}},
    "gp": {"mutation": "gp"},
}
#: Sandbox statuses (jelm.programs.sandbox.Status) of programs that did not run to the
#: end: they did not parse, raised, were stopped or crashed. A program that returned
#: something (a valid walker or not) ran.
DID_NOT_RUN = {
    "syntax_error",
    "exception",
    "timeout",
    "memory_limit",
    "forbidden",
    "crashed",
    "internal_error",
}


def ledger_rates(path: Path) -> dict[str, float]:
    """Shares of mutated children (generation >= 1) that got a program from their diff,
    whose program ran, and that gave a valid walker; plus the failure classes."""
    with Ledger(path) as ledger:
        statuses = [r.status for r in ledger.iter_candidates() if r.generation >= 1]
    n = max(1, len(statuses))
    produced = [
        s for s in statuses if not s.startswith("diff_") and s not in ("backend_error", "lm_empty")
    ]
    ran = [s for s in produced if s not in DID_NOT_RUN]
    return {
        "children": len(statuses),
        "applied": len(produced) / n,
        "ran": len(ran) / n,
        "valid": sum(s == "ok" for s in statuses) / n,
        "statuses": dict(collections.Counter(statuses).most_common()),
    }


def main() -> None:
    """Run the comparison and write its table and plots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", nargs="+", default=list(SEEDS))
    parser.add_argument("--operators", nargs="+", choices=list(OPERATORS), default=list(OPERATORS))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="jelm-lm-"))
    runs: dict[tuple[str, str, int], list[dict]] = {}
    rates: dict[tuple[str, str, int], dict] = {}
    speed: dict[tuple[str, str, int], float] = {}
    try:
        for seed in args.seeds:
            for op in args.operators:
                for rs in args.random_seeds:
                    key = (seed, op, rs)
                    settings = {
                        **OPERATORS[op],
                        "seed": rs,
                        "seeds": [seed],
                        "generations": args.generations,
                        "batch": args.batch,
                        "steps": args.steps,
                    }
                    label = op.replace(" ", "_").replace("=", "").replace(".", "")
                    name = f"lm_{seed}_{label}_{rs}"
                    runs[key], speed[key], rates[key] = run_once(
                        settings,
                        scratch / name,
                        name,
                        inspect=lambda out: ledger_rates(out / "ledger.sqlite"),
                    )
                    (HERE / "results" / f"{name}.statuses.json").write_text(
                        json.dumps(rates[key]) + "\n"
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    budget = args.generations * args.batch + 1
    lines = [
        f"Budget per run: {args.generations} generations x {args.batch} candidates + the seed "
        f"= {budget} evaluations of {args.steps} steps, 12 x 12 x 12 grid, flat ground; mean "
        f"+- std over random seeds {', '.join(map(str, args.random_seeds))}. Shares are of "
        "mutated children.",
        "",
        "| seed | operator | diff applies % | program runs % | valid walker % | QD-score "
        "| coverage % | max fitness | candidates/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    for seed in args.seeds:
        for op in args.operators:
            keys = [(seed, op, rs) for rs in args.random_seeds]
            finals = [runs[k][-1] for k in keys]
            lines.append(
                f"| {seed} | {op} | {cell([100 * rates[k]['applied'] for k in keys], '{:.0f}')} "
                f"| {cell([100 * rates[k]['ran'] for k in keys], '{:.0f}')} "
                f"| {cell([100 * rates[k]['valid'] for k in keys], '{:.0f}')} "
                f"| {cell([f['qd_score'] for f in finals], '{:.0f}')} "
                f"| {cell([100 * f['coverage'] for f in finals])} "
                f"| {cell([f['max_fitness'] for f in finals], '{:.2f}')} "
                f"| {cell([speed[k] for k in keys])} |"
            )
        curves = {
            f"{op} rs{rs}": runs[(seed, op, rs)]
            for op in args.operators
            for rs in args.random_seeds
        }
        plots.curves(curves, HERE / f"lm_vs_gp_{seed}.png")
    lines += ["", "Failure classes (all runs of each operator, summed):", ""]
    for op in args.operators:
        total: collections.Counter = collections.Counter()
        for key, r in rates.items():
            if key[1] == op:
                total.update(r["statuses"])
        lines.append(f"- {op}: " + ", ".join(f"{k} {v}" for k, v in total.most_common()))
    (HERE / "lm_vs_gp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
