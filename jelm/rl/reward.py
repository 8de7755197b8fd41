"""Stage 3's reward (ELM §7): each sampled program runs in the sandbox, its walker is
simulated on the terrain its sample was conditioned on, and the reward is the distance the
walker's centre of mass travels in the terrain's direction of progress, at least a floor
(0: going backwards earns what standing still earns); a program that gives no walker
earns a fixed penalty below the floor."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from jelm.rl.terrains import TerrainDistribution


@dataclasses.dataclass(frozen=True)
class Rewards:
    """One batch's rewards [B] (the penalty where a program failed), each row's status
    (``ok``, or why it gave no walker), error message and fitness (None unless ok)."""

    rewards: np.ndarray
    statuses: list[str]
    errors: list[str]
    fitness: list[float | None]

    @property
    def valid(self) -> np.ndarray:
        """Rows whose program gave a walker the simulator scored."""
        return np.asarray([s == "ok" for s in self.statuses])


class Rewarder(Protocol):
    """Rewards of a batch of programs, row ``b`` on terrain ``terrain_ids[b]``."""

    def __call__(self, programs: Sequence[str], terrain_ids: np.ndarray) -> Rewards: ...


class SodaraceRewarder:
    """Programs -> walkers (sandbox) -> distance on each row's terrain (the batched
    simulator with a per-row terrain stack, one compiled shape: ``rows`` rows), at least
    ``floor`` (``-inf``: none); ``penalty`` for a program that gives no walker.

    ``domain`` is a :class:`jelm.domains.sodarace.SodaraceDomain` (its walker shape and
    horizon; its own terrain is not used); ``sandbox`` a running
    :class:`jelm.programs.sandbox.Sandbox` for the domain's programs.
    """

    def __init__(
        self,
        domain: Any,
        sandbox: Any,
        terrains: TerrainDistribution,
        penalty: float,
        rows: int,
        floor: float = 0.0,
    ) -> None:
        import jax

        from jelm.sim import DEFAULT_PARAMS, SurfaceSpec, as_arrays, evaluate_jit
        from jelm.sim.shard import local_mesh

        self.domain = domain
        self.sandbox = sandbox
        self.penalty = float(penalty)
        self.floor = float(floor)
        self.rows = int(rows)
        stacked = terrains.stacked()
        self._stack = stacked
        self._surfaces = SurfaceSpec.of(stacked)
        self._params = as_arrays(DEFAULT_PARAMS)
        self._evaluate = evaluate_jit
        # every local device unless $JELM_SIM_SHARD=0, as the Sodarace domain's evaluate;
        # bit-identical to one device (jelm/sim/README.md, "Devices")
        self._mesh = local_mesh()
        self._take = jax.jit(lambda stack, idx: jax.tree.map(lambda a: a[idx], stack))

    def __call__(self, programs: Sequence[str], terrain_ids: np.ndarray) -> Rewards:
        """Rewards of ``programs``; rows beyond ``rows`` are evaluated in further calls of
        the same compiled shape."""
        n = len(programs)
        statuses = ["ok"] * n
        errors = [""] * n
        phenotypes: list[Any] = [None] * n
        for k, res in enumerate(self.sandbox.execute(list(programs))):
            if not res.ok:
                statuses[k], errors[k] = str(res.status), res.error
            elif (why := self.domain.does_not_fit(res.value)) is not None:
                statuses[k], errors[k] = "too_large", why
            else:
                phenotypes[k] = res.value
        fitness: list[float | None] = [None] * n
        rewards = np.full(n, self.penalty, np.float32)
        ids = np.asarray(terrain_ids, np.int32)
        for start in range(0, n, self.rows):
            part = phenotypes[start : start + self.rows]
            if all(p is None for p in part):
                continue
            walkers = self.domain.walkers(self.domain.pack(part, self.rows))
            idx = np.zeros(self.rows, np.int32)
            idx[: len(part)] = ids[start : start + len(part)]
            ev = self._evaluate(
                walkers,
                self._take(self._stack, idx),
                self._params,
                steps=self.domain.steps,
                surfaces=self._surfaces,
                mesh=self._mesh,
            )
            fit, ok = np.asarray(ev.fitness), np.asarray(ev.valid)
            for j, p in enumerate(part):
                k = start + j
                if p is None:
                    continue
                if ok[j] and np.isfinite(fit[j]):
                    fitness[k] = float(fit[j])
                    rewards[k] = max(float(fit[j]), self.floor)
                else:
                    statuses[k], errors[k] = "evaluation_failed", "the simulator refused it"
        return Rewards(rewards, statuses, errors, fitness)
