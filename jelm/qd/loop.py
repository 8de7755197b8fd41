"""The ELM loop for program operators, as init / ask / tell (ELM, arXiv 2206.08896v1, §3).

One generation of :class:`HostLoop`::

    device  archive.select (jit)                 -> parent ids        (ask)
    host    ledger -> parent programs -> operator.mutate -> child programs
    host    sandbox (process pool)               -> phenotypes or a failure class
    host    domain.pack into the fixed genotype shape                  (evaluate)
    device  domain.evaluate (jit)                -> fitness, descriptors, valid
    device  archive.add (jit)                    -> accepted, niche   (tell)

The batch runs in two halves: JAX dispatches the first half's evaluation asynchronously
and the sandbox runs the second half's programs meanwhile. :func:`run_host` drives the
loop in a :class:`jelm.qd.run.Run`: it commits every generation to the ledger (ids are
assigned before insertion, since the archive stores them), checkpoints the archive, and
on a rerun restores the newest checkpoint and replays the generations the ledger
committed after it. Every generation's randomness derives from ``(seed, generation)``,
so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.mutation.base import Child, Parent, ProgramOperator
from jelm.qd.archive import Archive, ArchiveState, stored
from jelm.qd.records import CandidateRecord
from jelm.qd.run import Run, Schedule

__all__ = ["Evaluated", "HostLoop", "SeedError", "run_host"]


class SeedError(RuntimeError):
    """No seed program gave a phenotype the archive could take: the run cannot start."""

    def __init__(self, names: Sequence[str], records: Sequence[CandidateRecord], domain: Any):
        why = "; ".join(
            f"{name}: {r.status}" + (f" ({r.error})" if r.error else "")
            for name, r in zip(names, records, strict=False)
        )
        super().__init__(
            f"no seed gave a phenotype the archive could take ({why}); the domain is "
            f"{domain.describe()}: check the seed programs and the domain's options"
        )


@dataclasses.dataclass
class Evaluated:
    """One generation's candidates after sandbox and evaluation.

    ``genotypes`` has ``rows >= n`` rows (rows past ``n`` and rows without a phenotype are
    empty); ``fitness``, ``descriptors`` and ``valid`` are host arrays of ``n`` rows."""

    records: list[CandidateRecord]
    genotypes: Any
    fitness: np.ndarray
    descriptors: np.ndarray
    valid: np.ndarray


class HostLoop:
    """ELM with a program operator: :meth:`ask` for children, :meth:`evaluate` them,
    :meth:`tell` the archive.

    ``sandbox`` runs programs (:class:`jelm.programs.sandbox.Sandbox` for the domain's
    program spec); ``batch`` candidates per generation; every random choice of generation
    ``g`` derives from ``(seed, g)``. Without an ``operator`` the loop cannot :meth:`ask`;
    it evaluates programs written elsewhere and tells the archive (ELM §6: the samples of
    a model trained on the runs' programs, placed in a fresh map).
    """

    def __init__(
        self,
        domain: Any,
        operator: ProgramOperator | None,
        archive: Archive,
        sandbox: Any,
        batch: int,
        seed: int,
    ) -> None:
        self.domain = domain
        self.operator = operator
        self.archive = archive
        self.sandbox = sandbox
        self.batch = batch
        self.seed = seed
        self._base_key = jax.random.PRNGKey(seed)
        self._evaluate = jax.jit(domain.evaluate)
        self.descriptor_names = tuple(domain.descriptor_names)

    # -- randomness ------------------------------------------------------------------

    def key(self, generation: int) -> jax.Array:
        """The PRNG key of generation ``generation`` (selection uses it as it is)."""
        return jax.random.fold_in(self._base_key, generation)

    def rng(self, generation: int) -> np.random.Generator:
        """The host generator of generation ``generation`` (the operator's randomness)."""
        return np.random.default_rng([self.seed, generation])

    # -- init / ask / tell -----------------------------------------------------------

    def init(self) -> ArchiveState:
        """The empty archive."""
        return self.archive.init()

    def seed_children(self, names: Sequence[str], programs: Sequence[str]) -> list[Child]:
        """Generation 0: the seed programs as children without parents."""
        return [
            Child(parent_ids=(), operator="seed", program=program, message=name)
            for name, program in zip(names, programs, strict=True)
        ]

    def ask(
        self,
        state: ArchiveState,
        generation: int,
        programs: Callable[[Sequence[int]], dict[int, str]],
    ) -> list[Child]:
        """``batch`` children of parents selected from the archive; ``programs`` maps
        ledger ids to program texts."""
        if self.operator is None:
            raise RuntimeError("this loop has no operator: it only evaluates and tells")
        selected = self.archive.select(state, self.key(generation), self.batch)
        ids = [int(i) for i in np.asarray(selected["id"])]
        texts = programs(sorted(set(ids)))
        parents = [Parent(i, texts[i]) for i in ids]
        return self.operator.mutate(parents, self.rng(generation))

    def evaluate(self, children: Sequence[Child], generation: int) -> Evaluated:
        """Run the children's programs, pack and evaluate them, half a batch at a time;
        the ledger records of all of them (ids not yet assigned)."""
        rows = self._slice_rows()
        phenotypes: list[Any] = []
        records: list[CandidateRecord] = []
        slices = []
        for index, start in enumerate(range(0, max(1, len(children)), rows)):
            part = children[start : start + rows]
            p, r = self._run_programs(part, generation)
            phenotypes += p
            records += r
            slices.append(self._dispatch(p, generation, index))
        genotypes = jax.tree.map(lambda *a: jnp.concatenate(a), *[g for g, _ in slices])
        n = len(children)
        fitness = np.concatenate([np.asarray(e.fitness) for _, e in slices])[:n]
        descriptors = np.concatenate([np.asarray(e.descriptors) for _, e in slices])[:n]
        valid = np.concatenate([np.asarray(e.valid) for _, e in slices])[:n]
        for k, phenotype in enumerate(phenotypes):
            if phenotype is None:
                continue
            records[k] = dataclasses.replace(
                records[k],
                status="ok" if valid[k] else "evaluation_failed",
                fitness=float(fitness[k]) if valid[k] else None,
                descriptors=self._named(descriptors[k]),
            )
        return Evaluated(records, genotypes, fitness, descriptors, valid)

    def tell(
        self, state: ArchiveState, evaluated: Evaluated, ids: Sequence[int]
    ) -> tuple[ArchiveState, np.ndarray, np.ndarray]:
        """Insert a generation under its ledger ``ids``: the new state and, for each
        candidate, whether it was accepted and its niche (-1: not inserted)."""
        n = len(ids)
        rows = jax.tree.leaves(evaluated.genotypes)[0].shape[0]
        ledger_ids = np.full(rows, -1, np.int32)
        ledger_ids[:n] = ids
        valid = np.zeros(rows, bool)
        valid[:n] = evaluated.valid
        fitness = np.full(rows, -np.inf, np.float32)
        fitness[:n] = np.where(evaluated.valid, evaluated.fitness, -np.inf)
        descriptors = np.zeros((rows, len(self.descriptor_names)), np.float32)
        descriptors[:n] = evaluated.descriptors
        state, accepted, niche = self.archive.add(
            state,
            stored(ledger_ids, evaluated.genotypes),
            jnp.asarray(descriptors),
            jnp.asarray(fitness),
            jnp.asarray(valid),
        )
        return state, np.asarray(accepted)[:n], np.asarray(niche)[:n]

    # -- helpers ---------------------------------------------------------------------

    def _named(self, values: np.ndarray) -> dict[str, float]:
        return {k: float(v) for k, v in zip(self.descriptor_names, values, strict=True)}

    def _slice_rows(self) -> int:
        """Rows evaluated per call: half a batch, so that the host can run the next half's
        programs while the device evaluates this half (JAX dispatches asynchronously); a
        whole batch if it cannot be halved."""
        return self.batch // 2 if self.batch % 2 == 0 else self.batch

    def _dispatch(self, phenotypes: Sequence[Any], generation: int, index: int) -> tuple[Any, Any]:
        """Pack one slice (None = empty row) and start evaluating it; returns the packed
        genotypes and the (not yet finished) evaluation."""
        genotypes = self.domain.pack(list(phenotypes), self._slice_rows())
        key = jax.random.fold_in(jax.random.fold_in(self.key(generation), 1), index)
        return genotypes, self._evaluate(genotypes, key)

    def _run_programs(
        self, children: Sequence[Child], generation: int
    ) -> tuple[list[Any], list[CandidateRecord]]:
        """Run children's programs; their phenotypes (None when there is none that fits)
        and ledger records."""
        runnable = [k for k, c in enumerate(children) if c.ok]
        results: dict[int, Any] = {}
        if runnable:
            out = self.sandbox.execute([children[k].program for k in runnable])
            results = dict(zip(runnable, out, strict=True))
        phenotypes: list[Any] = []
        records = []
        for k, child in enumerate(children):
            res = results.get(k)
            fields: dict[str, Any] = {"generation": generation}
            phenotype = None
            if res is not None:
                fields["elapsed_s"] = res.elapsed_s
                if not res.ok:
                    fields.update(status=str(res.status), error=res.error)
                elif (why := self.domain.does_not_fit(res.value)) is not None:
                    fields.update(status="too_large", error=why)
                else:
                    phenotype = res.value
                    fields["status"] = "ok"
            phenotypes.append(phenotype)
            records.append(CandidateRecord.from_child(child, **fields))
        return phenotypes, records


# ---------------------------------------------------------------------------------------
# Driving the loop in a run directory


def _metrics(
    loop: HostLoop,
    run: Run,
    state: ArchiveState,
    generation: int,
    ev: Evaluated,
    accepted: np.ndarray,
    seconds: dict[str, float],
) -> dict[str, Any]:
    m = {k: float(v) for k, v in loop.archive.metrics(state).items()}
    m.update({f"{phase}_s": float(v) for phase, v in seconds.items()})
    n = max(1, len(ev.records))
    m.update(
        generation=generation,
        evaluations=run.ledger.count(),
        valid_rate=float(np.sum(ev.valid)) / n,
        acceptance_rate=float(np.sum(accepted)) / n,
        time=time.time(),
    )
    drawn = getattr(loop.operator, "drawn", None)
    if generation > 0 and isinstance(drawn, int):
        m["drawn"] = drawn  # an operator that samples again says how many it drew
    return m


def _commit(
    loop: HostLoop,
    run: Run,
    state: ArchiveState,
    generation: int,
    ev: Evaluated,
    seconds: dict[str, float],
) -> tuple[ArchiveState, dict[str, Any]]:
    """Ledger transaction and archive insertion of one generation; returns the new state
    and the generation's metrics (with ``seconds``: wall time per phase, e.g. ``mutate``
    and ``evaluate``, as ``<phase>_s``)."""
    with run.ledger.generation(generation) as gen:
        ids = gen.add_many(ev.records)
        state, accepted, niche = loop.tell(state, ev, ids)
        gen.set_outcome(ids, accepted, [int(v) if v >= 0 else None for v in niche])
        metrics = _metrics(loop, run, state, generation, ev, accepted, seconds)
        gen.metrics.update(metrics)
    return state, metrics


def _replay(loop: HostLoop, run: Run, state: ArchiveState, generation: int) -> ArchiveState:
    """Put a generation the ledger committed back into the archive (resume): its programs
    run again (they are deterministic) and go in with the outcome the ledger recorded."""
    records = list(run.ledger.iter_candidates(generation=generation))
    children = [
        Child(parent_ids=r.parent_ids, operator=r.operator, program=r.program)
        if r.status == "ok"
        else Child(parent_ids=r.parent_ids, operator=r.operator, program=None, error="-")
        for r in records
    ]
    ev = loop.evaluate(children, generation)
    valid = np.array([r.status == "ok" and r.fitness is not None for r in records])
    ev.valid = valid & ev.valid
    ev.fitness = np.array(
        [r.fitness if v else -np.inf for r, v in zip(records, valid, strict=True)], np.float32
    )
    names = loop.descriptor_names
    ev.descriptors = np.array(
        [[r.descriptors.get(k) or 0.0 for k in names] for r in records], np.float32
    ).reshape(len(records), len(names))
    state, _, _ = loop.tell(state, ev, [r.id for r in records])
    return state


def _resume(loop: HostLoop, run: Run, state: ArchiveState) -> tuple[ArchiveState, int]:
    """The restored archive and the next generation to run."""
    start = -1
    restored = run.restore({"archive": state})
    if restored is not None:
        start, tree = restored
        state = tree["archive"]
    last = run.ledger.last_generation()
    if last is None:
        return state, 0
    for generation in range(start + 1, last + 1):
        state = _replay(loop, run, state, generation)
    if last > start:
        run.log(f"resumed: checkpoint {start}, replayed ledger generations {start + 1}..{last}")
    else:
        run.log(f"resumed from checkpoint {start}")
    run.truncate_metrics(last)
    return state, last + 1


def run_host(
    loop: HostLoop,
    run: Run,
    schedule: Schedule,
    seeds: Sequence[tuple[str, str]],
    progress: Callable[[dict], None] | None = None,
) -> tuple[ArchiveState, dict[str, Any]]:
    """Run (or resume) ``schedule.generations`` generations after the seeds (``(name,
    program)`` pairs) in ``run``; returns the final archive state and metrics."""
    state, first = _resume(loop, run, loop.init())
    return run_generations(loop, run, schedule, seeds, state, first, progress)


def run_generations(
    loop: HostLoop,
    run: Run | None,
    schedule: Schedule,
    seeds: Sequence[tuple[str, str]],
    state: ArchiveState,
    first: int,
    progress: Callable[[dict], None] | None = None,
) -> tuple[ArchiveState, dict[str, Any]]:
    """Generations ``first`` to ``schedule.generations`` from ``state`` (ELM's loop, §3):
    ask, evaluate, tell, and with a ``run`` the ledger, metrics and checkpoints. ``run``
    is ``None`` in a process of a multi-process run that does not write
    (:func:`jelm.qd.hosts.run_hosts`); its metrics are the archive's. Returns the final
    archive state and metrics."""
    metrics: dict[str, Any] = {}
    for generation in range(first, schedule.generations + 1):
        t0 = time.perf_counter()
        if generation == 0:
            children = loop.seed_children([n for n, _ in seeds], [p for _, p in seeds])
        else:
            children = loop.ask(state, generation, run.ledger.programs if run else None)
        t1 = time.perf_counter()
        ev = loop.evaluate(children, generation)
        seconds = {"mutate": t1 - t0, "evaluate": time.perf_counter() - t1}
        if run is not None:
            state, metrics = _commit(loop, run, state, generation, ev, seconds)
            run.append_metrics(metrics)
        else:
            state, _, _ = loop.tell(state, ev, None)
            metrics = {k: float(v) for k, v in loop.archive.metrics(state).items()}
        if generation == 0 and metrics["filled"] == 0:
            raise SeedError([n for n, _ in seeds], ev.records, loop.domain)
        if run is not None:
            final = generation == schedule.generations
            if final or generation % schedule.checkpoint_every == 0:
                run.save(generation, {"archive": state})
            if progress is not None:
                progress(metrics)
    if run is None or first > schedule.generations:
        metrics = {k: float(v) for k, v in loop.archive.metrics(state).items()}
    if run is not None and first > schedule.generations:  # a finished run started again
        metrics["evaluations"] = run.ledger.count()
        last = run.ledger.last_generation()
        if last is not None and last != run.checkpoints.latest_step():
            run.save(last, {"archive": state})  # keep what was replayed
    return state, metrics
