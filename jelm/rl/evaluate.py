"""``python -m jelm.rl.evaluate RUN``: how good a stage-3 run's inventor is per terrain
(ELM §7, Figs. 18-19).

For each terrain of the run's distribution it compares three things: ``n`` programs the
trained policy samples for the terrain (mean and best reward, share valid); best-of-N
from the stage-2 model with N = ``n`` (the same policy with its gate closed, which is
exactly the stage-2 model, :class:`jelm.lm.model.Adapter`); and, given a stage-2
``dataset.jsonl``, the best walker of the whole dataset on that terrain. It writes
``evaluation.json``, ``curves.png`` (the learning curves of ``train.jsonl``) and
``terrains.png`` (the comparison per terrain) and a GIF of the policy's best walker on
each terrain (``best_<terrain>.gif``) into the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class _Once:
    """A sandbox that runs each distinct program once and replays its result after."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox
        self.results: dict[str, Any] = {}

    def execute(self, programs: Sequence[str]) -> list[Any]:
        todo = sorted({p for p in programs if p not in self.results})
        if todo:
            self.results.update(zip(todo, self.sandbox.execute(todo), strict=True))
        return [self.results[p] for p in programs]


def read_dataset_programs(path: str | Path) -> list[str]:
    """The programs of a stage-2 ``dataset.jsonl`` (a header line, then one JSON object
    with a ``program`` field a line); a ValueError says what is wrong with the file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
        if not isinstance(header, dict) or "program" in header:
            raise ValueError("the first line is not a header object")
        programs = [str(json.loads(line)["program"]) for line in lines[1:] if line.strip()]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a stage-2 dataset: {exc}") from exc
    return programs


def _best_valid(got: Any) -> float | None:
    """The best reward of a valid walker (None when none is valid)."""
    return float(np.max(got.rewards[got.valid])) if got.valid.any() else None


def _summary(got: Any) -> dict[str, float | None]:
    return {
        "mean": float(np.mean(got.rewards)),
        "best": float(np.max(got.rewards)),
        "best_valid": _best_valid(got),
        "valid": float(np.mean(got.valid)),
    }


def evaluate_stage3(
    run_dir: str | Path, n: int | None = None, dataset: Path | None = None
) -> dict[str, Any]:
    """Evaluate the stage-3 run in ``run_dir`` (its ``config.json`` and ``policy/``) on
    each terrain of its distribution with ``n`` samples (default: the run's batch) and,
    given a stage-2 ``dataset.jsonl``, against the dataset's best walker there.

    Returns (and writes to ``evaluation.json``) ``{"run", "n", "dataset", "terrains":
    {name: {"policy": S, "stage2": S, "dataset": {"best", "valid", "programs"} or
    None}}}`` with ``S = {"mean", "best", "best_valid", "valid"}``. Rewards are the run's:
    its steps, and its penalty for a program that gives no walker; ``best`` is the best
    reward (the penalty included, as ``train.jsonl`` counts it), ``best_valid`` and the
    dataset's ``best`` that of the best valid walker (None when there is none). Also
    writes ``curves.png`` and ``terrains.png``.
    """
    import jax

    from jelm.lm.trainer import load_start
    from jelm.rl.invent import as_reference, gif_path, make_sandbox, sample_programs, write_gif
    from jelm.rl.policy import load_policy
    from jelm.rl.reward import SodaraceRewarder
    from jelm.rl.stage3 import Stage3Config

    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    defaults = Stage3Config()

    def setting(name: str) -> Any:
        return config.get(name, getattr(defaults, name))

    n = int(n if n is not None else setting("batch"))
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    programs = read_dataset_programs(dataset) if dataset is not None else []
    params, cfg, tokenizer, dist = load_policy(run / "policy")
    baseline = as_reference(params, load_start(str(setting("model")))[0])
    root = jax.random.key(int(setting("seed")))
    max_new = int(setting("max_new_tokens"))
    out: dict[str, Any] = {
        "run": str(run),
        "n": n,
        "dataset": None if dataset is None else str(dataset),
        "terrains": {},
    }
    domain, sandbox = make_sandbox(
        int(setting("steps")), int(setting("workers")), float(setting("timeout_s"))
    )
    with sandbox:
        once = _Once(sandbox)
        rewarder = SodaraceRewarder(
            domain, once, dist, float(setting("penalty")), n, float(setting("reward_floor"))
        )
        for k, name in enumerate(dist.terrains):
            key = jax.random.fold_in(root, k)
            ids = np.full(n, k, np.int32)
            entry: dict[str, Any] = {}
            for label, which, sub in (("policy", params, 0), ("stage2", baseline, 1)):
                drawn = sample_programs(
                    which, cfg, tokenizer, dist, k, n, jax.random.fold_in(key, sub), max_new
                )
                got = rewarder(drawn.programs, ids)
                entry[label] = _summary(got)
                if label == "policy" and got.valid.any():
                    best = drawn.programs[int(np.argmax(np.where(got.valid, got.rewards, -np.inf)))]
                    gif = gif_path(run, name)
                    write_gif(once.results[best].value, name, gif, steps=int(setting("steps")))
                    entry["gif"] = gif.name
            entry["dataset"] = None
            if programs:
                got = rewarder(programs, np.full(len(programs), k, np.int32))
                entry["dataset"] = {
                    "best": _best_valid(got),
                    "valid": float(np.mean(got.valid)),
                    "programs": len(programs),
                }
            out["terrains"][name] = entry
    (run / "evaluation.json").write_text(json.dumps(out, indent=1))
    plot_curves(_train_rows(run / "train.jsonl"), dist.terrains, run / "curves.png")
    plot_terrains(out, run / "terrains.png")
    return out


def _train_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line
    return rows


def plot_curves(rows: Sequence[dict[str, Any]], terrains: Sequence[str], path: Path) -> None:
    """``curves.png``: mean reward (overall and per terrain), KL, value loss and share of
    valid programs against the iteration, from the rows of ``train.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r.get("iteration", k + 1) for k, r in enumerate(rows)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))

    def curve(ax: Any, key: str, label: str | None = None, **kw: Any) -> None:
        xs = [x for x, r in zip(it, rows, strict=True) if key in r]
        ys = [r[key] for r in rows if key in r]
        if ys:
            ax.plot(xs, ys, marker="." if len(ys) < 30 else None, label=label or key, **kw)

    curve(axes[0], "reward_mean", "all terrains", color="k", lw=2)
    for name in terrains:
        curve(axes[0], f"reward_{name}", name)
    axes[0].set_title("mean reward")
    axes[0].legend(fontsize=8)
    for ax, key, title in zip(
        axes[1:],
        ("kl", "value_loss", "valid"),
        ("KL to the stage-2 model", "value loss", "share of valid programs"),
        strict=True,
    ):
        curve(ax, key)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _or_nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def plot_terrains(result: dict[str, Any], path: Path) -> None:
    """``terrains.png``: per terrain, the policy's mean and best reward beside the stage-2
    model's mean and best-of-N and the dataset's best (when evaluated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["terrains"])
    bars = [
        ("policy mean", lambda e: e["policy"]["mean"]),
        ("policy best", lambda e: e["policy"]["best"]),
        ("stage-2 mean", lambda e: e["stage2"]["mean"]),
        (f"stage-2 best of {result['n']}", lambda e: e["stage2"]["best"]),
    ]
    if result.get("dataset") is not None:
        bars.append(("dataset best", lambda e: _or_nan(e["dataset"] and e["dataset"]["best"])))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(names)), 4))
    x = np.arange(len(names))
    for j, (label, value) in enumerate(bars):
        heights = [value(result["terrains"][name]) for name in names]
        ax.bar(x + (j - (len(bars) - 1) / 2) * width, heights, width, label=label)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel("reward (distance on the terrain)")
    ax.set_title(f"stage-3 inventor vs the stage-2 model ({result['n']} samples per terrain)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.rl.evaluate RUN [--n 32] [--dataset PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a stage-3 run directory")
    parser.add_argument("--n", type=int, default=None, help="samples per terrain (default: batch)")
    parser.add_argument("--dataset", type=Path, default=None, help="a stage-2 dataset.jsonl")
    args = parser.parse_args(argv)
    from jelm.io.checkpoint import CheckpointError

    if not (args.run / "config.json").is_file() or not (args.run / "policy").is_dir():
        print(f"jelm.rl.evaluate: {args.run} holds no finished stage-3 run", file=sys.stderr)
        return 2
    try:
        result = evaluate_stage3(args.run, args.n, args.dataset)
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"jelm.rl.evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
