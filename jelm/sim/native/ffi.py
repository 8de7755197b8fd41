"""The native Sodarace step (ELM §4) as an XLA FFI custom call: the traceable binding.

:func:`simulate` is the ``native`` entry of :mod:`jelm.sim.backends`. It lays a batch out
edge-major (one coefficient table per link, :func:`link_tables`) with the terrain as
tables (:func:`terrain_tables`) and calls ``native.cc``, so it runs inside ``jit``,
``lax.scan`` and ``vmap`` like any other op.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jelm.sim.base import PhysicsParams, SimState, SurfaceSpec
from jelm.sim.native.build import library
from jelm.sim.terrain import Terrain
from jelm.sim.walker import WalkerBatch

TARGET = "jelm_sodarace_simulate"


@functools.cache
def register() -> None:
    """Register the library's handler as the FFI target (once; builds the library on first
    call, :class:`~jelm.sim.native.build.NativeUnavailable` if it cannot)."""
    lib = library()
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.JelmSodaraceSimulate), platform="cpu")


def link_tables(batch: WalkerBatch, params: PhysicsParams) -> tuple[jax.Array, ...]:
    """Edge-major coefficients ``(B, L)``: link mask, rest length, muscle flag, relative
    amplitude, cos and sin of the phase angle, bone weight (``relaxation`` / the larger
    bone count of the link's two ends, as :func:`jelm.sim.xla.topology`). A link whose
    ends are not joints of its row is masked out (:attr:`WalkerBatch.active_links`)."""
    f32 = jnp.float32
    mask = batch.active_links
    is_muscle = batch.muscle & mask
    bone = (mask & ~batch.muscle).astype(f32)
    angle = 2.0 * jnp.pi * batch.phase
    n_joints = batch.joints.shape[-2]
    link_i = jnp.clip(batch.link_i, 0, n_joints - 1)  # in range (masked links weigh 0)
    link_j = jnp.clip(batch.link_j, 0, n_joints - 1)

    def bone_counts(i: jax.Array, j: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.zeros(n_joints, f32).at[i].add(b).at[j].add(b)

    counts = jax.vmap(bone_counts)(link_i, link_j, bone)
    pair = jnp.maximum(
        jnp.take_along_axis(counts, link_i, axis=-1),
        jnp.take_along_axis(counts, link_j, axis=-1),
    )
    return (
        mask.astype(f32),
        batch.rest_lengths.astype(f32),
        is_muscle.astype(f32),
        jnp.where(is_muscle, params.amplitude_scale * batch.amplitude, 0.0).astype(f32),
        jnp.cos(angle).astype(f32),
        jnp.sin(angle).astype(f32),
        (bone * params.relaxation / jnp.maximum(pair, 1.0)).astype(f32),
    )


def terrain_tables(terrain: Terrain) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(T, 4)`` x0, dx, left wall, right wall and ``(T, K)`` ground and ceiling, with
    ``T`` 1 for one terrain or the batch size for a per-row stack."""
    scalars = jnp.stack(
        [terrain.x0, terrain.dx, terrain.left_wall, terrain.right_wall], axis=-1
    ).astype(jnp.float32)
    k = terrain.ground.shape[-1]
    return (
        scalars.reshape(-1, 4),
        terrain.ground.astype(jnp.float32).reshape(-1, k),
        terrain.ceiling.astype(jnp.float32).reshape(-1, k),
    )


def simulate(
    batch: WalkerBatch,
    terrain: Terrain,
    state: SimState,
    steps: int,
    params: PhysicsParams,
    surfaces: SurfaceSpec,
) -> SimState:
    """Advance every walker of ``batch`` by ``steps`` steps on the native step (traceable;
    registers the FFI target when first traced). ``surfaces`` skips the lookups of a flat
    ground or a missing ceiling, as in the XLA step."""
    register()
    f32 = jnp.float32
    pos = state.pos.astype(f32)
    vel = state.vel.astype(f32)
    physics = jnp.stack(
        [
            jnp.asarray(v, f32)
            for v in (
                params.dt,
                params.gravity,
                params.damping,
                params.friction,
                params.muscle_stiffness,
                params.muscle_damping,
                params.phase_speed,
                params.max_depth,
            )
        ]
    )
    link_mask, *coefficients = link_tables(batch, params)
    call = jax.ffi.ffi_call(
        TARGET,
        (jax.ShapeDtypeStruct(pos.shape, f32), jax.ShapeDtypeStruct(vel.shape, f32)),
        vmap_method="sequential",
    )
    new_pos, new_vel = call(
        pos,
        vel,
        state.step.astype(jnp.int32),
        batch.joint_mask.astype(f32),
        link_mask,
        batch.link_i.astype(jnp.int32),
        batch.link_j.astype(jnp.int32),
        *coefficients,
        *terrain_tables(terrain),
        physics,
        steps=np.int64(steps),
        substeps=np.int64(params.substeps),
        iterations=np.int64(params.iterations),
        flat_ground=bool(surfaces.flat_ground),
        ceiling=bool(surfaces.ceiling),
    )
    return SimState(pos=new_pos, vel=new_vel, step=state.step + steps)
