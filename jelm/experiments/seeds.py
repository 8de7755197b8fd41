"""``python -m jelm.experiments.seeds``: the seed walkers on every terrain.

Scores the paper's seed walkers (ELM paper, Lehman et al. 2022, §4: square, radial,
wheel, galloper, CPPN seeds, plus jelm's runner) on every built-in terrain with the JAX
simulator and writes, in a new run directory:

- ``results.json``: fitness (centre-of-mass x displacement times the terrain's direction),
  displacement, descriptors (height, width, mass) and validity per seed and terrain;
- ``results.md``: the same as a table;
- ``walkers/<seed>.png``: each seed as built by its program;
- ``rollouts/<seed>_<terrain>.gif``: each seed's best terrain and every seed on flat.

It says what it runs and where it writes, and finishes in about a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_walker
from jelm.sim.base import DEFAULT_STEPS
from jelm.sim.physics import evaluate_walkers, rollout
from jelm.sim.render import render_rollout, render_walker
from jelm.sim.terrain import TERRAINS, make_terrain
from jelm.sim.walker import pack

FRAME_EVERY = 4  # record every 4th step for GIFs (15 frames per simulated second)


def _default_out() -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"seeds-{stamp}"


def _table(rows: list[dict[str, Any]], terrains: Sequence[str]) -> str:
    head = "| seed | " + " | ".join(terrains) + " | height | width | mass |"
    rule = "|" + "---|" * (len(terrains) + 4)
    lines = [head, rule]
    for name in SEED_NAMES:
        cells = [r for r in rows if r["seed"] == name]
        fit = {r["terrain"]: r for r in cells}
        h, w, m = cells[0]["descriptors"]
        vals = " | ".join(
            f"{fit[t]['fitness']:.2f}" if fit[t]["valid"] else "invalid" for t in terrains
        )
        lines.append(f"| {name} | {vals} | {h:.1f} | {w:.1f} | {m:.1f} |")
    return "\n".join(lines)


def run(out: Path, steps: int, terrains: Sequence[str], gifs: bool) -> list[dict[str, Any]]:
    """Evaluate every seed on every terrain; write results and renders under ``out``."""
    walkers = [seed_walker(name).to_dict() for name in SEED_NAMES]
    (out / "walkers").mkdir(parents=True, exist_ok=True)
    (out / "rollouts").mkdir(parents=True, exist_ok=True)
    for name, walker in zip(SEED_NAMES, walkers, strict=True):
        render_walker(walker, out / "walkers" / f"{name}.png", label=name)

    rows = []
    for terrain_name in terrains:
        t0 = time.perf_counter()
        result = evaluate_walkers(walkers, make_terrain(terrain_name), steps)
        print(
            f"  {terrain_name:<10} {len(walkers)} walkers x {steps} steps in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        for k, name in enumerate(SEED_NAMES):
            rows.append(
                {
                    "seed": name,
                    "terrain": terrain_name,
                    "fitness": float(result["fitness"][k]),
                    "displacement": float(result["displacement"][k]),
                    "descriptors": [float(v) for v in result["descriptors"][k]],
                    "valid": bool(result["valid"][k]),
                }
            )

    if gifs:
        for k, (name, walker) in enumerate(zip(SEED_NAMES, walkers, strict=True)):
            mine = [r for r in rows if r["seed"] == name and r["valid"]]
            best = max(mine, key=lambda r: r["fitness"])["terrain"] if mine else "flat"
            for terrain_name in sorted({"flat", best}):
                terrain = make_terrain(terrain_name)
                frames = rollout(pack([walker]), terrain, steps, FRAME_EVERY)
                render_rollout(
                    walker,
                    np.asarray(frames[0]),
                    out / "rollouts" / f"{name}_{terrain_name}.gif",
                    terrain=terrain,
                    frame_dt=FRAME_EVERY / 60.0,
                    fps=15,
                )
            print(f"  rendered {name} ({k + 1}/{len(walkers)})", flush=True)

    (out / "results.json").write_text(json.dumps({"steps": steps, "results": rows}, indent=1))
    (out / "results.md").write_text(_table(rows, terrains) + "\n")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m jelm.experiments.seeds", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (new)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="horizon in steps")
    parser.add_argument("--terrains", nargs="+", default=list(TERRAINS), choices=sorted(TERRAINS))
    parser.add_argument("--no-gifs", action="store_true", help="skip rollout GIFs")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    out = args.out or _default_out()
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} exists and is not empty; pass a new --out")

    print(
        f"jelm sodarace: scoring {len(SEED_NAMES)} seed walkers ({', '.join(SEED_NAMES)}) "
        f"on {len(args.terrains)} terrains for {args.steps} steps "
        f"({args.steps / 60:.0f} simulated s); writing to {out}/",
        flush=True,
    )
    t0 = time.perf_counter()
    rows = run(out, args.steps, args.terrains, not args.no_gifs)
    print(_table(rows, args.terrains))
    print(f"done in {time.perf_counter() - t0:.0f} s; results, renders and GIFs in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
