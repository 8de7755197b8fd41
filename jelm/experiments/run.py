"""Run ELM on any registered domain (ELM, arXiv 2206.08896v1, §3-4): the entry points'
shared body.

:func:`run` builds the domain, the archive and the operator a configuration names, runs
the host loop (program operators) or the device loop (genotype operators) in a run
directory, then writes the plots and the pictures of the best elites. :func:`hydra_main`
makes the Hydra entry point of one domain (``python -m jelm.experiments.sodarace``,
``python -m jelm.experiments.image``).

A run directory holds ``config.json``, ``metrics.jsonl``, ``ledger.sqlite``,
``checkpoints/``, ``plots/`` (archive heatmaps, QD-score and coverage curves),
``renders/`` (the best elites as the domain draws them) and Hydra's ``.hydra/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jelm.experiments.config import (
    RESUMABLE_KEYS,
    ConfigError,
    RunConfig,
    from_mapping,
    identity,
    seed_program,
)
from jelm.registry import UnknownEntry

__all__ = [
    "build",
    "build_space",
    "evolve",
    "hydra_main",
    "recorded_config",
    "register_schema",
    "run",
    "write_outputs",
]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def build(config: RunConfig) -> tuple[Any, Any, Any]:
    """The domain, the archive and the operator ``config`` names."""
    from jelm.mutation import make_operator

    domain, archive = build_space(config)
    operator = make_operator(config.mutation, domain, config.operator_options())
    return domain, archive, operator


def build_space(config: RunConfig) -> tuple[Any, Any]:
    """The domain and the archive ``config`` names: what a candidate's fitness,
    descriptors and niche mean."""
    from jelm.domains import make_domain
    from jelm.qd.archive import Archive, ArchiveConfig

    domain = make_domain(config.domain, **config.domain_options())
    qd = config.qd
    archive = Archive.of(
        ArchiveConfig(
            grid=tuple(qd.grid),
            lower=tuple(qd.lower),
            upper=tuple(qd.upper),
            kind=qd.kind,
            n_centroids=qd.n_centroids,
            cvt_seed=config.seed,
            fitness_offset=qd.fitness_offset,
            deep=qd.deep,
        ),
        domain.genotype_template(),
    )
    return domain, archive


def recorded_config(recorded: Mapping[str, Any]) -> RunConfig:
    """The configuration of a finished run as its ledger records it (``Ledger.run_config``),
    rebuilt from what decides how its candidates were evaluated and placed: the domain and
    its options, the archive, the seed (a CVT's centroids) and the sandbox. The operator,
    the seeds and the budget are left at their defaults, so a run whose model directory
    or seed file is gone still rebuilds; :class:`ConfigError` if the rest does not."""
    from jelm.domains import DOMAINS

    name = str(recorded.get("domain") or "sodarace")
    try:
        options = {f.name for f in dataclasses.fields(DOMAINS.get(name)) if f.init}
    except UnknownEntry as exc:
        raise ConfigError(f"the run's domain is not registered: {exc}") from None
    keep = {"domain", "seed", "qd", "sandbox", *options}
    return from_mapping({k: v for k, v in recorded.items() if k in keep}, name)


def _progress(config: RunConfig, label: str) -> Callable[[dict], None]:
    """A tqdm bar over generations showing live QD-score and coverage (or plain lines)."""
    if not config.progress:
        return lambda m: print(
            f"gen {int(m['generation'])}: qd_score {m['qd_score']:.1f} "
            f"coverage {100 * m['coverage']:.1f}% max {m['max_fitness']:.2f}",
            flush=True,
        )
    from tqdm import tqdm

    bar = tqdm(total=config.generations + 1, desc=label, unit="gen", dynamic_ncols=True)

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
    domain: Any, archive: Any, state: Any, config: RunConfig, out: Path
) -> dict[str, Any]:
    """Plots (archive heatmaps, metric curves) and pictures of the best elites of a
    finished run; returns a summary."""
    import jax

    from jelm.io import plots

    fitness = np.asarray(state.repertoire.fitnesses[:, 0])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    title = f"{config.mutation} from {', '.join(config.seeds)}"
    names = domain.descriptor_names
    if config.qd.kind == "grid":
        plots.archive_heatmaps(
            fitness,
            config.qd.grid,
            config.qd.lower,
            config.qd.upper,
            out / "plots" / "archive.png",
            names=names,
            label=f"best fitness ({domain.fitness_label})",
            title=title,
        )
    else:
        plots.cvt_scatter(fitness, archive.centroids, out / "plots" / "archive.png", names=names)
    plots.curves({config.mutation: rows}, out / "plots" / "curves.png")

    filled = np.flatnonzero(np.isfinite(fitness))
    ranked = filled[np.argsort(-fitness[filled], kind="stable")]
    best = ranked[: config.renders]
    ids = np.asarray(state.repertoire.genotypes["id"])
    renders: list[str] = []
    if len(best):
        genotypes = jax.tree.map(
            lambda a: np.asarray(a)[best], state.repertoire.genotypes["genotype"]
        )
        labels = [f"best{rank + 1}_id{int(ids[cell])}" for rank, cell in enumerate(best)]
        renders = [str(p) for p in domain.render(genotypes, labels, out / "renders")]
    return {
        "best_fitness": float(fitness[ranked[0]]) if len(ranked) else None,
        "best_id": int(ids[ranked[0]]) if len(ranked) else None,
        "renders": renders,
    }


def _open_run(config: RunConfig, out: Path, domain: Any, log: Callable[[str], None]) -> Any:
    """The run directory ``out`` of ``config`` (:class:`jelm.qd.run.Run`, resuming when it
    holds a run of the same identity)."""
    from jelm.qd.run import Run

    return Run(
        out,
        config.to_dict(),
        identity(config),
        domain.descriptor_names,
        resume_ignore=RESUMABLE_KEYS,
        log=log,
    )


def evolve(
    config: RunConfig,
    out: Path,
    progress: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Run (or resume) the configured search in run directory ``out``: the host loop for
    a program operator, the device loop for a genotype operator. Returns the domain, the
    archive, its final state and the final metrics."""
    from jelm.experiments.hosts import start
    from jelm.mutation.base import on_device
    from jelm.programs.sandbox import Sandbox, SandboxLimits
    from jelm.qd.device import run_device
    from jelm.qd.loop import HostLoop, run_host
    from jelm.qd.run import Schedule

    if start(config.distributed):
        return _evolve_hosts(config, out, progress, log)
    domain, archive, operator = build(config)
    schedule = Schedule(config.generations, config.batch, config.checkpoint_every, config.seed)
    seeds = [(name, seed_program(domain, name)) for name in config.seeds]
    limits = SandboxLimits(timeout_s=float(config.sandbox.timeout_s))
    with (
        _open_run(config, out, domain, log) as run_dir,
        Sandbox(program=domain.program, workers=config.sandbox.workers, limits=limits) as sandbox,
    ):
        log(f"writing to {out}/" + (" (resuming)" if run_dir.resumed else ""))
        if on_device(operator):
            state, metrics = run_device(
                domain, operator, archive, sandbox, run_dir, schedule, seeds, progress
            )
        else:
            loop = HostLoop(domain, operator, archive, sandbox, config.batch, config.seed)
            state, metrics = run_host(loop, run_dir, schedule, seeds, progress)
    return domain, archive, state, metrics


def _evolve_hosts(
    config: RunConfig,
    out: Path,
    progress: Callable[[dict], None] | None,
    log: Callable[[str], None],
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """:func:`evolve` as one process of a multi-process job: the host loop over every
    process (:func:`jelm.qd.hosts.run_hosts`) for a program operator, the device loop
    spread over every process's devices (:func:`jelm.qd.device.run_device`) for a
    genotype operator; process 0 alone writes ``out``."""
    from jelm.mutation.base import on_device
    from jelm.programs.sandbox import Sandbox, SandboxLimits
    from jelm.qd.device import run_device
    from jelm.qd.hosts import Hosts, HostsLoop, run_hosts
    from jelm.qd.run import Schedule

    hosts = Hosts()
    domain, archive, operator = build(config)
    schedule = Schedule(config.generations, config.batch, config.checkpoint_every, config.seed)
    seeds = [(name, seed_program(domain, name)) for name in config.seeds]
    limits = SandboxLimits(timeout_s=float(config.sandbox.timeout_s))
    with contextlib.ExitStack() as stack:
        run_dir = None
        if hosts.main:
            run_dir = stack.enter_context(_open_run(config, out, domain, log))
            log(
                f"writing to {out}/ from process 0 of {hosts.count}"
                + (" (resuming)" if run_dir.resumed else "")
            )
        sandbox = stack.enter_context(
            Sandbox(program=domain.program, workers=config.sandbox.workers, limits=limits)
        )
        shown = progress if hosts.main else None
        if on_device(operator):
            state, metrics = run_device(
                domain, operator, archive, sandbox, run_dir, schedule, seeds, shown, hosts
            )
        else:
            loop = HostsLoop(
                domain, operator, archive, sandbox, config.batch, config.seed, hosts=hosts
            )
            state, metrics = run_hosts(loop, run_dir, schedule, seeds, shown)
    return domain, archive, state, metrics


def use_xla_cache(path: str | None) -> None:
    """Keep compiled XLA programs in ``path`` between runs (JAX's persistent compilation
    cache), unless it is empty or ``JAX_COMPILATION_CACHE_DIR`` already names one. Every
    program is kept, however quick to compile (JAX's default keeps those over a second):
    a run compiles a hundred or more small ones (the sampler's slot moves, the archive's
    updates; ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` sets another threshold)."""
    if not path or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(Path(path).expanduser()))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def run(config: RunConfig, out: Path) -> dict[str, Any]:
    """The main job: :func:`evolve` with a progress bar, then plots and renders; prints
    what it runs and where; returns the final metrics and a summary."""
    from jelm.experiments.hosts import start

    t0 = time.perf_counter()
    use_xla_cache(config.xla_cache)
    if start(config.distributed):  # before any JAX computation
        import jax

        if jax.process_index() != 0:  # process 0 reports and writes the outputs
            _, _, _, metrics = evolve(config, out, log=lambda line: None)
            return metrics
    space = list(config.qd.grid) if config.qd.kind == "grid" else f"{config.qd.n_centroids} cells"
    options = ", ".join(f"{k}={v}" for k, v in config.domain_options().items())
    print(
        f"ELM on {config.domain} ({options}): {config.mutation} from "
        f"{', '.join(config.seeds)}, {config.generations} generations x {config.batch} "
        f"candidates, archive {config.qd.kind} {space}",
        flush=True,
    )
    progress = _progress(config, config.mutation)
    domain, archive, state, metrics = evolve(
        config, out, progress, log=lambda line: print(line, flush=True)
    )
    getattr(progress, "close", lambda: None)()
    summary = write_outputs(domain, archive, state, config, out)
    elapsed = time.perf_counter() - t0
    evaluations = int(metrics.get("evaluations", 0))
    print(
        f"done in {elapsed:.0f} s: {evaluations} candidates, QD-score "
        f"{metrics['qd_score']:.1f}, coverage {100 * metrics['coverage']:.1f}%, best fitness "
        f"{metrics['max_fitness']:.2f} (candidate {summary['best_id']})"
    )
    print(f"ledger, metrics, checkpoints, plots and renders in {out}/")
    return {**metrics, **summary, "elapsed_s": elapsed}


def register_schema(domain: str) -> str:
    """Register ``domain``'s configuration class with Hydra's ConfigStore as
    ``<domain>_schema`` (the first entry of ``configs/<domain>.yaml``'s defaults)."""
    from hydra.core.config_store import ConfigStore

    from jelm.experiments.config import config_class

    name = f"{domain}_schema"
    ConfigStore.instance().store(name=name, node=config_class(domain))
    return name


def hydra_main(domain: str) -> Callable[[], None]:
    """The Hydra entry point of runs on ``domain`` (``configs/<domain>.yaml``, whose
    schema is the domain's configuration class)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from jelm.experiments.config import DistributedConfig
    from jelm.experiments.hosts import start
    from jelm.io.checkpoint import CheckpointError
    from jelm.io.rundir import RunDirError
    from jelm.qd.ledger import LedgerError
    from jelm.qd.loop import SeedError

    register_schema(domain)

    @hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name=domain)
    def main(cfg: DictConfig) -> None:
        raw = OmegaConf.to_container(cfg, resolve=True)
        try:
            # before anything touches JAX: building the domain may place arrays
            start(DistributedConfig(**raw.get("distributed", {})))
            config = from_mapping(raw, domain)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            sys.exit(2)
        try:
            run(config, Path(HydraConfig.get().runtime.output_dir))
        except (SeedError, CheckpointError, RunDirError, LedgerError, ConfigError) as exc:
            print(f"jelm: {exc}", file=sys.stderr)
            sys.exit(1)

    return main
