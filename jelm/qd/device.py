"""The ELM loop for genotype operators: whole generations inside one jitted call.

A domain's direct encoding (Sodarace's ``direct``: mutating packed walkers instead of
programs, ELM arXiv 2206.08896v1 §4.2's non-LM comparison in spirit) needs no host round
trip: select -> mutate -> evaluate -> insert is a pure function of the archive state and
a key, and :meth:`DeviceLoop.generations` runs ``count`` of them in one ``lax.scan``
(purejaxrl style). :func:`run_device` drives it with the same run machinery as the host
loop (:class:`jelm.qd.run.Run`): the seeds' programs run in the sandbox once, every
candidate becomes a ledger row (no program: the genotype is the phenotype), checkpoints
every ``checkpoint_every`` generations, resume after a kill.

Ids: a candidate's archive id is its ledger id: seed ``i`` is ``i + 1``, child ``r`` of
generation ``g >= 1`` is ``n_seeds + 1 + (g - 1) * batch + r``. Generation ``g`` uses
``fold_in(key, g)``, so a resumed run repeats exactly what an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.mutation.base import GenotypeOperator
from jelm.qd.archive import Archive, ArchiveState, stored
from jelm.qd.loop import SeedError
from jelm.qd.records import CandidateRecord
from jelm.qd.run import Run, Schedule

__all__ = ["DeviceLoop", "evolve", "run_device"]


def _summary(archive: Archive, state: ArchiveState, accepted: Any, valid: Any) -> dict[str, Any]:
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


@dataclasses.dataclass(frozen=True)
class DeviceLoop:
    """ELM with a genotype operator, all on the device (static; pure jitted methods).

    The operator is a pytree passed to every call (its rates are traced, not baked in)."""

    domain: Any
    archive: Archive
    batch: int
    n_seeds: int

    def _evaluate_insert(
        self, state: ArchiveState, genotypes: Any, ids: jax.Array, key: jax.Array
    ) -> tuple[ArchiveState, dict[str, Any]]:
        ev = self.domain.evaluate(genotypes, key)
        state, accepted, niche = self.archive.add(
            state, stored(ids, genotypes), ev.descriptors, ev.fitness, ev.valid
        )
        return state, {
            "ids": ids,
            "fitness": ev.fitness,
            "descriptors": ev.descriptors,
            "valid": ev.valid,
            "accepted": accepted,
            "niche": niche,
            "metrics": _summary(self.archive, state, accepted, ev.valid),
        }

    @functools.partial(jax.jit, static_argnums=0)
    def seed(
        self, state: ArchiveState, genotypes: Any, key: jax.Array
    ) -> tuple[ArchiveState, dict[str, Any]]:
        """Evaluate and insert the seeds (generation 0; ids ``1..n_seeds``)."""
        ids = jnp.arange(1, self.n_seeds + 1, dtype=jnp.int32)
        eval_key = jax.random.fold_in(jax.random.fold_in(key, 0), 1)
        return self._evaluate_insert(state, genotypes, ids, eval_key)

    @functools.partial(jax.jit, static_argnums=(0, 5))
    def generations(
        self,
        state: ArchiveState,
        operator: GenotypeOperator,
        key: jax.Array,
        first: jax.Array,
        count: int,
    ) -> tuple[ArchiveState, dict[str, Any]]:
        """Generations ``first .. first + count - 1`` (each >= 1); per-generation outputs
        stacked on a leading axis: every candidate's parent id, id, fitness, descriptors,
        validity, acceptance and niche, and the archive metrics after the generation."""

        def generation(state: ArchiveState, g: jax.Array) -> tuple[ArchiveState, dict]:
            key_g = jax.random.fold_in(key, g)
            k_select, k_mutate = jax.random.split(key_g)
            parents = self.archive.select(state, k_select, self.batch)
            children = operator.mutate(k_mutate, parents["genotype"])
            ids = self.n_seeds + 1 + (g - 1) * self.batch + jnp.arange(self.batch, dtype=jnp.int32)
            state, out = self._evaluate_insert(state, children, ids, jax.random.fold_in(key_g, 1))
            out["parents"] = parents["id"]
            return state, out

        return jax.lax.scan(generation, state, first + jnp.arange(count, dtype=jnp.int32))


def evolve(
    domain: Any,
    operator: GenotypeOperator,
    archive: Archive,
    seeds: Any,
    key: jax.Array,
    generations: int,
    batch: int,
) -> tuple[ArchiveState, dict[str, jax.Array]]:
    """MAP-Elites with a genotype operator from the seed genotypes ``seeds`` (a batch),
    entirely on the device and without a run directory. Returns the final archive state
    and a metrics history of ``generations + 1`` entries (entry 0: after the seeds)."""
    if generations < 0 or batch < 1:
        raise ValueError(f"need generations >= 0 and batch >= 1, got {generations}, {batch}")
    n_seeds = jax.tree.leaves(seeds)[0].shape[0]
    if n_seeds == 0:
        raise ValueError("evolve needs at least one seed genotype")
    loop = DeviceLoop(domain, archive, batch, n_seeds)
    state, first = loop.seed(archive.init(), seeds, key)
    history = {k: v[None] for k, v in first["metrics"].items()}
    if generations:
        state, out = loop.generations(state, operator, key, jnp.int32(1), generations)
        history = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), history, out["metrics"])
    return state, history


def _records(
    out: dict[str, np.ndarray],
    generation: int,
    names: Sequence[str],
    seeds: Sequence[tuple[str, str]],
) -> list[CandidateRecord]:
    records = []
    for r in range(len(out["ids"])):
        valid = bool(out["valid"][r])
        seed = generation == 0
        records.append(
            CandidateRecord(
                parent_ids=() if seed else (int(out["parents"][r]),),
                operator="seed" if seed else "direct",
                program=seeds[r][1] if seed else None,
                message=seeds[r][0] if seed else "",
                status="ok" if valid else "evaluation_failed",
                fitness=float(out["fitness"][r]) if valid else None,
                descriptors={
                    k: float(v) for k, v in zip(names, out["descriptors"][r], strict=True)
                },
                niche=int(out["niche"][r]) if out["niche"][r] >= 0 else None,
                accepted=bool(out["accepted"][r]),
            )
        )
    return records


def _commit(
    run: Run,
    generation: int,
    out: dict[str, np.ndarray],
    names: Sequence[str],
    seeds: Sequence[tuple[str, str]],
    evaluations: int,
) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in out["metrics"].items()}
    metrics.update(generation=generation, evaluations=evaluations, time=time.time())
    with run.ledger.generation(generation, metrics) as gen:
        ids = gen.add_many(_records(out, generation, names, seeds))
    if list(ids) != [int(i) for i in out["ids"]]:
        raise RuntimeError("ledger ids and device-loop ids disagree: the ledger was edited")
    run.append_metrics(metrics)
    return metrics


def _seed_genotypes(domain: Any, sandbox: Any, seeds: Sequence[tuple[str, str]]) -> Any:
    """The seeds' phenotypes (run in the sandbox) packed into genotypes."""
    results = sandbox.execute([program for _, program in seeds])
    records = []
    phenotypes = []
    for (name, program), res in zip(seeds, results, strict=True):
        why = None if not res.ok else domain.does_not_fit(res.value)
        status = str(res.status) if not res.ok else ("too_large" if why else "ok")
        records.append(
            CandidateRecord(
                operator="seed",
                program=program,
                message=name,
                status=status,
                error=res.error or why,
            )
        )
        phenotypes.append(res.value if status == "ok" else None)
    if any(p is None for p in phenotypes):
        raise SeedError([n for n, _ in seeds], records, domain)
    return domain.pack(phenotypes, len(phenotypes))


