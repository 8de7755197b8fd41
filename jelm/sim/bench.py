"""Throughput benchmark of the Sodarace simulator: ``python -m jelm.sim.bench``.

Prints exactly one JSON line on stdout (progress goes to stderr)::

    {"device": {"platform": str, "kind": str, "count": int},
     "platform_choices": {"platform": str, "pin_cpu_isa": bool, "chunk_slots": int | None,
                          "native": bool},
     "results": [{"walkers": "seed_mix" | "max_padded" | "distinct", "batch": int, "steps": int,
                  "walker_steps_per_s": float, "spring_steps_per_s": float,
                  "compile_s": float, "run_s": float,
                  "backend": "native" | "xla"}, ...],
     "numpy_reference": {"walker_steps_per_s": float},
     "peak_rss_mb": float}

``seed_mix``: the paper's seed walkers (:mod:`jelm.sim.seed_walkers`) repeated to the batch size
and packed into size buckets, as an ELM run evaluates them. ``max_padded``: the same
walkers all padded to the largest bucket (64 joints, 256 links, 10 links per joint), what
evaluation costs without bucketing. ``distinct``: the seed mix with each walker's links
shuffled and a random fifth of them left out, so that no two walkers share a topology: the native
backend's lane kernel (rows of one topology eight to a vector) never applies, and every
walker runs on the row kernel. An ELM batch sits between the two: mutants that keep
their parent's links share its topology. ``spring_steps_per_s`` counts the walkers' real links
(bones and muscles), not padding. ``compile_s`` is XLA compilation (lowering included)
summed over the buckets; ``run_s`` the simulation alone, best of ``--repeats``.
``backend``: the simulator backend of the row (:mod:`jelm.sim.backends`); every row is
measured on each of ``--backends`` (default: both, native first; a backend that is not
available here is left out with a note on stderr).
``numpy_reference``: the plain NumPy oracle step (jelm.sim.oracle), one walker at a time.
``device``: what JAX runs on (the platform and kind of its first device, and how many
devices it sees; the benchmark uses the default device). ``platform_choices``: the
simulator's settings for that platform (:mod:`jelm.sim.platforms`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from jelm.sim import backends, platforms
from jelm.sim.base import DEFAULT_PARAMS, BackendUnavailable, PhysicsParams, SurfaceSpec, as_arrays
from jelm.sim.physics import evaluate_jit, init_state
from jelm.sim.seed_walkers import seed_walkers
from jelm.sim.terrain import flat
from jelm.sim.walker import BucketShape, WalkerBatch, pack, pack_buckets

BATCHES = (1, 64, 1024, 4096)
MAX_SHAPE = BucketShape(64, 256, 10)
KINDS = ("seed_mix", "max_padded", "distinct")


def device_info() -> dict[str, Any]:
    """What JAX runs on: the platform and kind of its first device, and the device count."""
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
    }


def _seed_walkers() -> list[dict[str, Any]]:
    return list(seed_walkers().values())


def _distinct(walkers: Sequence[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Each walker with its links in a random order and a random fifth of them left out
    (at least one kept), drawn again until no two walkers have the same link list: a
    topology of its own for every walker, even the square seed's eight links."""
    out, seen = [], set()
    for walker in walkers:
        while True:
            order = rng.permutation(len(walker["muscles"]))
            links = [walker["muscles"][k] for k in order]
            keep = rng.random(len(links)) >= 0.2
            keep[rng.integers(len(links))] = True
            kept = [m for m, k in zip(links, keep, strict=True) if k]
            key = json.dumps(kept)
            if key not in seen:
                break
        seen.add(key)
        out.append({"joints": walker["joints"], "muscles": kept})
    return out


def _time_batches(
    batches: Sequence[WalkerBatch],
    steps: int,
    repeats: int,
    physics: PhysicsParams = DEFAULT_PARAMS,
    backend: str | None = None,
) -> tuple[float, float]:
    """Compile every batch's evaluation, then time running them all; (compile_s, run_s)."""
    backend = backends.resolve(backend).name
    terrain = flat()
    compile_s = 0.0
    compiled = []
    params = as_arrays(physics)
    surfaces = SurfaceSpec.of(terrain)  # what evaluate() passes: flat ground, no ceiling
    for batch in batches:
        t0 = time.perf_counter()
        lowered = evaluate_jit.lower(
            batch, terrain, params, steps=steps, surfaces=surfaces, backend=backend
        )
        exe = lowered.compile()
        compile_s += time.perf_counter() - t0
        compiled.append(exe)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = [exe(batch, terrain, params) for exe, batch in zip(compiled, batches, strict=True)]
        jax.block_until_ready([o.fitness for o in outs])
        best = min(best, time.perf_counter() - t0)
    return compile_s, best


def _row(
    kind: str, walkers: list[dict[str, Any]], steps: int, repeats: int, backend: str
) -> dict[str, Any]:
    if kind == "distinct":
        rng = np.random.default_rng(0)
        walkers = _distinct(walkers, rng)
    if kind in ("seed_mix", "distinct"):
        batches = [b for _, b in pack_buckets(walkers)]
    else:
        batches = [pack(walkers, shape=MAX_SHAPE)]
    compile_s, run_s = _time_batches(batches, steps, repeats, backend=backend)
    links = sum(len(w["muscles"]) for w in walkers)
    return {
        "walkers": kind,
        "batch": len(walkers),
        "steps": steps,
        "walker_steps_per_s": len(walkers) * steps / run_s,
        "spring_steps_per_s": links * steps / run_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "backend": backend,
    }


def _numpy_reference(walkers: list[dict[str, Any]], steps: int) -> dict[str, float]:
    """Walker-steps/s of the NumPy oracle, stepping each seed walker in turn."""
    from jelm.sim.oracle import oracle_step

    terrain = flat()
    done = 0
    t0 = time.perf_counter()
    for w in walkers:
        state = init_state(pack([w]), terrain)
        n = len(w["joints"])
        pos = np.asarray(state.pos[0, :n], dtype=np.float64)
        vel = np.zeros_like(pos)
        for k in range(steps):
            pos, vel = oracle_step(w, pos, vel, k, terrain, DEFAULT_PARAMS)
            done += 1
    return {"walker_steps_per_s": done / (time.perf_counter() - t0)}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120, help="simulated steps per run")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best counts")
    parser.add_argument("--numpy-steps", type=int, default=20, help="oracle steps per seed")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=list(backends.names()),
        default=list(backends.names()),
        help="simulator backends to time (one that cannot run here is left out)",
    )
    parser.add_argument(
        "--walkers",
        nargs="+",
        choices=list(KINDS),
        default=list(KINDS),
        help="which walker sets to time",
    )
    args = parser.parse_args(argv)

    chosen = []
    for name in args.backends:
        try:
            chosen.append(backends.resolve(name).name)
        except BackendUnavailable as exc:
            print(f"[bench] {name} backend left out: {exc}", file=sys.stderr)
    seeds = _seed_walkers()
    results = []
    for backend in chosen:
        for kind in args.walkers:
            for batch in args.batches:
                walkers = [seeds[k % len(seeds)] for k in range(batch)]
                row = _row(kind, walkers, args.steps, args.repeats, backend)
                print(
                    f"[bench] {backend} {kind} batch {batch}: "
                    f"{row['walker_steps_per_s']:,.0f} walker-steps/s",
                    file=sys.stderr,
                )
                results.append(row)
    out = {
        "device": device_info(),
        "platform_choices": dataclasses.asdict(platforms.choices()),
        "results": results,
        "numpy_reference": _numpy_reference(seeds, args.numpy_steps),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
