"""Types and constants shared by the simulator's drivers and its backends.

The physical constants (:class:`PhysicsParams`), the simulation state, what an evaluation
returns, the terrain lookups a backend may skip (:class:`SurfaceSpec`) and the signature
every backend's traceable step has (:class:`Simulate`). Sodarace as in the ELM paper
(Lehman et al. 2022, §4 and appendix); the constants are explained in
``jelm/sim/README.md``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jelm.sim.terrain import NO_SURFACE, Terrain
from jelm.sim.walker import WalkerBatch

#: Fitness reported for rows that hold no walker or whose simulation went non-finite.
INVALID_FITNESS = -jnp.inf
#: Default horizon: 600 steps of 1/60 s = 10 simulated seconds.
DEFAULT_STEPS = 600


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "dt",
        "gravity",
        "damping",
        "friction",
        "muscle_stiffness",
        "muscle_damping",
        "amplitude_scale",
        "phase_speed",
        "relaxation",
        "clearance",
        "max_depth",
    ],
    meta_fields=["iterations", "substeps"],
)
@dataclasses.dataclass(frozen=True)
class PhysicsParams:
    """Every physical constant of the simulator (see ``jelm/sim/README.md`` for the why).

    Float fields are pytree data (a sweep can vmap over them); ``iterations`` and
    ``substeps`` are static. Units: the walker program's units (y up), seconds, unit node
    mass.
    """

    dt: float = 1.0 / 60.0
    gravity: float = 25.0
    damping: float = 1.1
    friction: float = 1.0
    muscle_stiffness: float = 177.65
    muscle_damping: float = 5.655
    amplitude_scale: float = 0.05
    phase_speed: float = 3.0
    relaxation: float = 1.5
    clearance: float = 0.05
    max_depth: float = 0.5
    iterations: int = 4
    substeps: int = 4


DEFAULT_PARAMS = PhysicsParams()
#: Four times the bone sweeps of the default: bones stay closer to their length, at about
#: three times the cost (figures in ``jelm/sim/README.md``, "Bone accuracy").
ACCURATE_PARAMS = PhysicsParams(iterations=16)


def as_arrays(params: PhysicsParams) -> PhysicsParams:
    """``params`` with every float field a float32 array, so a jitted function traces them
    (instead of folding Python floats into constants, which rounds differently): the
    default and an explicitly passed equal ``PhysicsParams`` then give identical results."""
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), params)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SimState:
    """Positions and velocities ``(..., J, 2)`` and the step counter."""

    pos: jax.Array
    vel: jax.Array
    step: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What :func:`jelm.sim.evaluate` returns, one entry per batch row.

    fitness: ``(B,)`` centre-of-mass x displacement times the terrain's direction;
      ``-inf`` for padding rows and for walkers whose state went non-finite.
    displacement: ``(B,)`` signed centre-of-mass x displacement (program units).
    descriptors: ``(B, 3)`` initial height, width and mass (joints + total link length / 2).
    valid: ``(B,)`` the row holds a walker and its final state is finite.
    final: the final :class:`SimState`.
    """

    fitness: jax.Array
    displacement: jax.Array
    descriptors: jax.Array
    valid: jax.Array
    final: SimState


@dataclasses.dataclass(frozen=True)
class SurfaceSpec:
    """What a terrain (or stack) needs looked up, known on the host before tracing.

    ``flat_ground``: every row's ground is one constant height (no table lookups, same
    numbers as the lookups would give). ``ceiling``: some row has a ceiling somewhere.
    The general case ``SurfaceSpec(False, True)`` is right for any terrain.
    """

    flat_ground: bool = False
    ceiling: bool = True

    @staticmethod
    def of(terrain: Terrain) -> SurfaceSpec:
        """Inspect a concrete terrain (outside jit)."""
        ground = np.asarray(terrain.ground)
        ceiling = np.asarray(terrain.ceiling)
        return SurfaceSpec(
            flat_ground=bool(np.all(ground == ground[..., :1])),
            ceiling=bool(np.any(ceiling < NO_SURFACE / 2)),
        )


GENERAL_SURFACES = SurfaceSpec()


class Simulate(Protocol):
    """A backend's step: advance every walker of ``batch`` by ``steps`` steps (traceable).

    ``terrain`` is one terrain or a per-row stack; ``surfaces`` (static) may skip lookups
    the terrain does not need. Walkers never interact, so a row's result does not depend
    on the other rows.
    """

    def __call__(
        self,
        batch: WalkerBatch,
        terrain: Terrain,
        state: SimState,
        steps: int,
        params: PhysicsParams,
        surfaces: SurfaceSpec,
    ) -> SimState: ...


class BackendUnavailable(RuntimeError):
    """A simulator backend was asked for by name but cannot run here."""
