"""Sodarace physics in JAX: step, rollout and evaluate for batches of walkers.

Implements the Sodarace domain of the ELM paper (Lehman et al. 2022, §4 "Sodarace" and
appendix): point masses joined by links; bones keep their length, muscles are springs
whose rest length oscillates with the walker's amplitude and phase; gravity, linear node
damping, ground, ceiling and wall contact with Coulomb friction. Fitness is the paper's
(the centre of mass's x displacement over the horizon), descriptors are the paper's
(initial height, width, mass = joints + total link length / 2).

Integration: every step of ``dt`` runs ``substeps`` substeps of ``h = dt / substeps``
(Macklin et al. 2019, "Small steps in physics simulation"); every constant is in
:class:`PhysicsParams` and in the table of ``jelm/sim/README.md``. A substep:

1. muscle forces: explicit damped springs towards the target length
   ``L0 * (1 + 0.05 * amplitude * sin(3 t + 2 pi phase))``;
2. velocities: ``v += h * (g + F / m)`` then Box2D's linear damping
   ``v *= 1 / (1 + h * c)``; predicted positions ``p = p_prev + h * v``;
3. position-based dynamics (Müller et al. 2007): ``iterations`` Jacobi sweeps projecting
   every bone back to its rest length (corrections equal and opposite, scaled by
   ``relaxation`` / the larger bone count of the bone's two ends, so bones conserve
   momentum), each followed by projection out of the ground, ceiling and walls and by
   Coulomb friction on the substep's displacement tangent to the contact,
   bounded by ``friction * |contact correction|`` of that sweep; a node that entered a
   steep face sideways goes back to its previous x;
4. ``v = (p - p_prev) / h``, except that along a contact's normal a node keeps at most the
   outward speed it had before the projections (contacts are inelastic and only push);
5. a last clamp keeps every node out of the terrain (positions only: it adds no speed).

Device layout: every walker is turned once, inside ``jit``, into per-joint slot tables
``(J, D)`` (neighbour index, rest length, bone / muscle flags, amplitude, phase), so the
step only gathers and never scatters, and every per-joint sum runs over the slots in a
fixed order. Padding (joints, links, slots, rows) only ever adds exact zeros at the end of
those sums: a walker gives bit-identical results alone, in a padded batch or in any
bucket (with FMA contraction off, which importing ``jelm.sim`` arranges).

Backends: this module is the XLA step, used on accelerators and wherever it is asked
for. On the CPU, :func:`simulate` (and so :func:`evaluate` and :func:`rollout`) runs the
same step compiled from ``native.cc`` by default (:mod:`jelm.sim.native`), which avoids
XLA's slow CPU gathers; ``backend="xla"`` or ``JELM_SIM_BACKEND=xla`` selects this one.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.sim import native
from jelm.sim.terrain import NO_SURFACE, Terrain, ground_height, interp_heights
from jelm.sim.walker import WalkerBatch, pack_buckets

#: Fitness reported for rows that hold no walker or whose simulation went non-finite.
INVALID_FITNESS = -jnp.inf


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

    Float fields are pytree data (a sweep can vmap over them); ``iterations`` is static.
    Units: the walker program's units (y up), seconds, unit node mass.
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
#: Four times the sweeps of the default. Measured over 60 s on every seed
#: (tests/test_physics.py): the default keeps every bone within 1% of its length for 99%
#: of the steps (0.95%) and within 2% at the worst step (hard impacts); these keep every
#: bone within 1% always (0.66% worst).
ACCURATE_PARAMS = PhysicsParams(iterations=16)
#: Default horizon: 600 steps of 1/60 s = 10 simulated seconds.
DEFAULT_STEPS = 600


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
    """What :func:`evaluate` returns, one entry per batch row.

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
        # the ground by itself (found by GP within 30 generations).
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
        batch.link_mask,
        batch.muscle,
        batch.amplitude,
        batch.phase,
        rest_all,
        batch.joint_mask,
    )


