"""The shipped diff model (``lm_diff``) against GP from the square and CPPN seeds.

    python experiments/compare_lm.py [--generations 10] [--batch 32] [--random-seeds 0 1]
        [--operators lm_diff gp] [--model DIR --label NAME] [--table NAME] [--reuse]

For every seed (square, cppn_fixed, cppn_mutable), operator (lm_diff with the model jelm
ships at the default temperature 0.8, the same sampled without copying the parent,
without line-similarity placement, at 0.5,
with ``lm.retries`` 3, gp; ``--operators`` picks some; ``--model`` gives the LM operators
another jelm model, named ``--label`` in the table) and random seed, one Sodarace run
(12 x 12 x 12 grid, flat ground, 600 steps) at the same number of evaluations. From each
run's ledger: the share of children whose diff applied, whose program ran, and that gave
a valid walker; from its metrics: QD-score and coverage against evaluations. Writes,
next to this file:

- ``results/lm_<seed>_<operator>[_<label>]_<rs>.jsonl``: each run's per-generation
  metrics (``lm_diff_T05`` for the colder runs), and ``.statuses.json`` beside it, its
  ledger's rates and candidates/s (``--reuse`` builds the table from these files for the
  runs that have them and runs only the others);
- ``<table>.md`` (``lm_vs_gp.md``): the table;
- ``<table>_<seed>.png``: QD-score, coverage and max fitness against evaluations.
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
#: that trade; ``lm_diff retries=3`` samples a child again, up to 3 times, while its diff
#: fails or its program does not parse or uses an undefined name.
OPERATORS: dict[str, dict] = {
    "lm_diff": {"mutation": "lm_diff"},
    "lm_diff no copy": {"mutation": "lm_diff", "lm": {"copy": False}},
    "lm_diff strict": {"mutation": "lm_diff", "lm": {"similar": None}},
    "lm_diff T=0.5": {"mutation": "lm_diff", "lm": {"temperature": 0.5}},
    "lm_diff retries=3": {"mutation": "lm_diff", "lm": {"retries": 3}},
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


def load_run(name: str) -> tuple[list[dict], float, dict]:
    """A run of an earlier comparison from its results files (``--reuse``): its
    per-generation metrics, candidates/s and ledger rates."""
    results = HERE / "results"
    rows = [json.loads(x) for x in (results / f"{name}.jsonl").read_text().splitlines()]
    rates = json.loads((results / f"{name}.statuses.json").read_text())
    if "candidates_per_s" not in rates:
        raise SystemExit(f"{name}.statuses.json holds no candidates_per_s: run it again")
    return rows, rates.pop("candidates_per_s"), rates


def drawn_per_child(rows: list[dict], batch: int) -> float | None:
    """Samples an LM operator drew per child over a run's mutated generations (the
    metrics' ``drawn``; ``batch`` children each), or ``None`` for an operator that does
    not report it."""
    mutated = [m for m in rows if m.get("generation", 0) >= 1]
    if not mutated or any("drawn" not in m for m in mutated):
        return None
    return sum(m["drawn"] for m in mutated) / (batch * len(mutated))


def main() -> None:
    """Run the comparison and write its table and plots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", nargs="+", default=list(SEEDS))
    parser.add_argument("--operators", nargs="+", choices=list(OPERATORS), default=list(OPERATORS))
    parser.add_argument("--model", help="a jelm model directory for the LM operators")
    parser.add_argument("--label", default="", help="the --model's name in the table")
    parser.add_argument("--table", default="lm_vs_gp", help="the table's and plots' name")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a run whose results files exist from them instead of running it again",
    )
    args = parser.parse_args()
    if args.model and not args.label:
        parser.error("--model needs --label (its name in the table and the results files)")
    scratch = Path(tempfile.mkdtemp(prefix="jelm-lm-"))
    runs: dict[tuple[str, str, int], list[dict]] = {}
    rates: dict[tuple[str, str, int], dict] = {}
    speed: dict[tuple[str, str, int], float] = {}
    try:
        for seed in args.seeds:
            for op in args.operators:
                for rs in args.random_seeds:
                    key = (seed, op, rs)
                    operator = OPERATORS[op]
                    if args.model and operator["mutation"].startswith("lm_"):
                        backend = {"kind": "jelm", "path": str(Path(args.model).resolve())}
                        lm = {**operator.get("lm", {}), "backend": backend}
                        operator = {**operator, "lm": lm}
                    settings = {
                        **operator,
                        "seed": rs,
                        "seeds": [seed],
                        "generations": args.generations,
                        "batch": args.batch,
                        "steps": args.steps,
                    }
                    label = op.replace(" ", "_").replace("=", "").replace(".", "")
                    if args.model and op != "gp":
                        label += f"_{args.label}"
                    name = f"lm_{seed}_{label}_{rs}"
                    stored = HERE / "results" / f"{name}.statuses.json"
                    if args.reuse and stored.exists():
                        runs[key], speed[key], rates[key] = load_run(name)
                        continue
                    runs[key], speed[key], rates[key] = run_once(
                        settings,
                        scratch / name,
                        name,
                        inspect=lambda out: ledger_rates(out / "ledger.sqlite"),
                    )
                    stored.write_text(
                        json.dumps({**rates[key], "candidates_per_s": speed[key]}) + "\n"
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
        "| coverage % | max fitness | candidates/s | samples/child |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def name(op: str) -> str:
        return f"{op}, {args.label}" if args.model and op != "gp" else op

    for seed in args.seeds:
        for op in args.operators:
            keys = [(seed, op, rs) for rs in args.random_seeds]
            finals = [runs[k][-1] for k in keys]
            drawn = [drawn_per_child(runs[k], args.batch) for k in keys]
            lines.append(
                f"| {seed} | {name(op)} "
                f"| {cell([100 * rates[k]['applied'] for k in keys], '{:.0f}')} "
                f"| {cell([100 * rates[k]['ran'] for k in keys], '{:.0f}')} "
                f"| {cell([100 * rates[k]['valid'] for k in keys], '{:.0f}')} "
                f"| {cell([f['qd_score'] for f in finals], '{:.0f}')} "
                f"| {cell([100 * f['coverage'] for f in finals])} "
                f"| {cell([f['max_fitness'] for f in finals], '{:.2f}')} "
                f"| {cell([speed[k] for k in keys])} "
                f"| {'-' if None in drawn else cell(drawn, '{:.2f}')} |"
            )
        curves = {
            f"{name(op)} rs{rs}": runs[(seed, op, rs)]
            for op in args.operators
            for rs in args.random_seeds
        }
        plots.curves(curves, HERE / f"{args.table}_{seed}.png")
    lines += ["", "Failure classes (all runs of each operator, summed):", ""]
    for op in args.operators:
        total: collections.Counter = collections.Counter()
        for key, r in rates.items():
            if key[1] == op:
                total.update(r["statuses"])
        lines.append(f"- {name(op)}: " + ", ".join(f"{k} {v}" for k, v in total.most_common()))
    (HERE / f"{args.table}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
