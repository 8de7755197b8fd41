"""``direct``: the direct-encoding baseline, mutating packed walkers in pure JAX.

ELM (Lehman et al. 2022, arXiv 2206.08896) compares mutation by a language model of the
*program* that builds a Sodaracer with non-LM baselines. This operator skips programs
altogether and mutates the walker itself (the genotype is the padded
:class:`jelm.sim.walker.WalkerBatch` row), in the spirit of the direct encodings of the
Sodarace literature; with it the whole MAP-Elites loop (select -> mutate -> simulate ->
insert) is one jitted ``lax.scan`` (purejaxrl style) with no host round trip.

Each child gets, from its parent:

* joint jitter: every real joint moves with probability ``joint_rate`` by
  ``N(0, joint_sigma^2)`` per coordinate;
* amplitude noise (``N(0, amplitude_sigma^2)``, clipped to +-``max_amplitude``) and phase
  noise (``N(0, phase_sigma^2)`` cycles, wrapped into [0, 1)) on every muscle with
  probability ``link_rate``;
* with probability ``p_flip`` one random link flips bone <-> muscle (a new muscle draws
  amplitude ``U(-new_amplitude, new_amplitude)`` and phase ``U(0, 1)``; a new bone gets
  amplitude 0, as packing stores bones);
* with probability ``p_add`` a link (a muscle with probability ``p_add_muscle``, else a
  bone) between two unlinked real joints whose degrees are below the limit, in the first
  free link slot;
* with probability ``p_remove`` one random link is removed (never the last one).

Validity by construction or by rejection, row by row (the rules of
``jelm.domains.sodarace.api.Walker.validate`` with the default limits): degrees stay
``<= min(bucket degree, 10)`` (an add is only drawn among joints below it), amplitudes are
clipped to [-10, 10], the walker keeps at least one link, no self-links or duplicate
links are created; a jitter that puts two joints closer than ``min_joint_distance``
(checked with a 0.1% margin, so the float64 check of ``validate`` agrees with this float32
one) or a coordinate beyond +-``max_abs_coordinate`` is rejected for that row (the
child keeps the parent's joints; the other edits stand). Padding rows stay padding.

Shapes never change: ``mutate(key, batch, params)`` is jittable and vmappable.

The operator's whole MAP-Elites loop, jitted, is :func:`jelm.qd.direct_loop.direct_map_elites`
(``jelm.mutation`` knows nothing of ``jelm.qd``); its throughput is measured there.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jelm.domains.sodarace.api import DEFAULT_LIMITS
from jelm.sim.walker import MAX_DEGREE, WalkerBatch

__all__ = ["DirectParams", "mutate"]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "joint_sigma",
        "joint_rate",
        "amplitude_sigma",
        "phase_sigma",
        "link_rate",
        "p_flip",
        "p_add",
        "p_add_muscle",
        "p_remove",
        "new_amplitude",
    ],
    meta_fields=["max_amplitude", "min_joint_distance", "max_abs_coordinate", "max_degree"],
)
@dataclasses.dataclass(frozen=True)
class DirectParams:
    """Mutation rates and scales (floats: pytree data) and validity limits (static).

    Units: joint coordinates in program units (the seeds span ~10), amplitude in the
    paper's raw units ([-10, 10]), phase in cycles.
    """

    joint_sigma: float = 0.5
    joint_rate: float = 0.25
    amplitude_sigma: float = 1.0
    phase_sigma: float = 0.1
    link_rate: float = 0.25
    p_flip: float = 0.2
    p_add: float = 0.2
    p_add_muscle: float = 0.5
    p_remove: float = 0.2
    new_amplitude: float = 5.0
    max_amplitude: float = DEFAULT_LIMITS.max_amplitude
    min_joint_distance: float = DEFAULT_LIMITS.min_joint_distance
    max_abs_coordinate: float = DEFAULT_LIMITS.max_abs_coordinate
    max_degree: int = DEFAULT_LIMITS.max_links_per_joint


#: Relative margin on the minimum joint distance (float32 here, float64 in validate()).
_DISTANCE_MARGIN = 1.001


def _degrees(link_i: jax.Array, link_j: jax.Array, link_mask: jax.Array, n: int) -> jax.Array:
    w = link_mask.astype(jnp.int32)
    return jnp.zeros(n, jnp.int32).at[link_i].add(w).at[link_j].add(w)


def _pick(key: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A uniform index among ``mask``'s True entries (flattened) and whether any exists."""
    flat = mask.reshape(-1)
    logits = jnp.where(flat, 0.0, -jnp.inf)
    return jax.random.categorical(key, logits), jnp.any(flat)


