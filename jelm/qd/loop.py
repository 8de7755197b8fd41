"""The ELM loop on Sodarace (paper §3.1 and §4.2): select, mutate, execute, simulate, insert.

One generation, for a program operator (``gp``, later the LM operators)::

    device  archive.select (jit)              -> parent ledger ids
    host    ledger -> parent programs -> operator.mutate -> child programs
    host    sandbox (process pool)            -> walker dicts or a failure class
    host    pack into the run's bucket shape  (fixed slices: no recompiles)
    device  evaluate (jit: vmap + scan)       -> fitness, descriptors, valid

The batch runs in two halves: JAX dispatches the first half's simulation asynchronously
and the sandbox runs the second half's programs meanwhile (measured on the 2-core CPU,
where both compete for the same cores: the default run went from 39-41 s to 37 s, with
identical results).
    host    ledger: one transaction per generation (ids assigned before insertion)
    device  archive.add (jit)                 -> accepted, niche -> written to the ledger

Durability and resume. The ledger commits every generation; the device state (the
archive) is checkpointed every ``checkpoint_every`` generations, always after the ledger
commit. A rerun in the same run directory restores the newest checkpoint and replays the
generations the ledger committed after it: their programs run again in the sandbox
(programs are deterministic) and their walkers go into the archive with the fitness and
descriptors the ledger recorded, in the original order, so the archive is exactly what it
was. Every generation's randomness derives from ``(seed, generation)`` alone, so a
resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.experiments.config import LM_OPERATORS, RunConfig, seed_program
from jelm.io.checkpoint import Checkpoints
from jelm.io.rundir import RunDir
from jelm.mutation.base import Child, Parent, ProgramOperator
from jelm.programs.sandbox import Result, Sandbox, SandboxLimits
from jelm.qd.archive import Archive, ArchiveConfig, ArchiveState, genotype_of
from jelm.qd.ledger import CandidateRecord, Ledger
from jelm.sim.base import DEFAULT_PARAMS, SurfaceSpec, as_arrays
from jelm.sim.physics import evaluate_jit
from jelm.sim.terrain import make_terrain
from jelm.sim.walker import BucketShape, WalkerBatch, WalkerDoesNotFit, pack

#: Configuration keys a resumed run may change (budget and presentation).
RESUMABLE_KEYS = ("generations", "progress", "renders", "checkpoint_every")


def identity(config: RunConfig) -> dict[str, Any]:
    """The part of the configuration that defines the run (hashed into the ledger)."""
    out = config.to_dict()
    for key in RESUMABLE_KEYS:
        out.pop(key, None)
    return out


def make_archive(config: RunConfig) -> tuple[Archive, ArchiveState]:
    """The run's archive (QDax repertoire over height, width, mass) and its empty state."""
    qd = config.qd
    return Archive.create(
        ArchiveConfig(
            grid=qd.grid,
            lower=qd.lower,
            upper=qd.upper,
            kind=qd.kind,
            n_centroids=qd.n_centroids,
            cvt_seed=config.seed,
            fitness_offset=qd.fitness_offset,
            deep=qd.deep,
        ),
        config.shape,
    )


def make_operator(config: RunConfig) -> ProgramOperator:
    """The program operator named by the configuration."""
    if config.mutation == "gp":
        from jelm.mutation.gp import GPOperator

        return GPOperator(**dict(config.gp))
    if config.mutation in LM_OPERATORS:
        return make_lm_operator(config)
    raise ValueError(f"{config.mutation!r} is not a program operator")


def make_lm_operator(config: RunConfig) -> ProgramOperator:
    """An LM operator (lm_diff, lm_prompt, lm_crossover) on the configured backend."""
    from jelm.domains import make_domain
    from jelm.mutation import make_operator as make

    return make(config.mutation, make_domain("sodarace"), config.lm)


