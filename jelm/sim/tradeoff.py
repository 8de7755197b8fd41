"""Speed against accuracy of the Sodarace solver: ``python -m jelm.sim.tradeoff``.

The simulator's cost is set by two integers of :class:`~jelm.sim.base.PhysicsParams`:
``substeps`` per 1/60 s step and ``iterations`` (Jacobi bone sweeps) per substep (Macklin
et al. 2019; Müller et al. 2007). Fewer of either is faster and lets bones stretch. This
module measures both sides for each setting, so that throughput can be weighed
against the paper's rigid bones (Lehman et al. 2022, §4: bones are distance joints):

* ``walker_steps_per_s``: the seed mix at ``--batch`` on flat ground, as
  ``python -m jelm.sim.bench`` measures it (compilation excluded, best of ``--repeats``);
* ``bone_error_worst`` / ``bone_error_p99``: over ``--seconds`` simulated seconds of every
  seed on flat ground, the largest relative bone-length error, at the worst step and at
  the 99th percentile of steps (the worst seed);
* ``fitness_mae`` / ``rank_correlation``: the seeds' fitness over the default horizon
  against ``ACCURATE_PARAMS``: the mean absolute difference (program units) and the
  Spearman correlation of the two rankings, i.e. whether the cheaper physics still ranks
  walkers as the accurate one does;
* ``valid``: every seed stayed finite.

Prints exactly one JSON line on stdout (progress on stderr)::

    {"device": {"platform": str, "kind": str, "count": int},
     "backend": "native" | "xla", "batch": int, "steps": int,
     "results": [{"substeps": int, "iterations": int, "sweeps_per_step": int,
                  "walker_steps_per_s": float, "speedup": float (vs the default),
                  "bone_error_worst": float, "bone_error_p99": float,
                  "fitness_mae": float, "rank_correlation": float, "valid": bool},
                 ...]}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from jelm.sim import backends
from jelm.sim.base import ACCURATE_PARAMS, DEFAULT_PARAMS, DEFAULT_STEPS, PhysicsParams
from jelm.sim.bench import device_info
from jelm.sim.physics import evaluate, rollout
from jelm.sim.seed_walkers import seed_walkers
from jelm.sim.terrain import flat
from jelm.sim.walker import BucketShape, pack, pack_buckets

#: (substeps, iterations) measured by default: the accurate and default settings, then
#: cheaper ones.
SETTINGS: tuple[tuple[int, int], ...] = (
    (4, 16),
    (4, 4),
    (2, 4),
    (4, 2),
    (2, 2),
    (1, 4),
    (1, 2),
)
#: One bucket that holds every seed (the largest is 32 joints, 74 links, 8 per joint).
SEED_SHAPE = BucketShape(32, 128, 8)


def link_lengths(pos: np.ndarray, walker: dict[str, Any]) -> np.ndarray:
    """Lengths ``(..., m)`` of the walker's links for positions ``(..., J, 2)``."""
    i = np.array([link[0] for link in walker["muscles"]])
    j = np.array([link[1] for link in walker["muscles"]])
    return np.linalg.norm(pos[..., j, :] - pos[..., i, :], axis=-1)


