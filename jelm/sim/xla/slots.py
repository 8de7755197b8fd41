"""The walkers' links as per-joint slot tables, the layout of the XLA step.

Every walker is turned once, inside ``jit``, into tables ``(J, D)`` (neighbour, rest
length, bone / muscle flags, amplitude, phase, bone weight), so the step only gathers and
never scatters, and every per-joint sum runs over the slots in a fixed order (ELM paper,
Lehman et al. 2022, §4: Sodarace's bones and muscles).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jelm.sim.base import DEFAULT_PARAMS, PhysicsParams
from jelm.sim.walker import WalkerBatch


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Topology:
    """One walker's links as per-joint slot tables ``(J, D)`` (built inside jit).

    Slot ``d`` of joint ``n`` is the ``d``-th link touching ``n`` (links in input order);
    unused slots point at ``n`` itself with every coefficient zero.
    """

    neighbour: jax.Array  # (J, D) int32
    rest: jax.Array  # (J, D) rest length
    bone: jax.Array  # (J, D) float 1/0
    muscle: jax.Array  # (J, D) float 1/0
    amplitude: jax.Array  # (J, D) relative amplitude (amplitude_scale * amplitude)
    cos_phase: jax.Array  # (J, D)
    sin_phase: jax.Array  # (J, D)
    bone_weight: jax.Array  # (J, D) relaxation / max(bones at either end of the slot's bone)
    joint_mask: jax.Array  # (J,) bool


def _slot_tables(
    link_i: jax.Array,
    link_j: jax.Array,
    link_mask: jax.Array,
    n_joints: int,
    degree: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-joint slot tables of one walker: (neighbour, link index, slot used), ``(J, D)``."""
    n_links = link_i.shape[0]
    sentinel = jnp.int32(n_joints)
    owner = jnp.concatenate(
        [jnp.where(link_mask, link_i, sentinel), jnp.where(link_mask, link_j, sentinel)]
    )
    other = jnp.concatenate([link_j, link_i])
    link_id = jnp.concatenate([jnp.arange(n_links), jnp.arange(n_links)]).astype(jnp.int32)
    order = jnp.argsort(owner, stable=True)
    sorted_owner = owner[order]
    joints = jnp.arange(n_joints, dtype=jnp.int32)
    start = jnp.searchsorted(sorted_owner, joints, side="left")
    stop = jnp.searchsorted(sorted_owner, joints, side="right")
    offset = jnp.arange(degree, dtype=jnp.int32)
    used = offset[None, :] < (stop - start)[:, None]
    entry = order[jnp.clip(start[:, None] + offset[None, :], 0, 2 * n_links - 1)]
    neighbour = jnp.where(used, other[entry], joints[:, None]).astype(jnp.int32)
    return neighbour, link_id[entry], used


def topology(batch: WalkerBatch, params: PhysicsParams = DEFAULT_PARAMS) -> Topology:
    """Slot tables for every walker of ``batch`` (leading batch axis)."""
    n_joints, degree = batch.joints.shape[-2], batch.max_degree
    rest_all = batch.rest_lengths

    def one(link_i, link_j, link_mask, muscle, amplitude, phase, rest, joint_mask):
        neighbour, link, used = _slot_tables(link_i, link_j, link_mask, n_joints, degree)
        usedf = used.astype(rest.dtype)
        is_muscle = muscle[link] & used
        bone = usedf * (~muscle[link])
        angle = 2.0 * jnp.pi * phase[link]
        # Each bone moves both ends by the same amount (equal and opposite, so bones never
        # push the walker as a whole), scaled by 1 / the larger bone count of its two ends
        # so that no joint's summed corrections overshoot. Dividing each joint by its own
        # count instead breaks momentum conservation: a collapsed walker then slides along
        # the ground by itself (jelm/sim/README.md, "Momentum").
        n_bones = jnp.sum(bone, axis=-1)
        pair = jnp.maximum(n_bones[:, None], n_bones[neighbour])
        return Topology(
            neighbour=neighbour,
            rest=rest[link] * usedf,
            bone=bone,
            muscle=is_muscle.astype(rest.dtype),
            amplitude=jnp.where(is_muscle, params.amplitude_scale * amplitude[link], 0.0),
            cos_phase=jnp.cos(angle),
            sin_phase=jnp.sin(angle),
            bone_weight=bone * params.relaxation / jnp.maximum(pair, 1.0),
            joint_mask=joint_mask,
        )

    return jax.vmap(one)(
        batch.link_i,
        batch.link_j,
        batch.active_links,
        batch.muscle,
        batch.amplitude,
        batch.phase,
        rest_all,
        batch.joint_mask,
    )


def minor(topo: Topology) -> Topology:
    """Move the batch axis of every table last."""
    return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, -1), topo)
