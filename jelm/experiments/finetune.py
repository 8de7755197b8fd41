"""Rounds of self-improvement: ``python -m jelm.experiments.finetune`` (ELM, arXiv
2206.08896v1, §5, Fig. 11).

Round ``r`` runs ELM (``lm_diff``) from each seed program with each random seed, using
model ``r`` (round 0: ``--model``, the shipped one by default); then fine-tunes model ``r``
on the diffs those runs accepted (:mod:`jelm.lm.finetune`), which gives model ``r + 1``
for the next round. ``--bootstrap gp`` first runs GP from the same seeds and adds its
accepted diffs to round 0's fine-tuning set (every table says so); ``--corpus`` and
``--rename`` pass through to the fine-tuning.

Everything lives under ``--out``: ``round<r>/runs/<seed>-<rs>/`` (ELM run directories),
``round<r>/finetune/`` (the fine-tuning run, its model in ``model/``), ``bootstrap/``,
``results.jsonl`` (one row per run: round, seed, random seed, share of diffs that apply,
share of valid children, niches filled, QD-score, max fitness), ``table.md`` and
``rounds.png``. Every piece resumes: running the command again after a kill finishes what
is missing and reuses what is done. ``--ship`` then copies the last round's model into
``jelm/lm/shipped`` with its record (:func:`ship_rounds`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jelm.sim  # noqa: F401  (first: pins XLA flags before JAX starts)
from jelm.options import add_options, values_of

__all__ = ["Plan", "main", "run_rounds", "ship_rounds"]

PAPER_SEEDS = ("square", "radial", "cppn_fixed", "cppn_mutable")

#: Statuses of children that got no program from their diff (ledger ``status``).
_NO_PROGRAM_PREFIX = "diff_"
_NO_PROGRAM = ("backend_error", "lm_empty", "mutation_failed")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the rounds run (``config.json`` of the output directory)."""

    model: str = "shipped"
    rounds: int = 2
    seeds: tuple[str, ...] = PAPER_SEEDS
    random_seeds: tuple[int, ...] = (0, 1, 2)
    generations: int = 10
    batch: int = 32
    steps: int = 600
    bootstrap: str = "none"  # "none" or "gp"
    select: str = "accepted"
    finetune_steps: int = 300
    lr: float = 3e-4
    corpus: int = 2000
    rename: float = 0.5


def run_stats(run_dir: Path) -> dict[str, Any]:
    """A finished run's row: shares of its children (generation >= 1) whose diff gave a
    program and that gave a valid walker, and its final archive metrics."""
    from jelm.qd.ledger import Ledger

    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        statuses = [r.status for r in ledger.iter_candidates() if (r.generation or 0) >= 1]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    last = rows[-1]
    n = max(1, len(statuses))
    applied = [s for s in statuses if not s.startswith(_NO_PROGRAM_PREFIX) and s not in _NO_PROGRAM]
    return {
        "children": len(statuses),
        "applied": len(applied) / n,
        "valid": sum(s == "ok" for s in statuses) / n,
        "niches": int(last["filled"]),
        "coverage": last["coverage"],
        "qd_score": last["qd_score"],
        "max_fitness": last["max_fitness"],
        "evaluations": last.get("evaluations"),
    }