def _ordered_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Sum over joints (axis 0) in joint order, masked; padding adds exact zeros last."""
    values = jnp.where(mask.reshape(mask.shape + (1,) * (values.ndim - 1)), values, 0.0)
    return jax.lax.fori_loop(
        1, values.shape[0], lambda n, acc: acc + values[n], values[0], unroll=False
    )


# --- the step, in batch-minor layout ------------------------------------------------------
# Inside the scan every array has the batch axis last: joints (J, B), slots (J, D, B). On a
# CPU this makes each gather a column lookup and every elementwise op a contiguous loop over
# walkers (about 3x faster than vmapping a (J, 2) step). Slot sums run over d in order.


def _slot_sum(values: jax.Array) -> jax.Array:
    """Sum ``(J, D, B)`` over the slot axis in slot order (reproducible rounding)."""
    total = values[:, 0]
    for d in range(1, values.shape[1]):
        total = total + values[:, d]
    return total


def _gather(column: jax.Array, flat_neighbour: jax.Array) -> jax.Array:
    """``column[neighbour[n, d, b], b]`` for ``column (J, B)``, given
    ``flat_neighbour = neighbour * B + b`` (a 1-D gather: ~1.6x faster than
    ``take_along_axis`` on this CPU)."""
    return column.reshape(-1)[flat_neighbour]


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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Ground:
    """A terrain laid out for the batch-minor step (tables ``(K,)`` or ``(K, B)``)."""

    x0: jax.Array
    dx: jax.Array
    ground: jax.Array
    ceiling: jax.Array
    left_wall: jax.Array
    right_wall: jax.Array
    spec: SurfaceSpec = dataclasses.field(metadata={"static": True}, default=GENERAL_SURFACES)

    @staticmethod
    def of(terrain: Terrain, spec: SurfaceSpec) -> _Ground:
        t = terrain.ground.ndim == 2
        return _Ground(
            x0=terrain.x0,
            dx=terrain.dx,
            ground=terrain.ground.T if t else terrain.ground,
            ceiling=terrain.ceiling.T if t else terrain.ceiling,
            left_wall=terrain.left_wall,
            right_wall=terrain.right_wall,
            spec=spec,
        )

    def surfaces(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """Ground height and slope, ceiling height and slope at ``x (J, B)``."""
        zero = jnp.zeros_like(x)
        if self.spec.flat_ground:
            h, hs = zero + self.ground[0], zero
        else:
            h, hs = interp_heights(self.x0, self.dx, self.ground, x)
        if self.spec.ceiling:
            c, cs = interp_heights(self.x0, self.dx, self.ceiling, x)
        else:
            c, cs = zero + jnp.asarray(NO_SURFACE, x.dtype), zero
        return h, hs, c, cs


def _side_entry(
    x: jax.Array,
    y: jax.Array,
    x_prev: jax.Array,
    here: tuple[jax.Array, ...],
    before: tuple[jax.Array, ...],
    max_depth: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Where a node is deeper than ``max_depth`` in the ground or ceiling but would be
    shallower at its previous x, it entered through a steep face (a cliff, a tunnel mouth)
    that a heightfield cannot hold: such a node goes back to its previous x instead of
    being shoved vertically by the whole overlap. ``here`` / ``before``: the surfaces at
    ``x`` / ``x_prev``. Returns the corrected x and the surfaces there."""
    h, _, c, _ = here
    hp, _, cp, _ = before
    deep = jnp.maximum(h - y, y - c)
    back = (deep > max_depth) & (jnp.maximum(hp - y, y - cp) < deep)
    x = jnp.where(back, x_prev, x)
    return x, tuple(jnp.where(back, b, a) for a, b in zip(here, before, strict=True))


