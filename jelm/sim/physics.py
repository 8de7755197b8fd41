"""Running walkers: placement, simulation on a chosen backend, fitness and descriptors.

The drivers of the simulator (ELM paper, Lehman et al. 2022, §4 and appendix): a walker
is placed standing on its terrain, simulated for a horizon on a backend of
:mod:`jelm.sim.backends`, and scored by the paper's fitness (the centre of mass's x
displacement, times the terrain's direction) and descriptors (initial height, width, and
mass = joints + total link length / 2).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jelm.sim.backends import resolve
from jelm.sim.base import (
    DEFAULT_PARAMS,
    DEFAULT_STEPS,
    GENERAL_SURFACES,
    INVALID_FITNESS,
    Evaluation,
    PhysicsParams,
    SimState,
    SurfaceSpec,
    as_arrays,
)
from jelm.sim.shard import local_mesh, over_devices
from jelm.sim.terrain import Terrain, ground_height
from jelm.sim.walker import WalkerBatch, pack_buckets


def _ordered_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum over joints (axis 0) in joint order, masked; padding adds exact zeros last."""
    values = jnp.where(mask.reshape(mask.shape + (1,) * (values.ndim - 1)), values, 0.0)
    return jax.lax.fori_loop(
        1, values.shape[0], lambda n, acc: acc + values[n], values[0], unroll=False
    )


def _place(
    joints: jax.Array, joint_mask: jax.Array, terrain: Terrain, params: PhysicsParams
) -> jax.Array:
    """Put one walker on its terrain: x by the spawn rule, lowest node ``clearance`` above
    the ground (the paper's walkers start standing, not falling from a height)."""
    big = jnp.asarray(1e30, joints.dtype)
    xs, ys = joints[:, 0], joints[:, 1]
    x_min = jnp.min(jnp.where(joint_mask, xs, big))
    x_max = jnp.max(jnp.where(joint_mask, xs, -big))
    shift_x = terrain.spawn_x - (x_min + terrain.spawn_align * (x_max - x_min))
    h, _ = ground_height(terrain, xs + shift_x)
    gap = jnp.min(jnp.where(joint_mask, ys - h, big))
    shift_y = params.clearance - gap
    placed = joints + jnp.stack([shift_x, shift_y])
    return jnp.where(joint_mask[:, None], placed, 0.0)


def _descriptors(batch: WalkerBatch) -> jax.Array:
    """(B, 3): initial height, width and mass = joints + total link length / 2 (paper §4)."""
    big = jnp.asarray(1e30, batch.joints.dtype)
    m = batch.joint_mask[..., None]
    lo = jnp.min(jnp.where(m, batch.joints, big), axis=-2)
    hi = jnp.max(jnp.where(m, batch.joints, -big), axis=-2)
    extent = jnp.where(batch.walker_mask[:, None], hi - lo, 0.0)
    n_joints = jnp.sum(batch.joint_mask, axis=-1).astype(batch.joints.dtype)
    link_total = jax.vmap(lambda r, k: _ordered_sum(r, k))(batch.rest_lengths, batch.active_links)
    mass = n_joints + 0.5 * link_total
    return jnp.stack([extent[:, 1], extent[:, 0], mass], axis=-1)


def _terrain_axes(terrain: Terrain) -> Any:
    return 0 if terrain.is_batched else None


def init_state(
    batch: WalkerBatch, terrain: Terrain, params: PhysicsParams = DEFAULT_PARAMS
) -> SimState:
    """The placed, resting start state of every walker of ``batch``."""
    place = jax.vmap(_place, in_axes=(0, 0, _terrain_axes(terrain), None))
    pos = place(batch.joints, batch.joint_mask, terrain, params)
    return SimState(pos=pos, vel=jnp.zeros_like(pos), step=jnp.zeros(pos.shape[0], dtype=jnp.int32))


def _centre(pos: jax.Array, joint_mask: jax.Array) -> jax.Array:
    """(B,) x of the centre of mass (unit node masses), summed in joint order."""
    total = jax.vmap(_ordered_sum)(pos[..., 0], joint_mask)
    count = jnp.maximum(jnp.sum(joint_mask, axis=-1), 1).astype(pos.dtype)
    return total / count


