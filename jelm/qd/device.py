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

Over the processes of a ``jax.distributed`` job every process runs the same jitted
generations; the domain spreads each batch over every device of every process (the
loop's ``devices``), so each process simulates its share and the collectives give every
process the whole generation and the same archive. Process 0 alone writes the run
directory (``jelm/qd/README.md``, "Many hosts").
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.mutation.base import GenotypeOperator
from jelm.qd.archive import Archive, ArchiveState, stored
from jelm.qd.loop import SeedError
from jelm.qd.records import CandidateRecord
from jelm.qd.run import Run, Schedule

if TYPE_CHECKING:
    from jelm.qd.hosts import Hosts

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
    #: the devices the domain spreads each batch over (``None``: its default, every
    #: local device); a multi-process run passes every device of every process
    devices: tuple[Any, ...] | None = None

    def _evaluate_insert(
        self, state: ArchiveState, genotypes: Any, ids: jax.Array, key: jax.Array
    ) -> tuple[ArchiveState, dict[str, Any]]:
        if self.devices is None:
            ev = self.domain.evaluate(genotypes, key)
        else:
            ev = self.domain.evaluate(genotypes, key, devices=self.devices)
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


def _host(tree: Any) -> Any:
    """``tree`` as NumPy arrays on this process (an array a multi-process computation left
    split over the processes is gathered: collective, as every call here)."""

    def get(a: Any) -> np.ndarray:
        if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
            return np.asarray(a)
        from jax.experimental.multihost_utils import process_allgather

        return np.asarray(process_allgather(a, tiled=True))

    return jax.tree.map(get, tree)


def run_device(
    domain: Any,
    operator: GenotypeOperator,
    archive: Archive,
    sandbox: Any,
    run: Run | None,
    schedule: Schedule,
    seeds: Sequence[tuple[str, str]],
    progress: Callable[[dict], None] | None = None,
    hosts: Hosts | None = None,
) -> tuple[ArchiveState, dict[str, Any]]:
    """Run (or resume) a device loop of ``schedule`` from the seeds (``(name, program)``
    pairs) in ``run``; returns the final archive state and metrics. Every seed must give
    a valid phenotype that fits (the genotype operator cannot repair a missing one).

    Over the processes of ``hosts`` (default: this process alone) every process makes this
    call; process 0 passes the run directory, the others ``None``. Process 0 resumes
    alone and sends the archive; every process runs the seeds in its own sandbox and the
    same jitted generations, whose batches the domain spreads over every device of every
    process; process 0 commits them. The final metrics are process 0's (the others' hold
    the archive's)."""
    from jelm.qd.hosts import Hosts

    hosts = hosts or Hosts()
    main = hosts.main
    if main and run is None:
        raise ValueError("process 0 of the device loop needs the run directory")
    names = tuple(domain.descriptor_names)
    spread = tuple(jax.devices()) if hosts.count > 1 else None
    loop = DeviceLoop(domain, archive, schedule.batch, len(seeds), spread)
    key = np.asarray(jax.random.PRNGKey(schedule.seed))
    operator = jax.device_get(operator)
    done = run.ledger.last_generation() if main else None
    restored = run.restore({"archive": archive.init()}) if main else None
    start = 0 if restored is None else restored[0] + 1
    state = archive.init() if restored is None else restored[1]["archive"]
    if hosts.count > 1:  # process 0's resume point, ledger and archive on every process
        sent = hosts.broadcast(np.array([start, -1 if done is None else done], np.int64))
        start, done = int(sent[0]), None if sent[1] < 0 else int(sent[1])
        state = hosts.broadcast(jax.device_get(state))
    else:
        state = jax.device_get(state)
    if start == 0:
        genotypes = _seed_genotypes(domain, sandbox, seeds)
        state, out = loop.seed(state, genotypes, key)
        out = _host(out)
        if main and done is None:
            metrics = _commit(run, 0, out, names, seeds, len(seeds))
            if progress is not None:
                progress(metrics)
        _save(run, 0, state)
        start = 1
    metrics: dict[str, Any] = {}
    g = start
    while g <= schedule.generations:
        count = min(schedule.checkpoint_every, schedule.generations - g + 1)
        state, out = loop.generations(state, operator, key, np.int32(g), count)
        out = _host(out)
        for k in range(count):
            if not main or (done is not None and g + k <= done):
                continue  # committed before a crash: recomputed identically, kept
            gen_out = jax.tree.map(lambda a, k=k: a[k], out)
            evaluations = len(seeds) + (g + k) * schedule.batch
            metrics = _commit(run, g + k, gen_out, names, seeds, evaluations)
            if progress is not None:
                progress(metrics)
        _save(run, g + count - 1, state)
        g += count
    state = jax.tree.map(jnp.asarray, _host(state))
    final = {k: float(v) for k, v in archive.metrics(state).items()}
    if main:
        run.truncate_metrics(schedule.generations)
        final["evaluations"] = run.ledger.count()
    return state, {**metrics, **final}


def _save(run: Run | None, generation: int, state: ArchiveState) -> None:
    """Checkpoint the archive after ``generation`` (collective: every process gathers it;
    process 0, the one with ``run``, writes it)."""
    state = _host(state)
    if run is not None:
        run.save(generation, {"archive": state})