def _contact(
    x: jax.Array, y: jax.Array, surf: tuple[jax.Array, ...], g: _Ground
) -> tuple[jax.Array, jax.Array]:
    """Correction moving each node out of ground and ceiling (along the surface normal)
    and walls; ``surf`` are the surfaces at ``x``."""
    h, hs, c, cs = surf
    below = jnp.minimum(y - h, 0.0) / (1.0 + hs * hs)  # <= 0: depth along the normal
    above = jnp.maximum(y - c, 0.0) / (1.0 + cs * cs)  # >= 0
    px = below * hs + above * cs
    px = px + jnp.maximum(g.left_wall - (x + px), 0.0)
    px = px + jnp.minimum(g.right_wall - (x + px), 0.0)
    return px, -below - above


def _clamp(x: jax.Array, y: jax.Array, g: _Ground) -> tuple[jax.Array, jax.Array]:
    """Keep every node inside the free space: walls, then ground and ceiling heights."""
    x = jnp.clip(x, g.left_wall, g.right_wall)
    h, _, c, _ = g.surfaces(x)
    return x, jnp.maximum(jnp.minimum(y, c), h)


def _friction(x, y, px_prev, py_prev, push_x, push_y, mu):
    """Coulomb friction: shrink this step's displacement tangent to the contact ``push``
    by ``mu * |push|`` (to zero if it is smaller: static friction)."""
    push_len = jnp.sqrt(push_x * push_x + push_y * push_y)
    inv = 1.0 / jnp.maximum(push_len, 1e-12)
    nx, ny = push_x * inv, push_y * inv
    mx, my = x - px_prev, y - py_prev
    along = mx * nx + my * ny
    tx, ty = mx - along * nx, my - along * ny
    slide = jnp.sqrt(tx * tx + ty * ty)
    keep = jnp.clip(1.0 - mu * push_len / jnp.maximum(slide, 1e-12), 0.0, 1.0)
    keep = jnp.where(push_len > 0.0, keep, 1.0)
    return px_prev + along * nx + keep * tx, py_prev + along * ny + keep * ty


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Dev:
    """Batch-minor state inside the scan: components ``(J, B)`` and the step ``(B,)``."""

    x: jax.Array
    y: jax.Array
    vx: jax.Array
    vy: jax.Array
    step: jax.Array


