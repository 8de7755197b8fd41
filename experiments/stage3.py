"""Stage 3 (ELM §7, Figs. 18-19) over random seeds and the paper's two terrain
distributions: PPO-tuned inventors against the stage-2 model they start from.

    python experiments/stage3.py --model RUN2/model --dataset RUN2/dataset.jsonl \
        [--out runs/stage3] [--distributions walls_tunnel walls_bumpy] [--seeds 0 1 2] \
        [--n 32] [--set KEY=VALUE ...] [--table-only]

For every distribution and random seed, one ``python -m jelm.rl.stage3`` run (its ``cpu``
preset unless ``--set`` changes it) in ``--out`` (a finished run is reused; a cut one
resumes), then ``python -m jelm.rl.evaluate`` on it with ``--n`` samples per terrain and
the stage-2 dataset. Writes, next to this file, ``stage3/``: ``table.md`` (per terrain,
mean ± std over seeds of the policy's mean and best reward, the stage-2 model's mean and
best-of-N, the dataset's best; and the two targets: the policy's mean above the stage-2
model's on every terrain, its best at or above the best-of-N on at least half),
``results.jsonl`` (each run's evaluation), each run's ``curves.png`` and
``terrains.png``, and for each terrain the GIF of the policy's best walker there (of the
first run that has one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent / "stage3"


def run_one(args: argparse.Namespace, dist: str, seed: int) -> dict:
    """Train (or resume) and evaluate one run; its evaluation."""
    out = Path(args.out) / f"{dist}-{seed}"
    cmd = [
        sys.executable, "-m", "jelm.rl.stage3", "--out", str(out), "--model", args.model,
        "--terrains", dist, "--seed", str(seed), "--no-progress",
    ]  # fmt: skip
    for item in args.set:
        key, _, value = item.partition("=")
        cmd += ["--" + key.replace("_", "-"), value]
    if not (out / "policy" / "policy.json").is_file():
        subprocess.run(cmd, check=True)
    evaluation = out / "evaluation.json"
    if not evaluation.is_file() or json.loads(evaluation.read_text())["n"] != args.n:
        cmd = [sys.executable, "-m", "jelm.rl.evaluate", str(out), "--n", str(args.n)]
        if args.dataset:
            cmd += ["--dataset", args.dataset]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(evaluation.read_text())
    target = HERE / f"{dist}-{seed}"
    target.mkdir(parents=True, exist_ok=True)
    # one GIF per terrain (the first run's that has it): they weigh about a MB each
    gifs = [p.name for p in out.glob("best_*.gif") if not any(HERE.glob(f"*/{p.name}"))]
    for name in ("curves.png", "terrains.png", *gifs):
        shutil.copy(out / name, target / name)
    return {"distribution": dist, "seed": seed, **result}


def _ms(values: list[float | None]) -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "-"
    return f"{np.mean(xs):.1f} ± {np.std(xs):.1f}"


def table(results: list[dict], n: int) -> str:
    """The markdown table of the runs' evaluations, grouped by distribution and terrain."""
    lines = [
        f"Mean ± std over random seeds; {n} samples per terrain for the policy and for the "
        "stage-2 model (best-of-N with the same N). Rewards: distance in the terrain's "
        "direction of progress over 600 steps, at least 0; a program that gives no walker "
        "earns -1. The stage-2 model samples at the policy's temperature (0.5).",
        "",
        "| distribution | terrain | seeds | policy mean | stage-2 mean | policy best "
        "| stage-2 best-of-N | dataset best | policy valid % | stage-2 valid % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    checks = []
    for dist in dict.fromkeys(r["distribution"] for r in results):
        runs = [r for r in results if r["distribution"] == dist]
        for terrain in runs[0]["terrains"]:
            rows = [r["terrains"][terrain] for r in runs]
            pol = [e["policy"] for e in rows]
            ref = [e["stage2"] for e in rows]
            data = [e["dataset"]["best"] if e["dataset"] else None for e in rows]
            lines.append(
                f"| {dist} | {terrain} | {len(rows)} | {_ms([p['mean'] for p in pol])} "
                f"| {_ms([p['mean'] for p in ref])} | {_ms([p['best'] for p in pol])} "
                f"| {_ms([p['best'] for p in ref])} | {_ms(data)} "
                f"| {_ms([100 * p['valid'] for p in pol])} "
                f"| {_ms([100 * p['valid'] for p in ref])} |"
            )
            checks.append(
                (
                    np.mean([p["mean"] for p in pol]) > np.mean([p["mean"] for p in ref]),
                    np.mean([p["best"] for p in pol]) >= np.mean([p["best"] for p in ref]),
                )
            )
    above = sum(a for a, _ in checks)
    reach = sum(b for _, b in checks)
    lines += [
        "",
        f"Policy mean above the stage-2 mean on {above} of {len(checks)} terrains "
        f"(target: all); policy best at or above best-of-N on {reach} of {len(checks)} "
        f"(target: at least half). Means over seeds.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the stage-2 model directory")
    parser.add_argument("--dataset", default="", help="the stage-2 dataset.jsonl")
    parser.add_argument("--out", default="runs/stage3")
    parser.add_argument("--distributions", nargs="+", default=["walls_tunnel", "walls_bumpy"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--set", nargs="*", default=[], help="stage-3 options as KEY=VALUE")
    parser.add_argument(
        "--table-only", action="store_true", help="tabulate the evaluated runs; start none"
    )
    args = parser.parse_args()
    HERE.mkdir(exist_ok=True)
    pairs = [(d, s) for s in args.seeds for d in args.distributions]
    if args.table_only:  # the runs already evaluated, none started
        pairs = [
            (d, s) for d, s in pairs if (Path(args.out) / f"{d}-{s}/evaluation.json").is_file()
        ]
    results = [run_one(args, d, s) for d, s in pairs]
    (HERE / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (HERE / "table.md").write_text(table(results, args.n))
    print((HERE / "table.md").read_text())


if __name__ == "__main__":
    main()
