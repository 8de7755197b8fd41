"""Feasibility: what a native CPU kernel of the Sodarace step would buy over XLA.

Issue "Sodarace physics in JAX" asks for 1,000,000 walker-steps/s for the seed mix at
batch 4096 on the 2-core CPU. The JAX step is bound by XLA's gathers (jelm/sim/README.md),
and ``python -m jelm.sim.tradeoff`` shows that no substeps x sweeps setting gets there.
This script builds ``native_step/step.c`` (the same physics on flat ground as scalar C,
one walker per OpenMP iteration; see the file's header) with gcc, checks that it scores
the seeds as jelm.sim does, then times both on the same machine, interleaved:

    python experiments/native_step.py            # ~3 minutes; one JSON line on stdout

It is measurement, not a backend: nothing in jelm imports it. Needs gcc with OpenMP.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from jelm.programs.seeds import SEED_NAMES, seed_walker
from jelm.sim.bench import _time_batches
from jelm.sim.physics import DEFAULT_PARAMS, PhysicsParams, evaluate, init_state
from jelm.sim.terrain import flat
from jelm.sim.walker import BucketShape, pack, pack_buckets

SOURCE = Path(__file__).with_name("native_step") / "step.c"
MAX_JOINTS, MAX_LINKS = 64, 256
SETTINGS = ((4, 4), (4, 16))


class _Params(ctypes.Structure):
    _fields_ = [(n, ctypes.c_float) for n in ("dt", "g", "damp", "mu", "k", "c", "ps")] + [
        ("substeps", ctypes.c_int),
        ("iters", ctypes.c_int),
    ]


def build(out_dir: Path) -> ctypes.CDLL:
    """Compile step.c (no FMA contraction, as jelm.sim pins for XLA) and load it."""
    if shutil.which("gcc") is None:
        raise SystemExit("native_step: gcc is needed to build step.c")
    lib = out_dir / "step.so"
    cmd = ["gcc", "-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off"]
    cmd += ["-fopenmp", "-shared", "-fPIC", str(SOURCE), "-o", str(lib), "-lm"]
    subprocess.run(cmd, check=True)
    return ctypes.CDLL(str(lib))


def tables(walkers: list[dict[str, Any]]) -> tuple[list[np.ndarray], np.ndarray]:
    """Link tables padded to (W, 256) and the placed start positions (W, 64, 2), with the
    coefficients jelm.sim.physics.topology uses (amplitude scale, 2 pi phase, per-bone
    weight relaxation / max(bones at either end))."""
    p = DEFAULT_PARAMS
    w_count = len(walkers)
    ints = [np.zeros((w_count, MAX_LINKS), np.int32) for _ in range(2)]
    floats = [np.zeros((w_count, MAX_LINKS), np.float32) for _ in range(6)]
    li, lj = ints
    rest, muscle, amp, cos_phase, sin_phase, weight = floats
    for k, w in enumerate(walkers):
        joints = np.asarray(w["joints"], np.float64)
        bones_at = np.zeros(len(joints))
        for n, (a, b, props) in enumerate(w["muscles"]):
            li[k, n], lj[k, n] = a, b
            rest[k, n] = np.linalg.norm(joints[b] - joints[a])
            if props["type"] == "muscle":
                angle = 2 * np.pi * props["phase"]
                muscle[k, n], amp[k, n] = 1.0, p.amplitude_scale * props["amplitude"]
                cos_phase[k, n], sin_phase[k, n] = np.cos(angle), np.sin(angle)
            else:
                bones_at[a] += 1
                bones_at[b] += 1
        for n, (a, b, props) in enumerate(w["muscles"]):
            if props["type"] != "muscle":
                weight[k, n] = p.relaxation / max(bones_at[a], bones_at[b], 1.0)
    counts = [
        np.array([len(w["joints"]) for w in walkers], np.int32),
        np.array([len(w["muscles"]) for w in walkers], np.int32),
    ]
    start = init_state(pack(walkers, BucketShape(MAX_JOINTS, MAX_LINKS, 10)), flat())
    return [*counts, *ints, *floats], np.asarray(start.pos)


def run_native(
    lib: ctypes.CDLL, arrays: list[np.ndarray], pos: np.ndarray, steps: int, setting: tuple
) -> tuple[float, np.ndarray]:
    """Simulate every walker ``steps`` steps; (seconds, final x positions)."""
    p = DEFAULT_PARAMS
    x, y = np.ascontiguousarray(pos[..., 0]), np.ascontiguousarray(pos[..., 1])
    vx, vy = np.zeros_like(x), np.zeros_like(x)
    params = _Params(
        p.dt, p.gravity, p.damping, p.friction, p.muscle_stiffness, p.muscle_damping,
        p.phase_speed, *setting,
    )  # fmt: skip
    ptrs = [a.ctypes.data_as(ctypes.c_void_p) for a in (*arrays, x, y, vx, vy)]
    t0 = time.perf_counter()
    lib.run(len(pos), *ptrs, steps, params, MAX_JOINTS, MAX_LINKS)
    return time.perf_counter() - t0, x


def main() -> None:
    """Build, check agreement, time both; print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    seeds = [seed_walker(name).to_dict() for name in SEED_NAMES]
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp))
        agreement = {}
        seed_arrays, seed_pos = tables(seeds)
        for setting in SETTINGS:
            params = PhysicsParams(substeps=setting[0], iterations=setting[1])
            _, x = run_native(lib, seed_arrays, seed_pos, 600, setting)
            native = [
                float(x[k, : len(w["joints"])].mean() - seed_pos[k, : len(w["joints"]), 0].mean())
                for k, w in enumerate(seeds)
            ]
            ref = np.asarray(
                evaluate(pack(seeds, BucketShape(32, 128, 8)), flat(), 600, params).fitness
            )
            agreement[f"{setting[0]}x{setting[1]}"] = {
                "seeds": list(SEED_NAMES),
                "native_fitness": [round(v, 3) for v in native],
                "jax_fitness": [round(float(v), 3) for v in ref],
                "max_abs_difference": float(np.max(np.abs(np.asarray(native) - ref))),
            }
        walkers = [seeds[k % len(seeds)] for k in range(args.batch)]
        arrays, pos = tables(walkers)
        buckets = [b for _, b in pack_buckets(walkers)]
        results = []
        for setting in SETTINGS:
            params = PhysicsParams(substeps=setting[0], iterations=setting[1])
            jax_s = native_s = float("inf")
            for _ in range(args.repeats):  # interleaved, so both see the same machine
                jax_s = min(jax_s, _time_batches(buckets, args.steps, 1, params)[1])
                native_s = min(native_s, run_native(lib, arrays, pos, args.steps, setting)[0])
            row = {
                "setting": f"{setting[0]}x{setting[1]}",
                "jax_walker_steps_per_s": args.batch * args.steps / jax_s,
                "native_walker_steps_per_s": args.batch * args.steps / native_s,
            }
            row["native_speedup"] = row["native_walker_steps_per_s"] / row["jax_walker_steps_per_s"]
            print(f"[native_step] {row}", file=sys.stderr)
            results.append(row)
    out = {
        "batch": args.batch,
        "steps": args.steps,
        "threads": int(os.environ["OMP_NUM_THREADS"]),
        "agreement_600_steps": agreement,
        "results": results,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
