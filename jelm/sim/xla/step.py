"""The XLA step of the Sodarace simulator: a substep, a step, and chunked batches.

Sodarace as in the ELM paper (Lehman et al. 2022, §4 and appendix): point masses joined
by links; bones keep their length, muscles are springs whose rest length oscillates with
the walker's amplitude and phase; gravity, linear node damping, ground, ceiling and wall
contact with Coulomb friction. Every step of ``dt`` runs ``substeps`` substeps of
``h = dt / substeps`` (Macklin et al. 2019, "Small steps in physics simulation"). A
substep:

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

This list is the specification that the native step (:mod:`jelm.sim.native`) and the
NumPy oracle (:mod:`jelm.sim.oracle`) follow too. The walkers' links are read from
per-joint slot tables (:mod:`jelm.sim.xla.slots`), so padding (joints, links, slots, rows)
only ever adds exact zeros at the end of each sum: a walker gives bit-identical results
alone, in a padded batch or in any bucket (with FMA contraction off, which importing
``jelm.sim`` arranges).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jelm.sim import platforms
from jelm.sim.base import DEFAULT_PARAMS, GENERAL_SURFACES, PhysicsParams, SimState, SurfaceSpec
from jelm.sim.rounding import divide
from jelm.sim.terrain import Terrain
from jelm.sim.walker import WalkerBatch
from jelm.sim.xla.contact import Ground, clamp, contact, friction, side_entry
from jelm.sim.xla.slots import Topology, minor, topology

# Inside the scan every array has the batch axis last: joints (J, B), slots (J, D, B), on
# every platform. On a CPU this makes each gather a column lookup and every elementwise op
# a contiguous loop over walkers; on a GPU neighbouring threads read neighbouring walkers
# (coalesced loads); on a TPU the walkers fill the 128 lanes of a vector register
# (jelm/sim/README.md, "Platforms"). Slot sums run over d in order.


def _slot_sum(values: jax.Array) -> jax.Array:
    """Sum ``(J, D, B)`` over the slot axis in slot order (reproducible rounding)."""
    total = values[:, 0]
    for d in range(1, values.shape[1]):
        total = total + values[:, d]
    return total


def _gather(column: jax.Array, flat_neighbour: jax.Array) -> jax.Array:
    """``column[neighbour[n, d, b], b]`` for ``column (J, B)``, given
    ``flat_neighbour = neighbour * B + b`` (a 1-D gather, faster than ``take_along_axis``
    on a CPU)."""
    return column.reshape(-1)[flat_neighbour]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Dev:
    """Batch-minor state inside the scan: components ``(J, B)`` and the step ``(B,)``."""

    x: jax.Array
    y: jax.Array
    vx: jax.Array
    vy: jax.Array
    step: jax.Array


def _substep(topo: Topology, g: Ground, params: PhysicsParams, s: _Dev, sub: jax.Array) -> _Dev:
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
        nx, surf = side_entry(nx, ny, x0, g.surfaces(nx), before, params.max_depth)
        push_x, push_y = contact(nx, ny, surf, g)
        push_x, push_y = jnp.where(live, push_x, 0.0), jnp.where(live, push_y, 0.0)
        fx, fy = friction(nx + push_x, ny + push_y, x0, y0, push_x, push_y, params.friction)
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
    px_vx = jnp.where(live, divide(x - x0, dt), 0.0)
    px_vy = jnp.where(live, divide(y - y0, dt), 0.0)
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
    cx, _ = side_entry(x, y, x0, g.surfaces(x), before, params.max_depth)
    cx, cy = clamp(cx, y, g)
    x, y = jnp.where(live, cx, x0), jnp.where(live, cy, y0)
    return _Dev(x=x, y=y, vx=vx, vy=vy, step=s.step)


def _step(topo: Topology, g: Ground, params: PhysicsParams, s: _Dev) -> _Dev:
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


def chunk_rows(n_joints: int, degree: int, platform: str | None = None) -> int | None:
    """Rows per chunk for a bucket of ``n_joints`` x ``degree`` link slots on ``platform``
    (default: JAX's default backend): the platform's ``chunk_slots``
    (:func:`jelm.sim.platforms.choices`) divided by the slots of a row, at least 64; ``None``
    where the platform runs the whole batch at once."""
    slots = platforms.choices(platform).chunk_slots
    if slots is None:
        return None
    return max(64, slots // max(1, n_joints * degree))


def _simulate(
    batch: WalkerBatch,
    terrain: Terrain,
    state: SimState,
    steps: int,
    params: PhysicsParams,
    surfaces: SurfaceSpec,
) -> SimState:
    topo = minor(topology(batch, params))
    rows = batch.batch_size
    flat = topo.neighbour * rows + jnp.arange(rows, dtype=jnp.int32)
    topo = dataclasses.replace(topo, neighbour=flat)
    g = Ground.of(terrain, surfaces)
    dev = jax.lax.fori_loop(0, steps, lambda _, s: _step(topo, g, params, s), _to_dev(state))
    return _from_dev(dev)


def simulate(
    batch: WalkerBatch,
    terrain: Terrain,
    state: SimState,
    steps: int,
    params: PhysicsParams = DEFAULT_PARAMS,
    surfaces: SurfaceSpec = GENERAL_SURFACES,
    chunk: int | None = None,
    platform: str | None = None,
) -> SimState:
    """Advance every walker of ``batch`` by ``steps`` steps from ``state`` on the XLA step
    (traceable; the ``xla`` backend of :mod:`jelm.sim.backends`).

    Batches larger than ``chunk`` rows (default :func:`chunk_rows` of the batch's shape on
    ``platform``, JAX's default backend unless named: cache-sized chunks on the CPU, the
    whole batch on an accelerator) are split into equal chunks simulated one after another
    inside the same XLA call; results do not depend on the chunking (walkers never
    interact).
    ``surfaces`` (static) may skip terrain lookups a terrain does not need
    (:meth:`SurfaceSpec.of`); the general default is right for every terrain.
    """
    rows = batch.batch_size
    if chunk is None:
        chunk = chunk_rows(batch.joints.shape[-2], batch.max_degree, platform)
    if chunk is None or rows <= chunk:
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
