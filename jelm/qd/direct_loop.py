"""MAP-Elites with the ``direct`` operator (jelm.domains.sodarace.direct), entirely on the device.

Select -> mutate -> simulate -> insert runs as one ``lax.scan`` over generations
(purejaxrl style): no host round trip per generation. Two entry points:

* :func:`direct_map_elites`: a whole run from seed walkers in one jitted call (returns
  the archive and a metrics history);
* :func:`run_direct`: the same loop with the run machinery of the Sodarace job (run
  directory, ledger, checkpoints, resume, metrics, plots), run in chunks of
  ``checkpoint_every`` generations; every candidate becomes a ledger row (no program:
  the genotype is the walker; ``parent_ids`` is the parent's id).

Randomness: generation ``g`` uses ``fold_in(key, g)``, so a resumed run repeats exactly
what an uninterrupted one does. ``program_id`` of direct candidates is a per-run counter:
seed ``i`` is ``i`` (the seeds' ledger ids), child ``r`` of generation ``g >= 1`` is
``n_seeds + (g - 1) * batch + r``.

Throughput (candidates = walker evaluations per second after compilation; batch 1024,
default physics, flat ground, 12 x 12 x 12 grid, this 2-core CPU shared with other jobs,
+-20%; measured with the physics before per-bone weights, which cost the same):

==============================================  =====  ============  =================
seeds (bucket)                                  steps  candidates/s  walker-steps/s
==============================================  =====  ============  =================
square, radial, cppn_fixed, cppn_mutable        120    446           54k
(32 joints x 128 links x 8 slots)               600    112           67k
square alone (8 x 16 x 4)                       120    2,690         323k
                                                600    561           336k
==============================================  =====  ============  =================

The loop is bound by the simulator (``mutate`` is 55 ms of a 2.3 s generation), and the
issue's goal of 20,000 candidates/s would need ~2.4M walker-steps/s at 120 steps.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.domains.sodarace.direct import DirectParams, mutate
from jelm.qd.archive import Archive, ArchiveConfig, ArchiveState, genotype_of
from jelm.sim.base import DEFAULT_PARAMS, PhysicsParams, SurfaceSpec, as_arrays
from jelm.sim.physics import evaluate_jit
from jelm.sim.terrain import Terrain, flat
from jelm.sim.walker import (
    BucketShape,
    WalkerBatch,
    WalkerDoesNotFit,
    bucket_of,
    default_ladder,
    pack,
)


def _seed_shape(seeds: Sequence[Any]) -> BucketShape:
    """The smallest default-ladder bucket holding every seed."""
    shapes = [bucket_of(w) for w in seeds]
    j = max(s.joints for s in shapes)
    ell = max(s.links for s in shapes)
    d = max(s.degree for s in shapes)
    return next(s for s in default_ladder() if s.fits(j, ell, d))


def _record(archive: Archive, state: ArchiveState, accepted, valid) -> dict[str, jax.Array]:
    m = archive.metrics(state)
    return {
        "qd_score": m["qd_score"],
        "coverage": m["coverage"],
        "max_fitness": m["max_fitness"],
        "mean_fitness": m["mean_fitness"],
        "filled": m["filled"],
        "acceptance_rate": jnp.mean(accepted.astype(jnp.float32)),
        "valid_rate": jnp.mean(valid.astype(jnp.float32)),
    }


@functools.partial(jax.jit, static_argnames=("archive", "steps", "surfaces"))
def _seed(
    archive: Archive,
    state: ArchiveState,
    seed_batch: WalkerBatch,
    terrain: Terrain,
    physics: PhysicsParams,
    steps: int,
    surfaces: SurfaceSpec,
) -> tuple[ArchiveState, dict[str, jax.Array]]:
    """Evaluate and insert the seeds (ids 0..n-1)."""
    ids = jnp.arange(seed_batch.batch_size, dtype=jnp.int32)
    return _evaluate_insert(archive, state, seed_batch, ids, terrain, physics, steps, surfaces)


def _evaluate_insert(
    archive: Archive,
    state: ArchiveState,
    batch: WalkerBatch,
    ids: jax.Array,
    terrain: Terrain,
    physics: PhysicsParams,
    steps: int,
    surfaces: SurfaceSpec,
) -> tuple[ArchiveState, dict[str, jax.Array]]:
    """Simulate ``batch`` and insert it under ``ids``: the new state and every candidate's
    id, fitness, descriptors, validity, acceptance and niche, and the archive metrics."""
    ev = evaluate_jit(batch, terrain, physics, steps=steps, surfaces=surfaces)
    state, accepted, niche = archive.add(
        state, genotype_of(batch, ids), ev.descriptors, ev.fitness, ev.valid
    )
    return state, {
        "ids": ids,
        "fitness": ev.fitness,
        "descriptors": ev.descriptors,
        "valid": ev.valid,
        "accepted": accepted,
        "niche": niche,
        "metrics": _record(archive, state, accepted, ev.valid),
    }


@functools.partial(
    jax.jit, static_argnames=("archive", "n_seeds", "batch_size", "steps", "surfaces", "count")
)
def _generations(
    archive: Archive,
    state: ArchiveState,
    key: jax.Array,
    first: jax.Array,
    terrain: Terrain,
    physics: PhysicsParams,
    params: DirectParams,
    n_seeds: int,
    batch_size: int,
    steps: int,
    surfaces: SurfaceSpec,
    count: int,
) -> tuple[ArchiveState, dict[str, jax.Array]]:
    """Generations ``first .. first + count - 1`` (each >= 1); per-generation outputs
    stacked on a leading axis: every candidate's parent, id, fitness, descriptors,
    validity, acceptance and niche, and the archive metrics after the generation."""

    def generation(state: ArchiveState, g: jax.Array):
        k_select, k_mutate = jax.random.split(jax.random.fold_in(key, g))
        parents = archive.select(state, k_select, batch_size)
        children = mutate(k_mutate, archive.walkers(parents), params)
        ids = n_seeds + (g - 1) * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
        state, out = _evaluate_insert(
            archive, state, children, ids, terrain, physics, steps, surfaces
        )
        out["parents"] = parents["program_id"]
        return state, out

    return jax.lax.scan(generation, state, first + jnp.arange(count, dtype=jnp.int32))


def direct_map_elites(
    config: ArchiveConfig,
    seeds: Sequence[Any],
    key: jax.Array,
    generations: int,
    batch_size: int,
    steps: int,
    terrain: Terrain | None = None,
    params: DirectParams | None = None,
    physics: PhysicsParams = DEFAULT_PARAMS,
    shape: BucketShape | None = None,
) -> tuple[ArchiveState, dict[str, jax.Array]]:
    """MAP-Elites with the ``direct`` operator from seed walkers, on the device.

    The seeds (walker dicts or ``Walker`` objects) are packed into ``shape`` (default:
    the smallest default-ladder bucket holding them all), evaluated and inserted; then
    ``generations`` times: select ``batch_size`` parents uniformly over filled cells ->
    mutate -> evaluate (``steps`` steps on ``terrain``, default flat) -> insert.

    Returns the final archive state and a metrics history of ``generations + 1`` entries
    (entry 0: after the seeds): ``qd_score``, ``coverage`` (fraction), ``max_fitness``,
    ``mean_fitness``, ``filled``, ``acceptance_rate`` and ``valid_rate`` (over the batch).
    """
    if generations < 0 or batch_size < 1 or steps < 1:
        raise ValueError(
            f"need generations >= 0, batch_size >= 1, steps >= 1; got {generations}, "
            f"{batch_size}, {steps}"
        )
    if len(seeds) == 0:
        raise ValueError("direct_map_elites needs at least one seed walker")
    params = DirectParams() if params is None else params
    terrain = flat() if terrain is None else terrain
    archive = Archive(config, shape or _seed_shape(seeds))
    seed_batch = pack(list(seeds), shape=archive.shape)
    surfaces = SurfaceSpec.of(terrain)
    physics = as_arrays(physics)
    state, first = _seed(archive, archive.init(), seed_batch, terrain, physics, steps, surfaces)
    history = {k: v[None] for k, v in first["metrics"].items()}
    if generations:
        state, out = _generations(
            archive,
            state,
            key,
            jnp.int32(1),
            terrain,
            physics,
            params,
            n_seeds=seed_batch.batch_size,
            batch_size=batch_size,
            steps=steps,
            surfaces=surfaces,
            count=generations,
        )
        history = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), history, out["metrics"])
    return state, history


# ---------------------------------------------------------------------------------------
# The run machinery (used by python -m jelm.experiments.sodarace mutation=direct).


def run_direct(
    config: Any, out: Path, log: Any = print
) -> tuple[dict[str, Any], Archive, ArchiveState, Terrain]:
    """A ``direct`` run of the Sodarace job (``config``: jelm.experiments.config.RunConfig)
    in run directory ``out``, with ledger, checkpoints and resume; returns the final
    metrics, the archive, its state and the terrain."""
    from jelm.experiments.config import seed_program
    from jelm.io.checkpoint import Checkpoints
    from jelm.io.rundir import RunDir
    from jelm.programs.sandbox import Sandbox
    from jelm.qd.ledger import CandidateRecord, Ledger
    from jelm.qd.loop import RESUMABLE_KEYS, identity, make_archive
    from jelm.sim.terrain import make_terrain

    t0 = time.perf_counter()
    rundir = RunDir(out, config.to_dict(), resume_ignore=RESUMABLE_KEYS)
    ledger = Ledger(rundir.ledger_path, run_config=identity(config))
    checkpoints = Checkpoints(rundir.checkpoint_dir)
    try:
        archive, state = make_archive(config)
        terrain = make_terrain(config.terrain)
        surfaces = SurfaceSpec.of(terrain)
        physics = as_arrays(DEFAULT_PARAMS)
        params = DirectParams(**dict(config.direct))
        key = jax.random.PRNGKey(config.seed)
        programs = [seed_program(name) for name in config.seeds]
        with Sandbox(workers=int(config.sandbox.get("workers", 2))) as sandbox:
            results = sandbox.execute(programs)
        bad = [(n, r.error) for n, r in zip(config.seeds, results, strict=True) if not r.ok]
        if bad:
            raise RuntimeError(f"seed programs failed: {bad}")
        try:
            seed_batch = pack([r.walker for r in results], shape=archive.shape)
        except WalkerDoesNotFit as exc:
            name = config.seeds[exc.index] if exc.index is not None else "a seed"
            raise RuntimeError(
                f"seed {name} does not fit the bucket {list(config.bucket)} (joints, links, "
                f"links per joint): {exc.reason}; raise the bucket"
            ) from None
        n_seeds = len(programs)
        print(
            f"ELM on Sodarace: direct from {', '.join(config.seeds)}, {config.generations} "
            f"generations x {config.batch} candidates, {config.steps} steps on "
            f"{config.terrain}; writing to {out}/" + (" (resuming)" if rundir.resumed else ""),
            flush=True,
        )

        def commit(g: int, o: dict[str, np.ndarray], parents: Sequence[Any]) -> dict:
            metrics = {k: float(v) for k, v in o["metrics"].items()}
            n = len(o["ids"])
            records = []
            for r in range(n):
                valid = bool(o["valid"][r])
                h, w, m = (float(v) for v in o["descriptors"][r])
                records.append(
                    CandidateRecord(
                        parent_ids=tuple(parents[r]),
                        operator="direct" if g else "seed",
                        program=programs[r] if g == 0 else None,
                        message=config.seeds[r] if g == 0 else "",
                        status="ok" if valid else "simulation_failed",
                        fitness=float(o["fitness"][r]) if valid else None,
                        height=h,
                        width=w,
                        mass=m,
                        niche=int(o["niche"][r]) if o["niche"][r] >= 0 else None,
                        accepted=bool(o["accepted"][r]),
                    )
                )
            metrics.update(
                generation=g,
                evaluations=n_seeds + max(0, g) * config.batch,
                time=time.time(),
            )
            with ledger.generation(g, metrics) as gen:
                ids = gen.add_many(records)
            if list(ids) != [int(i) + 1 for i in o["ids"]]:  # ledger ids start at 1
                raise RuntimeError("ledger ids and direct program ids disagree")
            rundir.append_metrics(metrics)
            return metrics

        done = ledger.last_generation()
        step = checkpoints.latest_step()
        if step is not None:
            step, restored = checkpoints.restore({"archive": state}, step)
            state, start = restored["archive"], step + 1
        else:
            state, o = _seed(archive, state, seed_batch, terrain, physics, config.steps, surfaces)
            o = jax.tree.map(np.asarray, o)
            if done is None:
                commit(0, o, [()] * n_seeds)
            checkpoints.save(0, {"archive": state})
            start = 1
        metrics: dict = {}
        g = start
        while g <= config.generations:
            count = min(config.checkpoint_every, config.generations - g + 1)
            state, o = _generations(
                archive,
                state,
                key,
                jnp.int32(g),
                terrain,
                physics,
                params,
                n_seeds=n_seeds,
                batch_size=config.batch,
                steps=config.steps,
                surfaces=surfaces,
                count=count,
            )
            o = jax.tree.map(np.asarray, o)
            for k in range(count):
                gen_out = jax.tree.map(lambda a, k=k: a[k], o)
                if done is not None and g + k <= done:
                    continue  # committed before a crash: recomputed identically, kept
                parents = [(int(p) + 1,) for p in gen_out["parents"]]
                metrics = commit(g + k, gen_out, parents)
            checkpoints.save(g + count - 1, {"archive": state})
            log(
                f"gen {g + count - 1}: qd_score {metrics.get('qd_score', float('nan')):.1f} "
                f"coverage {100 * metrics.get('coverage', float('nan')):.1f}%"
            )
            g += count
        rundir.truncate_metrics(config.generations)
        final = {k: float(v) for k, v in archive.metrics(state).items()}
        elapsed = time.perf_counter() - t0
        print(
            f"done in {elapsed:.0f} s: {ledger.count()} candidates, QD-score "
            f"{final['qd_score']:.1f}, coverage {100 * final['coverage']:.1f}%, best fitness "
            f"{final['max_fitness']:.2f}; ledger, metrics and checkpoints in {out}/"
        )
        summary = {**final, "elapsed_s": elapsed, "evaluations": ledger.count()}
        return summary, archive, state, terrain
    finally:
        checkpoints.close()
        ledger.close()
        rundir.close()