def _elm_run(plan: Plan, mutation: str, model: str, seed: str, rs: int, out: Path) -> Path:
    """One ELM run (resumed if ``out`` holds part of it). Its compiled programs are
    dropped afterwards (reloaded from the XLA cache by the next run): a process that
    keeps every run's programs runs out of memory mappings after a few dozen runs."""
    import jax

    from jelm.experiments.config import RunConfig, from_mapping
    from jelm.experiments.run import evolve, use_xla_cache

    use_xla_cache(RunConfig.xla_cache)

    settings: dict[str, Any] = {
        "mutation": mutation,
        "seeds": [seed],
        "seed": rs,
        "generations": plan.generations,
        "batch": plan.batch,
        "steps": plan.steps,
        "renders": 0,
        "progress": False,
        "checkpoint_every": max(1, plan.generations // 2),
    }
    if mutation.startswith("lm"):
        settings["lm"] = {"backend": {"kind": "jelm", "path": model}}
    evolve(from_mapping(settings), out, None, log=lambda line: None)
    jax.clear_caches()
    return out


def run_rounds(plan: Plan, out: Path, log: Any = print) -> list[dict[str, Any]]:
    """Run (or finish) every round of ``plan`` in ``out``; returns the result rows."""
    import jax

    from jelm.lm.finetune import FinetuneConfig, finetune

    out.mkdir(parents=True, exist_ok=True)
    stored = out / "config.json"
    wanted = json.loads(json.dumps(dataclasses.asdict(plan)))
    if stored.exists() and json.loads(stored.read_text()) != wanted:
        raise SystemExit(f"{out} holds rounds of another plan; use a new --out")
    stored.write_text(json.dumps(wanted, indent=1) + "\n")
    results_path = out / "results.jsonl"
    done = {}
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            done[(row["round"], row["operator"], row["seed"], row["random_seed"])] = row
    rows = list(done.values())

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def runs(round_: int | str, mutation: str, model: str, base: Path) -> list[Path]:
        paths = []
        for seed in plan.seeds:
            for rs in plan.random_seeds:
                path = base / f"{seed}-{rs}"
                key = (round_, mutation, seed, rs)
                if key not in done:
                    t0 = time.time()
                    _elm_run(plan, mutation, model, seed, rs, path)
                    row = {"round": round_, "operator": mutation, "seed": seed, "random_seed": rs}
                    row.update(run_stats(path), wall_s=time.time() - t0, model=model)
                    record(row)
                    log(json.dumps(row))
                paths.append(path)
        return paths

    boot: list[Path] = []
    if plan.bootstrap == "gp":
        boot = runs("bootstrap", "gp", "", out / "bootstrap")
    model = plan.model
    for r in range(plan.rounds + 1):
        ledgers = runs(r, "lm_diff", model, out / f"round{r}" / "runs")
        if r == plan.rounds:
            break
        if r == 0:
            ledgers = ledgers + boot
        cfg = FinetuneConfig(
            model=model,
            ledgers=tuple(str(p.absolute()) for p in ledgers),
            select=plan.select,
            max_steps=plan.finetune_steps,
            lr=plan.lr,
            corpus=plan.corpus,
            rename=plan.rename,
            seed=r,
        )
        tuned = out / f"round{r}" / "finetune"
        if not (tuned / "summary.json").exists():
            summary = finetune(cfg, tuned, progress=False)
            log(json.dumps({"round": r, "finetune": summary}))
            jax.clear_caches()
        model = str((tuned / "model").absolute())
    write_table(plan, rows, out)
    return rows


def write_table(plan: Plan, rows: Sequence[dict[str, Any]], out: Path) -> None:
    """``table.md`` (mean ± std over random seeds per round and seed) and ``rounds.png``."""
    import numpy as np

    def cell(values: list[float], fmt: str) -> str:
        return f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values))}"

    rounds = sorted({r["round"] for r in rows}, key=lambda x: (isinstance(x, int), x))
    lines = [
        f"Per run: {plan.generations} generations x {plan.batch} candidates + the seed, "
        f"{plan.steps} steps; mean ± std over random seeds {list(plan.random_seeds)}. "
        f"Bootstrap: {plan.bootstrap}. Shares are of mutated children.",
        "",
        "| round | operator | seed | diff applies % | valid % | niches | QD-score | max fitness |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for rnd in rounds:
        for seed in plan.seeds:
            sel = [r for r in rows if r["round"] == rnd and r["seed"] == seed]
            if not sel:
                continue
            lines.append(
                f"| {rnd} | {sel[0]['operator']} | {seed} "
                f"| {cell([100 * r['applied'] for r in sel], '{:.0f}')} "
                f"| {cell([100 * r['valid'] for r in sel], '{:.0f}')} "
                f"| {cell([r['niches'] for r in sel], '{:.1f}')} "
                f"| {cell([r['qd_score'] for r in sel], '{:.0f}')} "
                f"| {cell([r['max_fitness'] for r in sel], '{:.2f}')} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    _plot(plan, rows, rounds, out / "rounds.png")


def _plot(plan: Plan, rows: Sequence[dict[str, Any]], rounds: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    numbered = [r for r in rounds if isinstance(r, int)]
    keys = [("valid", "valid share"), ("niches", "niches filled"), ("qd_score", "QD-score")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, (key, label) in zip(axes, keys, strict=True):
        for seed in plan.seeds:
            means = [
                np.mean([r[key] for r in rows if r["round"] == k and r["seed"] == seed])
                for k in numbered
            ]
            ax.plot(numbered, means, "o-", label=seed)
        ax.set_xlabel("round")
        ax.set_title(label)
        ax.set_xticks(numbered)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


#: A model directory's files that make the model (the rest is its record).
_MODEL_FILES = ("config.json", "tokenizer.json", "params")


def ship_rounds(out: Path, dest: Path | None = None) -> Path:
    """Make the last fine-tuned model of the rounds in ``out`` the shipped one (``dest``,
    by default ``jelm/lm/shipped``): its files replace the model's, and ``finetune.json``
    records every round's fine-tuning (configuration, data counts, loss rows) and the
    plan. The record of the model the rounds began from stays beside it if that was the
    shipped model (its ``summary.json`` and ``finetune.json`` become the ``base``);
    otherwise it is removed. Returns ``dest``."""
    from jelm.lm.backends import SHIPPED_DIR

    dest = Path(SHIPPED_DIR if dest is None else dest)
    tuned = sorted(
        (int(p.parent.name.removeprefix("round")), p)
        for p in out.glob("round*/finetune")
        if (p / "summary.json").is_file() and (p / "model" / "config.json").is_file()
    )
    if not tuned:
        raise SystemExit(f"{out} holds no finished fine-tuning round to ship")
    plan = json.loads((out / "config.json").read_text())
    rounds = []
    for r, path in tuned:
        summary = json.loads((path / "summary.json").read_text())
        rows = (path / "train.jsonl").read_text().splitlines()
        rounds.append({"round": r, **summary, "train": [json.loads(x) for x in rows]})
    base: dict[str, Any] = {"model": plan["model"]}
    from_shipped = plan["model"] == "shipped"
    for name in ("summary.json", "finetune.json"):
        if from_shipped and (dest / name).is_file():
            base[name] = json.loads((dest / name).read_text())
    model = tuned[-1][1] / "model"
    dest.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        if (dest / name).is_dir():
            shutil.rmtree(dest / name)
        copy = shutil.copytree if (model / name).is_dir() else shutil.copy
        copy(model / name, dest / name)
    if not from_shipped:  # the record beside it belongs to another model
        for name in ("summary.json", "train.jsonl", "loss.png"):
            (dest / name).unlink(missing_ok=True)
    record = {"plan": plan, "base": base, "rounds": rounds}
    (dest / "finetune.json").write_text(json.dumps(record, indent=1) + "\n")
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.experiments.finetune --out DIR [--rounds 2] ...``."""
    defaults = Plan()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", default=list(defaults.seeds))
    parser.add_argument("--random-seeds", type=int, nargs="+", default=list(defaults.random_seeds))
    parser.add_argument("--bootstrap", choices=("none", "gp"), default=defaults.bootstrap)
    add_options(parser, Plan, skip=("seeds", "random_seeds", "bootstrap"))
    parser.add_argument(
        "--ship", action="store_true", help="ship the last round's model (jelm/lm/shipped)"
    )
    args = parser.parse_args(argv)
    plan = Plan(
        **values_of(Plan, args, seeds=tuple(args.seeds), random_seeds=tuple(args.random_seeds))
    )
    run_rounds(plan, args.out, log=lambda line: print(line, file=sys.stderr, flush=True))
    print((args.out / "table.md").read_text())
    if args.ship:
        print(f"shipped the last round's model to {ship_rounds(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