def simulate(
    batch: WalkerBatch,
    terrain: Terrain,
    state: SimState,
    steps: int,
    params: PhysicsParams = DEFAULT_PARAMS,
    surfaces: SurfaceSpec = GENERAL_SURFACES,
    backend: str | None = None,
) -> SimState:
    """Advance every walker of ``batch`` by ``steps`` steps from ``state`` (traceable).

    ``backend`` names an entry of :mod:`jelm.sim.backends` (``"native"``, ``"xla"``);
    ``None`` / ``"auto"`` take the native step on the CPU when it is available, else the
    XLA step, chosen when traced (:func:`jelm.sim.backends.resolve`). ``surfaces``
    (static) may skip terrain lookups a terrain does not need (:meth:`SurfaceSpec.of`);
    the general default is right for every terrain.
    """
    return resolve(backend).simulate(batch, terrain, state, steps, params, surfaces)


def evaluate(
    batch: WalkerBatch,
    terrain: Terrain,
    steps: int = DEFAULT_STEPS,
    params: PhysicsParams = DEFAULT_PARAMS,
    backend: str | None = None,
    shard: bool | None = None,
) -> Evaluation:
    """Simulate every walker of ``batch`` for ``steps`` steps and score it (paper §4).

    ``terrain`` is one terrain for the whole batch or a per-row stack
    (:func:`jelm.sim.terrain.stack`). Compiles once per batch shape, horizon and terrain
    batching (see :func:`evaluate_jit`); everything runs in one XLA call. ``backend``:
    see :func:`simulate`. With more than one local device the rows are spread over all
    of them, bit-identical to one device; ``shard=False`` (or ``$JELM_SIM_SHARD=0``)
    keeps the batch on one (:func:`jelm.sim.shard.local_mesh`).
    """
    return evaluate_jit(
        batch,
        terrain,
        as_arrays(params),
        steps=steps,
        surfaces=SurfaceSpec.of(terrain),
        backend=resolve(backend).name,
        mesh=local_mesh(shard),
    )


@functools.partial(jax.jit, static_argnames=("steps", "surfaces", "backend", "mesh"))
def evaluate_jit(
    batch: WalkerBatch,
    terrain: Terrain,
    params: PhysicsParams,
    steps: int,
    surfaces: SurfaceSpec = GENERAL_SURFACES,
    backend: str | None = None,
    mesh: Mesh | None = None,
) -> Evaluation:
    """The jitted body of :func:`evaluate` (pass ``as_arrays(params)`` and
    ``SurfaceSpec.of(terrain)`` for results equal to :func:`evaluate`'s; the results are
    the same with the general ``surfaces``, only slower). ``mesh``: spread the rows over
    its devices (:func:`jelm.sim.shard.over_devices`; ``None``: one device). Traceable:
    use it inside a larger jitted loop."""
    run = functools.partial(_evaluate, steps=steps, surfaces=surfaces, backend=backend)
    if mesh is None:
        return run(batch, terrain, params)
    return over_devices(run, mesh, batch, terrain, params)


def _evaluate(
    batch: WalkerBatch,
    terrain: Terrain,
    params: PhysicsParams,
    steps: int,
    surfaces: SurfaceSpec,
    backend: str | None,
) -> Evaluation:
    """Place, simulate and score ``batch`` on one device (traceable)."""
    start = init_state(batch, terrain, params)
    final = simulate(batch, terrain, start, steps, params, surfaces=surfaces, backend=backend)
    displacement = _centre(final.pos, batch.joint_mask) - _centre(start.pos, batch.joint_mask)
    finite = jnp.all(jnp.isfinite(final.pos) & jnp.isfinite(final.vel), axis=(-2, -1))
    valid = batch.walker_mask & finite
    direction = terrain.direction
    fitness = jnp.where(valid, displacement * direction, INVALID_FITNESS)
    return Evaluation(
        fitness=fitness,
        displacement=jnp.where(valid, displacement, 0.0),
        descriptors=_descriptors(batch),
        valid=valid,
        final=final,
    )


