"""``python -m jelm.experiments.sodarace``: ELM on Sodarace (Lehman et al. 2022, §4).

The main job: a MAP-Elites archive over (height, width, mass) grown by mutating walker
programs, with the run machinery of ``jelm.qd`` and ``jelm.io`` (ledger, checkpoints,
resume, metrics, plots, renders). Configuration is Hydra's (``configs/sodarace.yaml``)::

    python -m jelm.experiments.sodarace                      # the default run
    python -m jelm.experiments.sodarace preset=quick         # a smoke run
    python -m jelm.experiments.sodarace mutation=gp seeds=[radial] generations=100
    python -m jelm.experiments.sodarace hydra.run.dir=runs/x # resume runs/x if it exists
    python -m jelm.experiments.sodarace -m seed=0,1,2        # a sweep

A run writes into its directory (printed at the start): ``config.json``,
``metrics.jsonl``, ``ledger.sqlite``, ``checkpoints/``, ``plots/`` (archive heatmaps,
QD-score and coverage curves), ``renders/`` (GIFs of the best walkers) and Hydra's
``.hydra/`` (the resolved configuration and the overrides).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from jelm.experiments.config import ConfigError, RunConfig, from_mapping
from jelm.io.checkpoint import CheckpointError
from jelm.io.rundir import RunDirError
from jelm.qd.ledger import LedgerError
from jelm.qd.loop import SeedError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _progress(config: RunConfig, first_line: str) -> Any:
    """A tqdm bar over generations showing live QD-score and coverage (or plain lines)."""
    if not config.progress:
        return lambda m: print(
            f"gen {int(m['generation'])}: qd_score {m['qd_score']:.1f} "
            f"coverage {100 * m['coverage']:.1f}% max {m['max_fitness']:.2f}",
            flush=True,
        )
    from tqdm import tqdm

    bar = tqdm(total=config.generations + 1, desc=first_line, unit="gen", dynamic_ncols=True)

    def update(m: dict) -> None:
        bar.n = int(m["generation"]) + 1
        bar.set_postfix(
            qd=f"{m['qd_score']:.0f}",
            cov=f"{100 * m['coverage']:.1f}%",
            best=f"{m['max_fitness']:.1f}",
            valid=f"{100 * m['valid_rate']:.0f}%",
        )

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def write_outputs(
    archive: Any, state: Any, terrain: Any, config: RunConfig, out: Path
) -> dict[str, Any]:
    """Plots (archive heatmaps, metric curves) and GIFs of the best walkers of a finished
    run; returns a summary."""
    from jelm.io import plots
    from jelm.sim.physics import rollout
    from jelm.sim.render import render_rollout
    from jelm.sim.walker import unpack

    fitness = np.asarray(state.repertoire.fitnesses[:, 0])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    if config.qd.kind == "grid":
        plots.archive_heatmaps(
            fitness,
            config.qd.grid,
            config.qd.lower,
            config.qd.upper,
            out / "plots" / "archive.png",
            title=f"{config.mutation} from {', '.join(config.seeds)}",
        )
    else:
        plots.cvt_scatter(fitness, archive.centroids, out / "plots" / "archive.png")
    plots.curves({config.mutation: rows}, out / "plots" / "curves.png")

    filled = np.flatnonzero(np.isfinite(fitness))
    ranked = filled[np.argsort(-fitness[filled])]
    best = ranked[: config.renders]
    genotypes = {k: np.asarray(v) for k, v in state.repertoire.genotypes.items()}
    renders = []
    if len(best):
        batch = archive.walkers({k: v[best] for k, v in genotypes.items()})
        every = next(r for r in (4, 3, 2, 1) if config.steps % r == 0)  # frames at <= 15 Hz
        frames = np.asarray(rollout(batch, terrain, config.steps, every))
        for rank, cell in enumerate(best):
            pid = int(genotypes["program_id"][cell])
            path = out / "renders" / f"best{rank + 1}_id{pid}.gif"
            render_rollout(
                unpack(batch, rank), frames[rank], path, terrain=terrain, frame_dt=4 / 60
            )
            renders.append(str(path))
    return {
        "best_fitness": float(fitness[ranked[0]]) if len(ranked) else None,
        "best_program_id": int(genotypes["program_id"][ranked[0]]) if len(ranked) else None,
        "renders": renders,
    }


def run(config: RunConfig, out: Path) -> dict[str, Any]:
    """Run (or resume) the configured job in ``out``; returns the final metrics."""
    if config.mutation == "direct":
        from jelm.qd.direct_loop import run_direct

        metrics, archive, state, terrain = run_direct(config, out)
        return {**metrics, **write_outputs(archive, state, terrain, config, out)}

    from jelm.qd.loop import SodaraceLoop

    t0 = time.perf_counter()
    with SodaraceLoop(config, out) as loop:
        what = (
            f"ELM on Sodarace: {config.mutation} from {', '.join(config.seeds)}, "
            f"{config.generations} generations x {config.batch} candidates, "
            f"{config.steps} steps on {config.terrain}, archive {config.qd.kind} "
            f"{list(config.qd.grid) if config.qd.kind == 'grid' else config.qd.n_centroids}"
        )
        print(what, flush=True)
        print(f"writing to {out}/" + (" (resuming)" if loop.rundir.resumed else ""), flush=True)
        progress = _progress(config, config.mutation)
        metrics = loop.run(progress=progress)
        getattr(progress, "close", lambda: None)()
        summary = write_outputs(loop.archive, loop.state, loop.terrain, config, out)
    elapsed = time.perf_counter() - t0
    evaluations = int(metrics.get("evaluations", 0))
    print(
        f"done in {elapsed:.0f} s: {evaluations} candidates, QD-score "
        f"{metrics['qd_score']:.1f}, coverage {100 * metrics['coverage']:.1f}%, best fitness "
        f"{metrics['max_fitness']:.2f} (program {summary['best_program_id']})"
    )
    print(f"ledger, metrics, checkpoints, plots and renders in {out}/")
    return {**metrics, **summary, "elapsed_s": elapsed}


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="sodarace")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: check the configuration, then run."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    try:
        config = from_mapping(raw)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    try:
        run(config, Path(HydraConfig.get().runtime.output_dir))
    except (SeedError, CheckpointError, RunDirError, LedgerError) as exc:
        print(f"jelm: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