def _substep(topo: Topology, g: _Ground, params: PhysicsParams, s: _Dev, sub: jax.Array) -> _Dev:
    """One substep of ``dt / substeps`` (Macklin et al. 2019: small steps beat iterations);
    the five stages of the module docstring."""
    dt = params.dt / params.substeps
    live = topo.joint_mask
    t = (s.step.astype(s.x.dtype) + sub / params.substeps) * params.dt
    s_t, c_t = jnp.sin(params.phase_speed * t), jnp.cos(params.phase_speed * t)

    # 1. muscles: damped springs to an oscillating target length.
    nb = topo.neighbour
    dx = _gather(s.x, nb) - s.x[:, None]
    dy = _gather(s.y, nb) - s.y[:, None]
    dist = jnp.sqrt(dx * dx + dy * dy)
    inv = 1.0 / jnp.maximum(dist, 1e-6)
    ux, uy = dx * inv, dy * inv
    target = topo.rest * (1.0 + topo.amplitude * (s_t * topo.cos_phase + c_t * topo.sin_phase))
    rel_speed = (_gather(s.vx, nb) - s.vx[:, None]) * ux + (_gather(s.vy, nb) - s.vy[:, None]) * uy
    tension = topo.muscle * (
        params.muscle_stiffness * (dist - target) + params.muscle_damping * rel_speed
    )
    fx, fy = _slot_sum(tension * ux), _slot_sum(tension * uy)

    # 2. integrate velocities (gravity, muscles) with Box2D's linear damping law.
    damp = 1.0 / (1.0 + dt * params.damping)
    vx = jnp.where(live, (s.vx + dt * fx) * damp, 0.0)
    vy = jnp.where(live, (s.vy + dt * (fy - params.gravity)) * damp, 0.0)
    x0, y0 = s.x, s.y
    x, y = x0 + dt * vx, y0 + dt * vy
    before = g.surfaces(x0)

    # 3. bones, contacts and friction by position-based projection: Jacobi sweeps (each
    #    bone moves both ends equally, so momentum is conserved). Each sweep's contact
    #    push N bounds the tangential slip (Coulomb: |F_t| <= mu |N|).
    def sweep(_: jax.Array, carry: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        x, y, touched, push_x_sum, push_y_sum = carry
        dx = _gather(x, nb) - x[:, None]
        dy = _gather(y, nb) - y[:, None]
        dist = jnp.sqrt(dx * dx + dy * dy)
        err = 0.5 * topo.bone_weight * (dist - topo.rest) / jnp.maximum(dist, 1e-6)
        nx = x + _slot_sum(err * dx)
        ny = y + _slot_sum(err * dy)
        nx, surf = _side_entry(nx, ny, x0, g.surfaces(nx), before, params.max_depth)
        push_x, push_y = _contact(nx, ny, surf, g)
        push_x, push_y = jnp.where(live, push_x, 0.0), jnp.where(live, push_y, 0.0)
        fx, fy = _friction(nx + push_x, ny + push_y, x0, y0, push_x, push_y, params.friction)
        touched = touched | (push_x != 0.0) | (push_y != 0.0)
        return fx, fy, touched, push_x_sum + push_x, push_y_sum + push_y

    zero = jnp.zeros_like(x)
    no_contact = jnp.zeros(x.shape, dtype=bool)
    x, y, touched, push_x, push_y = jax.lax.fori_loop(
        0, params.iterations, sweep, (x, y, no_contact, zero, zero)
    )

    # 4. velocities from positions, taken before the last clamp: the clamp only repairs
    #    positions a squeeze left inside the terrain and must not turn that repair into a
    #    launch speed (a "split impulse"). Contacts are inelastic and only push: along the
    #    contact normal a touched node keeps at most the outward speed it had before the
    #    projections (the push cancels inward motion; it must not fling the node out).
    px_vx = jnp.where(live, (x - x0) / dt, 0.0)
    px_vy = jnp.where(live, (y - y0) / dt, 0.0)
    push_len = jnp.sqrt(push_x * push_x + push_y * push_y)
    inv = 1.0 / jnp.maximum(push_len, 1e-12)
    n_x, n_y = push_x * inv, push_y * inv
    v_n = px_vx * n_x + px_vy * n_y
    v_n_before = vx * n_x + vy * n_y
    cut = jnp.where(
        touched & (push_len > 0.0), jnp.maximum(v_n - jnp.maximum(v_n_before, 0.0), 0.0), 0.0
    )
    vx, vy = px_vx - cut * n_x, px_vy - cut * n_y

    # 5. a last clamp keeps every node out of the terrain whatever the sweeps left.
    cx, _ = _side_entry(x, y, x0, g.surfaces(x), before, params.max_depth)
    cx, cy = _clamp(cx, y, g)
    x, y = jnp.where(live, cx, x0), jnp.where(live, cy, y0)
    return _Dev(x=x, y=y, vx=vx, vy=vy, step=s.step)


def _step(topo: Topology, g: _Ground, params: PhysicsParams, s: _Dev) -> _Dev:
    """Advance every walker by one step of ``params.dt``."""
    s = jax.lax.fori_loop(0, params.substeps, lambda sub, s: _substep(topo, g, params, s, sub), s)
    return _Dev(x=s.x, y=s.y, vx=s.vx, vy=s.vy, step=s.step + 1)


def _to_dev(state: SimState) -> _Dev:
    return _Dev(
        x=state.pos[..., 0].T,
        y=state.pos[..., 1].T,
        vx=state.vel[..., 0].T,
        vy=state.vel[..., 1].T,
        step=state.step,
    )


def _from_dev(s: _Dev) -> SimState:
    pos = jnp.stack([s.x.T, s.y.T], axis=-1)
    vel = jnp.stack([s.vx.T, s.vy.T], axis=-1)
    return SimState(pos=pos, vel=vel, step=s.step)


def _minor(topo: Topology) -> Topology:
    """Move the batch axis of every table last."""
    return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, -1), topo)


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
    link_total = jax.vmap(lambda r, k: _ordered_sum(r, k))(batch.rest_lengths, batch.link_mask)
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