def _mutate_row(key: jax.Array, row: dict[str, jax.Array], p: DirectParams, degree: int):
    """Mutate one walker (unbatched arrays); returns the child's arrays."""
    joints, jmask = row["joints"], row["joint_mask"]
    li, lj, lmask = row["link_i"], row["link_j"], row["link_mask"]
    muscle, amp, phase = row["muscle"], row["amplitude"], row["phase"]
    n, n_links = joints.shape[0], li.shape[0]
    cap = min(degree, p.max_degree, MAX_DEGREE)
    keys = jax.random.split(key, 16)

    # joint jitter, rejected as a whole if it breaks spacing or the coordinate box
    moved = jax.random.bernoulli(keys[0], p.joint_rate, (n,)) & jmask
    noise = p.joint_sigma * jax.random.normal(keys[1], (n, 2))
    child = jnp.where(moved[:, None], joints + noise, joints)
    diff = child[:, None, :] - child[None, :, :]
    d2 = jnp.sum(diff * diff, axis=-1)
    pair = jmask[:, None] & jmask[None, :] & ~jnp.eye(n, dtype=bool)
    spaced = jnp.all(jnp.where(pair, d2 >= (p.min_joint_distance * _DISTANCE_MARGIN) ** 2, True))
    inside = jnp.all(jnp.where(jmask[:, None], jnp.abs(child) <= p.max_abs_coordinate, True))
    joints = jnp.where(spaced & inside, child, joints)

    # amplitude and phase noise on muscles
    active = lmask & muscle
    hit_a = jax.random.bernoulli(keys[2], p.link_rate, (n_links,)) & active
    hit_p = jax.random.bernoulli(keys[3], p.link_rate, (n_links,)) & active
    amp = jnp.where(hit_a, amp + p.amplitude_sigma * jax.random.normal(keys[4], (n_links,)), amp)
    phase = jnp.where(hit_p, phase + p.phase_sigma * jax.random.normal(keys[5], (n_links,)), phase)

    # flip one link bone <-> muscle
    k, any_link = _pick(keys[6], lmask)
    do = jax.random.bernoulli(keys[7], p.p_flip) & any_link
    becomes_muscle = ~muscle[k]
    new_amp = jnp.where(
        becomes_muscle,
        jax.random.uniform(keys[8], minval=-p.new_amplitude, maxval=p.new_amplitude),
        0.0,
    )
    new_phase = jnp.where(becomes_muscle, jax.random.uniform(keys[9]), phase[k])
    muscle = muscle.at[k].set(jnp.where(do, becomes_muscle, muscle[k]))
    amp = amp.at[k].set(jnp.where(do, new_amp, amp[k]))
    phase = phase.at[k].set(jnp.where(do, new_phase, phase[k]))

    # remove one link (never the last)
    k, _ = _pick(keys[10], lmask)
    do = jax.random.bernoulli(keys[11], p.p_remove) & (jnp.sum(lmask) >= 2)
    lmask = lmask.at[k].set(jnp.where(do, False, lmask[k]))

    # add one link between unlinked joints below the degree limit, in the first free slot
    deg = _degrees(li, lj, lmask, n)
    linked = jnp.zeros((n, n), bool).at[li, lj].max(lmask).at[lj, li].max(lmask)
    room = jmask & (deg < cap)
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    candidates = room[:, None] & room[None, :] & upper & ~linked
    flat_pair, any_pair = _pick(keys[12], candidates)
    free = ~lmask
    slot = jnp.argmax(free)
    do = jax.random.bernoulli(keys[13], p.p_add) & any_pair & jnp.any(free)
    is_muscle = jax.random.bernoulli(keys[14], p.p_add_muscle)
    k_amp, k_phase = jax.random.split(keys[15])
    add_amp = jnp.where(
        is_muscle, jax.random.uniform(k_amp, minval=-p.new_amplitude, maxval=p.new_amplitude), 0.0
    )
    add_phase = jnp.where(is_muscle, jax.random.uniform(k_phase), 0.0)

    def put(a: jax.Array, v: Any) -> jax.Array:
        return a.at[slot].set(jnp.where(do, jnp.asarray(v, a.dtype), a[slot]))

    li = put(li, flat_pair // n)
    lj = put(lj, flat_pair % n)
    muscle = put(muscle, is_muscle)
    amp = put(amp, add_amp)
    phase = put(phase, add_phase)
    lmask = put(lmask, True)

    # keep the packing conventions: bones carry amplitude 0, phases in [0, 1)
    amp = jnp.where(lmask & muscle, jnp.clip(amp, -p.max_amplitude, p.max_amplitude), 0.0)
    phase = jnp.where(lmask, jnp.mod(phase, 1.0), 0.0)
    phase = jnp.where(phase >= 1.0, 0.0, phase)  # float32 mod can round up to 1.0
    muscle = muscle & lmask
    li = jnp.where(lmask, li, 0)
    lj = jnp.where(lmask, lj, 0)
    return {
        "joints": jnp.where(jmask[:, None], joints, 0.0),
        "joint_mask": jmask,
        "link_i": li,
        "link_j": lj,
        "muscle": muscle,
        "amplitude": amp,
        "phase": phase,
        "link_mask": lmask,
    }


def mutate(key: jax.Array, batch: WalkerBatch, params: DirectParams | None = None) -> WalkerBatch:
    """One mutated child per row of ``batch`` (padding rows unchanged); jittable and
    vmappable; ``key`` is the only randomness. ``params`` defaults to ``DirectParams()``."""
    params = DirectParams() if params is None else params
    fields = ("joints", "joint_mask", "link_i", "link_j", "muscle", "amplitude", "phase")
    rows = {f: getattr(batch, f) for f in (*fields, "link_mask")}
    keys = jax.random.split(key, batch.batch_size)
    child = jax.vmap(lambda k, r: _mutate_row(k, r, params, batch.max_degree))(keys, rows)
    real = batch.walker_mask

    def keep(new: jax.Array, old: jax.Array) -> jax.Array:
        return jnp.where(real.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)

    out = jax.tree.map(keep, child, rows)
    return WalkerBatch(**out, max_degree=batch.max_degree)


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["params"], meta_fields=["degree", "name"]
)
@dataclasses.dataclass(frozen=True)
class DirectOperator:
    """``direct`` as a :class:`jelm.mutation.base.GenotypeOperator` over Sodarace
    genotypes (a pytree: pass it to jitted code as an argument, so its rates are traced)."""

    params: DirectParams
    degree: int
    name: str = "direct"
    on_device: ClassVar[bool] = True

    def mutate(self, key: jax.Array, genotypes: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """One mutated child per row of the Sodarace genotypes ``genotypes``."""
        fields = tuple(genotypes)
        batch = WalkerBatch(**{f: genotypes[f] for f in fields}, max_degree=self.degree)
        child = mutate(key, batch, self.params)
        return {f: getattr(child, f) for f in fields}


def make_direct(domain: Any, options: DirectParams) -> DirectOperator:
    """The ``direct`` operator for a Sodarace domain (the registry's factory)."""
    return DirectOperator(options, domain.shape.degree)