def run_device(
    domain: Any,
    operator: GenotypeOperator,
    archive: Archive,
    sandbox: Any,
    run: Run,
    schedule: Schedule,
    seeds: Sequence[tuple[str, str]],
    progress: Callable[[dict], None] | None = None,
) -> tuple[ArchiveState, dict[str, Any]]:
    """Run (or resume) a device loop of ``schedule`` from the seeds (``(name, program)``
    pairs) in ``run``; returns the final archive state and metrics. Every seed must give
    a valid phenotype that fits (the genotype operator cannot repair a missing one)."""
    names = tuple(domain.descriptor_names)
    loop = DeviceLoop(domain, archive, schedule.batch, len(seeds))
    key = jax.random.PRNGKey(schedule.seed)
    done = run.ledger.last_generation()
    state = archive.init()
    restored = run.restore({"archive": state})
    if restored is not None:
        step, tree = restored
        state, start = tree["archive"], step + 1
    else:
        genotypes = _seed_genotypes(domain, sandbox, seeds)
        state, out = loop.seed(state, genotypes, key)
        out = jax.tree.map(np.asarray, out)
        if done is None:
            metrics = _commit(run, 0, out, names, seeds, len(seeds))
            if progress is not None:
                progress(metrics)
        run.save(0, {"archive": state})
        start = 1
    metrics: dict[str, Any] = {}
    g = start
    while g <= schedule.generations:
        count = min(schedule.checkpoint_every, schedule.generations - g + 1)
        state, out = loop.generations(state, operator, key, jnp.int32(g), count)
        out = jax.tree.map(np.asarray, out)
        for k in range(count):
            if done is not None and g + k <= done:
                continue  # committed before a crash: recomputed identically, kept
            gen_out = jax.tree.map(lambda a, k=k: a[k], out)
            evaluations = len(seeds) + (g + k) * schedule.batch
            metrics = _commit(run, g + k, gen_out, names, seeds, evaluations)
            if progress is not None:
                progress(metrics)
        run.save(g + count - 1, {"archive": state})
        g += count
    run.truncate_metrics(schedule.generations)
    final = {k: float(v) for k, v in archive.metrics(state).items()}
    final["evaluations"] = run.ledger.count()
    return state, {**metrics, **final}