#: Slot-table entries (walkers x joints x link slots) simulated together inside one XLA
#: loop; larger batches run chunk by chunk (``lax.map``) so the working set stays in
#: cache. Measured on a 2-core CPU at 32 joints x 8 slots: 512 walkers (131,072 entries)
#: per chunk is best, 2048 at once ~35% slower.
CHUNK_SLOTS = 131_072
#: Kept for callers that want the row count of a 32 x 8 bucket.
DEFAULT_CHUNK = 512


def chunk_rows(n_joints: int, degree: int) -> int:
    """Rows per chunk for a bucket of ``n_joints`` x ``degree`` link slots."""
    return max(64, CHUNK_SLOTS // max(1, n_joints * degree))


def _simulate(
    batch: WalkerBatch,
    terrain: Terrain,
    state: SimState,
    steps: int,
    params: PhysicsParams,
    surfaces: SurfaceSpec,
) -> SimState:
    topo = _minor(topology(batch, params))
    rows = batch.batch_size
    flat = topo.neighbour * rows + jnp.arange(rows, dtype=jnp.int32)
    topo = dataclasses.replace(topo, neighbour=flat)
    g = _Ground.of(terrain, surfaces)
    dev = jax.lax.fori_loop(0, steps, lambda _, s: _step(topo, g, params, s), _to_dev(state))
    return _from_dev(dev)


def simulate(
    batch: WalkerBatch,
    terrain: Terrain,
    state: SimState,
    steps: int,
    params: PhysicsParams = DEFAULT_PARAMS,
    chunk: int | None = None,
    surfaces: SurfaceSpec = GENERAL_SURFACES,
    backend: str | None = None,
) -> SimState:
    """Advance every walker of ``batch`` by ``steps`` steps from ``state`` (traceable).

    ``backend`` (resolved when traced, see :mod:`jelm.sim.native`): ``"native"`` runs the
    compiled CPU step, ``"xla"`` the pure-JAX step below; ``None`` / ``"auto"`` take the
    native one on the CPU when it is available. ``chunk`` concerns the XLA step only.

    Batches larger than ``chunk`` rows (default :func:`chunk_rows` of the batch's shape)
    are split into equal chunks simulated one after another inside the same XLA call;
    results do not depend on the chunking (walkers never interact).
    ``surfaces`` (static) may skip terrain lookups a terrain does not need
    (:meth:`SurfaceSpec.of`); the general default is right for every terrain.
    """
    if native.resolve(backend) == "native":
        return native.simulate(batch, terrain, state, steps, params, surfaces)
    rows = batch.batch_size
    if chunk is None:
        chunk = chunk_rows(batch.joints.shape[-2], batch.max_degree)
    if rows <= chunk:
        return _simulate(batch, terrain, state, steps, params, surfaces)
    n = -(-rows // chunk)
    chunk = -(-rows // n)  # equal chunks: 586 rows run as 2 x 293, not 512 + 74 padded

    def split(a: jax.Array) -> jax.Array:
        pad = [(0, n * chunk - rows)] + [(0, 0)] * (a.ndim - 1)
        return jnp.pad(a, pad, mode="edge").reshape((n, chunk, *a.shape[1:]))

    def merge(a: jax.Array) -> jax.Array:
        return a.reshape((n * chunk, *a.shape[2:]))[:rows]

    batched = terrain.is_batched
    parts = jax.tree_util.tree_map(split, (batch, state, terrain if batched else None))

    def run(part: tuple[WalkerBatch, SimState, Terrain | None]) -> SimState:
        b, st, t = part
        return _simulate(b, t if batched else terrain, st, steps, params, surfaces)

    return jax.tree_util.tree_map(merge, jax.lax.map(run, parts))


def as_arrays(params: PhysicsParams) -> PhysicsParams:
    """``params`` with every float field a float32 array, so a jitted function traces them
    (instead of folding Python floats into constants, which rounds differently): the
    default and an explicitly passed equal ``PhysicsParams`` then give identical results."""
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), params)


def evaluate(
    batch: WalkerBatch,
    terrain: Terrain,
    steps: int = DEFAULT_STEPS,
    params: PhysicsParams = DEFAULT_PARAMS,
    backend: str | None = None,
) -> Evaluation:
    """Simulate every walker of ``batch`` for ``steps`` steps and score it (paper §4).

    ``terrain`` is one terrain for the whole batch or a per-row stack
    (:func:`jelm.sim.terrain.stack`). Compiles once per batch shape, horizon and terrain
    batching (see :func:`evaluate_jit`); everything runs in one XLA call. ``backend``:
    see :func:`simulate`.
    """
    return evaluate_jit(
        batch,
        terrain,
        as_arrays(params),
        steps=steps,
        surfaces=SurfaceSpec.of(terrain),
        backend=native.resolve(backend),
    )


@functools.partial(jax.jit, static_argnames=("steps", "surfaces", "backend"))
def evaluate_jit(
    batch: WalkerBatch,
    terrain: Terrain,
    params: PhysicsParams,
    steps: int,
    surfaces: SurfaceSpec = GENERAL_SURFACES,
    backend: str | None = None,
) -> Evaluation:
    """The jitted body of :func:`evaluate` (pass ``as_arrays(params)`` and
    ``SurfaceSpec.of(terrain)`` for results equal to :func:`evaluate`'s; the results are
    the same with the general ``surfaces``, only slower). Traceable: use it inside a
    larger jitted loop."""
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
) -> jax.Array:
    """Joint trajectories ``(B, T, J, 2)`` with ``T = steps // record_every + 1`` frames
    (frame 0 is the placed start); the same dynamics as :func:`evaluate` (and the same
    ``backend``)."""
    if record_every < 1 or steps % record_every:
        raise ValueError(f"record_every ({record_every}) must divide steps ({steps})")
    return rollout_jit(
        batch,
        terrain,
        as_arrays(params),
        steps=steps,
        record_every=record_every,
        surfaces=SurfaceSpec.of(terrain),
        backend=native.resolve(backend),
    )


@functools.partial(jax.jit, static_argnames=("steps", "record_every", "surfaces", "backend"))
def rollout_jit(
    batch: WalkerBatch,
    terrain: Terrain,
    params: PhysicsParams,
    steps: int,
    record_every: int,
    surfaces: SurfaceSpec = GENERAL_SURFACES,
    backend: str | None = None,
) -> jax.Array:
    """The jitted body of :func:`rollout`."""
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
) -> dict[str, np.ndarray]:
    """Host convenience: bucket ``walkers`` (dicts or Walker objects), evaluate each bucket
    and return NumPy arrays in input order (``fitness``, ``displacement``,
    ``descriptors``, ``valid``). ``terrain`` must be unbatched."""
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
        result = evaluate(batch, terrain, steps, params, backend)
        rows = len(indices)
        out["fitness"][indices] = np.asarray(result.fitness)[:rows]
        out["displacement"][indices] = np.asarray(result.displacement)[:rows]
        out["descriptors"][indices] = np.asarray(result.descriptors)[:rows]
        out["valid"][indices] = np.asarray(result.valid)[:rows]
    return out