def bone_errors(
    walkers: Sequence[dict[str, Any]],
    params: PhysicsParams,
    steps: int = 3600,
    quantile: float = 1.0,
    backend: str | None = None,
) -> list[float]:
    """Relative bone-length error of each walker over ``steps`` steps on flat ground: the
    largest over its bones, at the given quantile over steps (1.0: the worst step)."""
    batch = pack(list(walkers), SEED_SHAPE)
    frames = np.asarray(rollout(batch, flat(), steps, 1, params, backend))
    errors = []
    for r, w in enumerate(walkers):
        n = len(w["joints"])
        bones = np.array([link[2]["type"] == "distance" for link in w["muscles"]])
        rest = link_lengths(np.asarray(w["joints"], np.float64), w)
        lengths = link_lengths(frames[r, :, :n].astype(np.float64), w)
        per_step = np.abs(lengths[:, bones] / rest[bones] - 1.0).max(axis=1)
        errors.append(float(np.quantile(per_step, quantile)))
    return errors


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two score vectors (ties broken by position)."""
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(
    substeps: int,
    iterations: int,
    seeds: Sequence[dict[str, Any]],
    batch: int,
    steps: int,
    repeats: int,
    seconds: float,
    reference_fitness: np.ndarray,
    backend: str | None = None,
) -> dict[str, Any]:
    """Every figure of the module docstring for one setting."""
    from jelm.sim.bench import _time_batches

    params = dataclasses.replace(DEFAULT_PARAMS, substeps=substeps, iterations=iterations)
    walkers = [seeds[k % len(seeds)] for k in range(batch)]
    buckets = [b for _, b in pack_buckets(walkers)]
    _, run_s = _time_batches(buckets, steps, repeats, params, backend)
    long = round(seconds / params.dt)
    worst = bone_errors(seeds, params, long, backend=backend)
    typical = bone_errors(seeds, params, long, quantile=0.99, backend=backend)
    result = evaluate(pack(list(seeds), SEED_SHAPE), flat(), DEFAULT_STEPS, params, backend)
    fitness = np.asarray(result.fitness, np.float64)
    return {
        "substeps": substeps,
        "iterations": iterations,
        "sweeps_per_step": substeps * iterations,
        "walker_steps_per_s": batch * steps / run_s,
        "bone_error_worst": max(worst),
        "bone_error_p99": max(typical),
        "fitness_mae": float(np.mean(np.abs(fitness - reference_fitness))),
        "rank_correlation": spearman(fitness, reference_fitness),
        "valid": bool(np.all(np.asarray(result.valid))),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every setting and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=120, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best counts")
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated s for bones")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[f"{s}x{i}" for s, i in SETTINGS],
        help="substeps x iterations, e.g. 4x4 2x2",
    )
    parser.add_argument(
        "--backend", choices=[backends.AUTO, *backends.names()], default=backends.AUTO
    )
    args = parser.parse_args(argv)
    settings = []
    for text in args.settings:
        try:
            s, i = (int(v) for v in text.lower().split("x"))
        except ValueError:
            parser.error(f"setting {text!r} is not SUBSTEPSxITERATIONS, e.g. 4x4")
        if s < 1 or i < 1:
            parser.error(f"setting {text!r}: substeps and iterations must be at least 1")
        settings.append((s, i))

    backend = backends.resolve(args.backend).name
    seeds = list(seed_walkers().values())
    reference = evaluate(pack(seeds, SEED_SHAPE), flat(), DEFAULT_STEPS, ACCURATE_PARAMS, backend)
    reference_fitness = np.asarray(reference.fitness, np.float64)
    results = []
    for s, i in settings:
        row = measure(
            s,
            i,
            seeds,
            args.batch,
            args.steps,
            args.repeats,
            args.seconds,
            reference_fitness,
            backend,
        )
        print(
            f"[tradeoff] {s}x{i}: {row['walker_steps_per_s']:,.0f} walker-steps/s, bones "
            f"{100 * row['bone_error_worst']:.2f}% worst, {100 * row['bone_error_p99']:.2f}% "
            f"p99, fitness MAE {row['fitness_mae']:.2f}, rank corr {row['rank_correlation']:.2f}",
            file=sys.stderr,
        )
        results.append(row)
    default = (DEFAULT_PARAMS.substeps, DEFAULT_PARAMS.iterations)
    base = next((r for r in results if (r["substeps"], r["iterations"]) == default), results[0])
    for row in results:
        row["speedup"] = row["walker_steps_per_s"] / base["walker_steps_per_s"]
    print(
        json.dumps(
            {
                "device": device_info(),
                "backend": backend,
                "batch": args.batch,
                "steps": args.steps,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