def _does_not_fit(walker: dict[str, Any], shape: BucketShape) -> str | None:
    """Why ``walker`` does not fit the run's padded shape, or None if it does."""
    try:
        pack([walker], shape=shape)
    except WalkerDoesNotFit as exc:
        return exc.reason
    return None


class SeedError(RuntimeError):
    """No seed program gave a walker the archive could take: the run cannot start."""

    def __init__(self, config: RunConfig, records: Sequence[CandidateRecord]):
        why = "; ".join(
            f"{name}: {r.status}" + (f" ({r.error})" if r.error else "")
            for name, r in zip(config.seeds, records, strict=False)
        )
        super().__init__(
            f"no seed gave a walker the archive could take ({why}); the bucket is "
            f"{list(config.bucket)} (joints, links, links per joint): raise it, or check "
            "the seed programs"
        )


@dataclasses.dataclass
class Evaluated:
    """One generation's candidates after sandbox and simulation (host arrays, n rows)."""

    records: list[CandidateRecord]
    batch: WalkerBatch  # config.batch rows (rows >= n or without a walker are empty)
    fitness: np.ndarray
    descriptors: np.ndarray
    valid: np.ndarray


class SodaraceLoop:
    """An ELM run on Sodarace with a program operator, in one run directory."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        log: Callable[[str], None] = print,
        operator: ProgramOperator | None = None,
    ):
        self.config = config
        self.log = log
        self.rundir = RunDir(run_dir, config.to_dict(), resume_ignore=RESUMABLE_KEYS)
        self.ledger = Ledger(self.rundir.ledger_path, run_config=identity(config))
        self.checkpoints = Checkpoints(self.rundir.checkpoint_dir)
        self.archive, self.state = make_archive(config)
        self.operator = operator or make_operator(config)
        self.terrain = make_terrain(config.terrain)
        self._surfaces = SurfaceSpec.of(self.terrain)
        self._params = as_arrays(DEFAULT_PARAMS)
        limits = SandboxLimits(timeout_s=float(config.sandbox.get("timeout_s", 1.0)))
        self.sandbox = Sandbox(workers=int(config.sandbox.get("workers", 2)), limits=limits)
        self._base_key = jax.random.PRNGKey(config.seed)

    # ------------------------------------------------------------------ helpers

    def close(self) -> None:
        """Stop the sandbox workers and release the run directory."""
        self.sandbox.close()
        self.checkpoints.close()
        self.ledger.close()
        self.rundir.close()

    def __enter__(self) -> SodaraceLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, generation: int) -> jax.Array:
        return jax.random.fold_in(self._base_key, generation)

    def _rng(self, generation: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, generation])

    def _slice_rows(self) -> int:
        """Rows simulated per XLA call: half a batch, so that the host can run the next
        half's programs in the sandbox while the device simulates this half (JAX
        dispatches asynchronously); a whole batch if it cannot be halved."""
        rows = self.config.batch
        return rows // 2 if rows % 2 == 0 else rows

    def _dispatch(self, walkers: Sequence[dict[str, Any] | None]) -> tuple[WalkerBatch, Any]:
        """Pack one slice of walkers (None = empty row) and start simulating it; returns
        the packed slice and the (not yet finished) evaluation."""
        rows = self._slice_rows()
        padded = list(walkers) + [None] * (rows - len(walkers))
        present = [w for w in padded if w is not None]
        dense = pack(present, shape=self.config.shape, batch_size=rows)
        # Row r holds padded[r]: walkers from their packed row, empty rows from an
        # all-padding row of `dense` (there is one whenever a row is empty).
        source = np.full(rows, len(present) if len(present) < rows else 0)
        source[[i for i, w in enumerate(padded) if w is not None]] = np.arange(len(present))
        batch = jax.tree_util.tree_map(lambda a: a[jnp.asarray(source)], dense)
        ev = evaluate_jit(
            batch, self.terrain, self._params, steps=self.config.steps, surfaces=self._surfaces
        )
        return batch, ev

    def _sandbox(self, children: Sequence[Child], generation: int):
        """Run children's programs; their walkers (None if none fits) and ledger records."""
        runnable = [k for k, c in enumerate(children) if c.ok]
        results: dict[int, Result] = {}
        if runnable:
            out = self.sandbox.execute([children[k].program for k in runnable])
            results = dict(zip(runnable, out, strict=True))
        shape = self.config.shape
        walkers: list[dict[str, Any] | None] = []
        records = []
        for k, child in enumerate(children):
            res = results.get(k)
            fields: dict[str, Any] = {"generation": generation}
            walker = None
            if res is not None:
                fields["elapsed_s"] = res.elapsed_s
                if not res.ok:
                    fields.update(status=str(res.status), error=res.error)
                elif (why := _does_not_fit(res.walker, shape)) is not None:
                    fields.update(status="too_large", error=why)
                else:
                    walker = res.walker
                    fields["status"] = "ok"
            walkers.append(walker)
            records.append(CandidateRecord.from_child(child, **fields))
        return walkers, records

    def _run_children(self, children: Sequence[Child], generation: int) -> Evaluated:
        """Sandbox, pack and simulate children, slice by slice (the sandbox runs a slice
        while the device simulates the one before); the ledger records of all of them."""
        rows = self._slice_rows()
        walkers: list[dict[str, Any] | None] = []
        records: list[CandidateRecord] = []
        slices = []
        for start in range(0, max(1, len(children)), rows):
            w, r = self._sandbox(children[start : start + rows], generation)
            walkers += w
            records += r
            slices.append(self._dispatch(w))
        batch = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *[b for b, _ in slices])
        n = len(children)
        fitness = np.concatenate([np.asarray(e.fitness) for _, e in slices])[:n]
        descriptors = np.concatenate([np.asarray(e.descriptors) for _, e in slices])[:n]
        valid = np.concatenate([np.asarray(e.valid) for _, e in slices])[:n]
        for k, w in enumerate(walkers):
            if w is None:
                continue
            h, wd, m = (float(v) for v in descriptors[k])
            status = "ok" if valid[k] else "simulation_failed"
            fit = float(fitness[k]) if valid[k] else None
            records[k] = dataclasses.replace(
                records[k], status=status, fitness=fit, height=h, width=wd, mass=m
            )
        return Evaluated(records, batch, fitness, descriptors, valid)

    def _insert(self, evaluated: Evaluated, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Add a generation to the archive; returns (accepted, niche) for its candidates."""
        n = len(ids)
        rows = evaluated.batch.batch_size
        program_id = np.full(rows, -1, np.int32)
        program_id[:n] = ids
        valid = np.zeros(rows, bool)
        valid[:n] = evaluated.valid
        fitness = np.full(rows, -np.inf, np.float32)
        fitness[:n] = np.where(evaluated.valid, evaluated.fitness, -np.inf)
        descriptors = np.zeros((rows, 3), np.float32)
        descriptors[:n] = evaluated.descriptors
        self.state, accepted, niche = self.archive.add(
            self.state,
            genotype_of(evaluated.batch, jnp.asarray(program_id)),
            jnp.asarray(descriptors),
            jnp.asarray(fitness),
            jnp.asarray(valid),
        )
        return np.asarray(accepted)[:n], np.asarray(niche)[:n]  # niche -1: not inserted

    def _metrics(self, generation: int, evaluated: Evaluated, accepted: np.ndarray) -> dict:
        m = {k: float(v) for k, v in self.archive.metrics(self.state).items()}
        n = max(1, len(evaluated.records))
        m.update(
            generation=generation,
            evaluations=self.ledger.count(),
            valid_rate=float(np.sum(evaluated.valid)) / n,
            acceptance_rate=float(np.sum(accepted)) / n,
            time=time.time(),
        )
        return m

    def _commit(self, generation: int, evaluated: Evaluated) -> dict:
        """Ledger transaction + archive insertion of one generation; returns metrics."""
        with self.ledger.generation(generation) as gen:
            ids = gen.add_many(evaluated.records)
            accepted, niche = self._insert(evaluated, ids)
            gen.set_outcome(ids, accepted, [int(v) if v >= 0 else None for v in niche])
            metrics = self._metrics(generation, evaluated, accepted)
            gen.metrics.update(metrics)
        return metrics

    # ------------------------------------------------------------------ stages

    def _seed_children(self) -> list[Child]:
        return [
            Child(parent_ids=(), operator="seed", program=seed_program(name), message=name)
            for name in self.config.seeds
        ]

    def _children(self, generation: int) -> list[Child]:
        genotypes = self.archive.select(self.state, self._key(generation), self.config.batch)
        ids = [int(i) for i in np.asarray(genotypes["program_id"])]
        programs = self.ledger.programs(sorted(set(ids)))
        parents = [Parent(i, programs[i]) for i in ids]
        return self.operator.mutate(parents, self._rng(generation))

    def _replay(self, generation: int) -> None:
        """Put a generation the ledger committed back into the archive (resume)."""
        records = list(self.ledger.iter_candidates(generation=generation))
        children = [
            Child(parent_ids=r.parent_ids, operator=r.operator, program=r.program)
            if r.status == "ok"
            else Child(parent_ids=r.parent_ids, operator=r.operator, program=None, error="-")
            for r in records
        ]
        evaluated = self._run_children(children, generation)
        # The recorded outcome is the truth: re-simulation is deterministic, but the
        # ledger is what the run reported.
        valid = np.array([r.status == "ok" and r.fitness is not None for r in records])
        evaluated.valid = valid & evaluated.valid
        evaluated.fitness = np.array(
            [r.fitness if v else -np.inf for r, v in zip(records, valid, strict=True)],
            np.float32,
        )
        evaluated.descriptors = np.array(
            [[r.height or 0.0, r.width or 0.0, r.mass or 0.0] for r in records], np.float32
        )
        self._insert(evaluated, [r.id for r in records])

    def _resume(self) -> int:
        """Restore the archive; returns the next generation to run."""
        start = -1
        step = self.checkpoints.latest_step()
        if step is not None:
            step, restored = self.checkpoints.restore({"archive": self.state}, step)
            self.state = restored["archive"]
            start = step
        last = self.ledger.last_generation()
        if last is None:
            return 0
        for generation in range(start + 1, last + 1):
            self._replay(generation)
        if last > start:
            self.log(
                f"resumed: checkpoint {start}, replayed ledger generations {start + 1}..{last}"
            )
        else:
            self.log(f"resumed from checkpoint {start}")
        self.rundir.truncate_metrics(last)
        return last + 1

    def run(self, progress: Callable[[dict], None] | None = None) -> dict:
        """Run (or resume) up to ``config.generations`` generations; returns the final
        metrics."""
        first = self._resume()
        metrics: dict = {}
        for generation in range(first, self.config.generations + 1):
            children = self._seed_children() if generation == 0 else self._children(generation)
            evaluated = self._run_children(children, generation)
            metrics = self._commit(generation, evaluated)
            self.rundir.append_metrics(metrics)
            if generation == 0 and metrics["filled"] == 0:
                raise SeedError(self.config, evaluated.records)
            final = generation == self.config.generations
            if final or generation % self.config.checkpoint_every == 0:
                self.checkpoints.save(generation, {"archive": self.state})
            if progress is not None:
                progress(metrics)
        if not metrics:  # nothing left to run: a finished run was started again
            metrics = {k: float(v) for k, v in self.archive.metrics(self.state).items()}
            metrics["evaluations"] = self.ledger.count()
            last = self.ledger.last_generation()
            if last is not None and last != self.checkpoints.latest_step():
                self.checkpoints.save(last, {"archive": self.state})  # keep what was replayed
        return metrics
