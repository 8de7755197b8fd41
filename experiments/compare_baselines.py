"""GP against direct mutation from each of the paper's Sodarace seeds, at equal budgets.

    python experiments/compare_baselines.py [--generations 20] [--batch 32] [--steps 600]

For every seed (square, radial, cppn_fixed, cppn_mutable), operator (gp, direct) and
random seed (0, 1, 2), one run of the Sodarace job (12 x 12 x 12 grid over height, width
and mass, flat ground) with the same number of evaluations. Writes, next to this file:

- ``results/<seed>_<operator>_<rs>.jsonl``: each run's per-generation metrics;
- ``baselines.md``: final QD-score, coverage and max fitness (mean and std over the 3
  random seeds) and end-to-end candidates/s per operator;
- ``baselines_<seed>.png``: QD-score, coverage and max fitness against evaluations.

Run directories go to a temporary folder (ledgers are large); only metrics are kept.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from comparison import HERE, cell, run_once  # experiments/comparison.py, beside this script
from jelm.io import plots

SEEDS = ("square", "radial", "cppn_fixed", "cppn_mutable")
OPERATORS = ("gp", "direct")
RANDOM_SEEDS = (0, 1, 2)


def main() -> None:
    """Run the comparison and write its table and plots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="jelm-baselines-"))
    runs: dict[tuple[str, str, int], list[dict]] = {}
    rate: dict[tuple[str, str, int], float] = {}
    try:
        for seed in SEEDS:
            for op in OPERATORS:
                for rs in RANDOM_SEEDS:
                    settings = {
                        "seed": rs,
                        "mutation": op,
                        "seeds": [seed],
                        "generations": args.generations,
                        "batch": args.batch,
                        "steps": args.steps,
                    }
                    rows, rate[(seed, op, rs)], _ = run_once(
                        settings, scratch / f"{seed}_{op}_{rs}", f"{seed}_{op}_{rs}"
                    )
                    runs[(seed, op, rs)] = rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    lines = [
        f"Budget per run: {args.generations} generations x {args.batch} candidates + the "
        f"seed = {args.generations * args.batch + 1} evaluations of {args.steps} steps "
        "(10 simulated s), 12 x 12 x 12 grid, flat ground; mean +- std over random seeds "
        f"{', '.join(map(str, RANDOM_SEEDS))}.",
        "",
        "| seed | operator | QD-score | coverage % | max fitness | valid % | candidates/s "
        "(end to end) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for seed in SEEDS:
        for op in OPERATORS:
            finals = [runs[(seed, op, rs)][-1] for rs in RANDOM_SEEDS]
            rates = [rate[(seed, op, rs)] for rs in RANDOM_SEEDS]
            valid = [
                np.mean([r["valid_rate"] for r in runs[(seed, op, rs)][1:] if "valid_rate" in r])
                for rs in RANDOM_SEEDS
            ]

            lines.append(
                f"| {seed} | {op} | {cell([f['qd_score'] for f in finals])} | "
                f"{cell([100 * f['coverage'] for f in finals])} | "
                f"{cell([f['max_fitness'] for f in finals], '{:.2f}')} | "
                f"{cell([100 * v for v in valid], '{:.0f}')} | {cell(rates, '{:.0f}')} |"
            )
        curves = {f"{op} rs{rs}": runs[(seed, op, rs)] for op in OPERATORS for rs in RANDOM_SEEDS}
        plots.curves(curves, HERE / f"baselines_{seed}.png")
    (HERE / "baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
