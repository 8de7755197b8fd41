"""Terrain contact for the XLA step: the terrain in the step's layout, the push out of
ground, ceiling and walls, Coulomb friction, side entry and the final clamp.

Stages 3 and 5 of a substep (see :mod:`jelm.sim.xla.step`); the Sodarace terrains of the
ELM paper (Lehman et al. 2022, §4 and §6).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jelm.sim.base import GENERAL_SURFACES, SurfaceSpec
from jelm.sim.terrain import NO_SURFACE, Terrain, interp_heights


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Ground:
    """A terrain laid out for the batch-minor step (tables ``(K,)`` or ``(K, B)``)."""

    x0: jax.Array
    dx: jax.Array
    ground: jax.Array
    ceiling: jax.Array
    left_wall: jax.Array
    right_wall: jax.Array
    spec: SurfaceSpec = dataclasses.field(metadata={"static": True}, default=GENERAL_SURFACES)

    @staticmethod
    def of(terrain: Terrain, spec: SurfaceSpec) -> Ground:
        t = terrain.ground.ndim == 2
        return Ground(
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


def side_entry(
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


def contact(
    x: jax.Array, y: jax.Array, surf: tuple[jax.Array, ...], g: Ground
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


def clamp(x: jax.Array, y: jax.Array, g: Ground) -> tuple[jax.Array, jax.Array]:
    """Keep every node inside the free space: walls, then ground and ceiling heights."""
    x = jnp.clip(x, g.left_wall, g.right_wall)
    h, _, c, _ = g.surfaces(x)
    return x, jnp.maximum(jnp.minimum(y, c), h)


def friction(x, y, px_prev, py_prev, push_x, push_y, mu):
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