def rollout(
    batch: WalkerBatch,
    terrain: Terrain,
    steps: int = DEFAULT_STEPS,
    record_every: int = 1,
    params: PhysicsParams = DEFAULT_PARAMS,
    backend: str | None = None,
    shard: bool | None = None,
) -> jax.Array:
    """Joint trajectories ``(B, T, J, 2)`` with ``T = steps // record_every + 1`` frames
    (frame 0 is the placed start); the same dynamics as :func:`evaluate` (and the same
    ``backend`` and ``shard``)."""
    if record_every < 1 or steps % record_every:
        raise ValueError(f"record_every ({record_every}) must divide steps ({steps})")
    return rollout_jit(
        batch,
        terrain,
        as_arrays(params),
        steps=steps,
        record_every=record_every,
        surfaces=SurfaceSpec.of(terrain),
        backend=resolve(backend).name,
        mesh=local_mesh(shard),
    )


@functools.partial(
    jax.jit, static_argnames=("steps", "record_every", "surfaces", "backend", "mesh")
)
def rollout_jit(
    batch: WalkerBatch,
    terrain: Terrain,
    params: PhysicsParams,
    steps: int,
    record_every: int,
    surfaces: SurfaceSpec = GENERAL_SURFACES,
    backend: str | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """The jitted body of :func:`rollout` (``mesh`` as in :func:`evaluate_jit`)."""
    run = functools.partial(
        _rollout, steps=steps, record_every=record_every, surfaces=surfaces, backend=backend
    )
    if mesh is None:
        return run(batch, terrain, params)
    return over_devices(run, mesh, batch, terrain, params)


def _rollout(
    batch: WalkerBatch,
    terrain: Terrain,
    params: PhysicsParams,
    steps: int,
    record_every: int,
    surfaces: SurfaceSpec,
    backend: str | None,
) -> jax.Array:
    """Joint trajectories of ``batch`` on one device (traceable)."""
    start = init_state(batch, terrain, params)

    def frame(state: SimState, _: None) -> tuple[SimState, jax.Array]:
        state = simulate(
            batch, terrain, state, record_every, params, surfaces=surfaces, backend=backend
        )
        return state, state.pos

    _, frames = jax.lax.scan(frame, start, None, length=steps // record_every)
    frames = jnp.concatenate([start.pos[None], frames], axis=0)
    return jnp.swapaxes(frames, 0, 1)


def evaluate_walkers(
    walkers: Sequence[Any],
    terrain: Terrain,
    steps: int = DEFAULT_STEPS,
    params: PhysicsParams = DEFAULT_PARAMS,
    batch_multiple: int = 1,
    backend: str | None = None,
    shard: bool | None = None,
) -> dict[str, np.ndarray]:
    """Host convenience: bucket ``walkers`` (dicts or Walker objects), evaluate each bucket
    and return NumPy arrays in input order (``fitness``, ``displacement``,
    ``descriptors``, ``valid``). ``terrain`` must be unbatched; ``backend`` and ``shard``
    as in :func:`evaluate`."""
    if terrain.is_batched:
        raise ValueError("evaluate_walkers takes one terrain; use evaluate() for stacks")
    n = len(walkers)
    out = {
        "fitness": np.full(n, -np.inf, np.float32),
        "displacement": np.zeros(n, np.float32),
        "descriptors": np.zeros((n, 3), np.float32),
        "valid": np.zeros(n, bool),
    }
    for indices, batch in pack_buckets(walkers, batch_multiple=batch_multiple):
        result = evaluate(batch, terrain, steps, params, backend, shard)
        rows = len(indices)
        out["fitness"][indices] = np.asarray(result.fitness)[:rows]
        out["displacement"][indices] = np.asarray(result.displacement)[:rows]
        out["descriptors"][indices] = np.asarray(result.descriptors)[:rows]
        out["valid"][indices] = np.asarray(result.valid)[:rows]
    return out
