"""Terrains for Sodarace: heightfield grounds, optional ceilings and walls.

The ELM paper (Lehman et al., 2022, §6 "Stage 3: conditional RL") evaluates Sodaracers on
several terrains so that the best walker depends on the terrain. jelm represents every
terrain the same way, so one batch can mix them: a ground heightfield and a ceiling
heightfield sampled on one uniform grid, plus a left and a right wall (an x position each),
and a spawn rule saying where the walker is placed. Absent ceilings and walls are encoded
by a far-away finite sentinel (``NO_SURFACE``) rather than ``inf``, so no arithmetic in the
step ever meets ``inf - inf``.

Heights between grid points are linearly interpolated; beyond the grid the edge height
continues flat. All builders are deterministic (``bumpy`` takes an explicit seed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jelm.sim.rounding import divide

#: Distance used for "no ceiling" / "no wall"; far outside any walker's reach.
NO_SURFACE = 1.0e6
#: Default grid: x in [-256, 256) at 0.5 units (program units; walkers are ~5-20 units).
GRID_X0 = -256.0
GRID_DX = 0.5
GRID_POINTS = 1024


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Terrain:
    """A terrain as arrays; a leading batch axis on every field makes a per-walker stack.

    Fields (unbatched shapes):
      x0, dx: ``()`` grid origin and spacing.
      ground: ``(K,)`` ground height at ``x0 + k * dx``.
      ceiling: ``(K,)`` ceiling height (``NO_SURFACE`` where there is none).
      left_wall, right_wall: ``()`` walls at these x (``-NO_SURFACE`` / ``NO_SURFACE`` if none).
      spawn_x: ``()`` where the walker is placed.
      spawn_align: ``()`` 0 puts the walker's leftmost joint at ``spawn_x``, 1 its rightmost
        (and anything between interpolates), so a walker can start beside a wall whatever
        its width.
      direction: ``()`` +1 if progress is rightwards, -1 if leftwards; fitness is the
        centre-of-mass x displacement times this (so on ``right_wall`` walking away from the
        wall, leftwards, scores positive).
    """

    x0: jax.Array
    dx: jax.Array
    ground: jax.Array
    ceiling: jax.Array
    left_wall: jax.Array
    right_wall: jax.Array
    spawn_x: jax.Array
    spawn_align: jax.Array
    direction: jax.Array

    @property
    def is_batched(self) -> bool:
        """True when the fields carry a leading per-walker axis (see :func:`stack`)."""
        return self.ground.ndim == 2


def interp_heights(x0: jax.Array, dx: jax.Array, heights: jax.Array, x: jax.Array):
    """Height and slope of a piecewise-linear heightfield at ``x``.

    ``heights`` is ``(K,)`` (one terrain, ``x`` any shape) or ``(K, B)`` (a terrain per
    column, ``x`` of shape ``(..., B)``: the simulator's batch-minor layout).
    """
    k = heights.shape[0]
    s = divide(x - x0, dx)
    i = jnp.clip(jnp.floor(s), 0, k - 2).astype(jnp.int32)
    frac = jnp.clip(s - i, 0.0, 1.0)
    if heights.ndim == 1:
        h0, h1 = heights[i], heights[i + 1]
    else:
        h0 = jnp.take_along_axis(heights, i, axis=0)
        h1 = jnp.take_along_axis(heights, i + 1, axis=0)
    inside = (s >= 0.0) & (s <= k - 1)
    slope = jnp.where(inside, divide(h1 - h0, dx), 0.0)
    return h0 + frac * (h1 - h0), slope


def ground_height(terrain: Terrain, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ground height and slope dh/dx at ``x`` for an unbatched terrain."""
    return interp_heights(terrain.x0, terrain.dx, terrain.ground, x)


def ceiling_height(terrain: Terrain, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ceiling height and slope at ``x`` for an unbatched terrain."""
    return interp_heights(terrain.x0, terrain.dx, terrain.ceiling, x)


def grid_x(points: int = GRID_POINTS, x0: float = GRID_X0, dx: float = GRID_DX) -> np.ndarray:
    """The x coordinates of the default terrain grid."""
    return x0 + dx * np.arange(points, dtype=np.float64)


def heightfield(
    ground: Sequence[float] | np.ndarray,
    ceiling: Sequence[float] | np.ndarray | None = None,
    *,
    x0: float = GRID_X0,
    dx: float = GRID_DX,
    left_wall: float | None = None,
    right_wall: float | None = None,
    spawn_x: float = 0.0,
    spawn_align: float = 0.0,
    direction: float = 1.0,
) -> Terrain:
    """A terrain from user heightfields sampled at ``x0 + k * dx``.

    To stack with the built-in terrains (:func:`stack`) use the default grid
    (``GRID_POINTS`` samples from ``GRID_X0`` at ``GRID_DX``); :func:`resample` puts
    arbitrary samples on that grid.
    """
    g = np.asarray(ground, dtype=np.float32)
    if g.ndim != 1 or g.size < 2:
        raise ValueError(f"ground must be a 1-D array of at least 2 heights, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError("ground heights must be finite")
    if ceiling is None:
        c = np.full_like(g, NO_SURFACE)
    else:
        c = np.asarray(ceiling, dtype=np.float32)
        if c.shape != g.shape:
            raise ValueError(f"ceiling shape {c.shape} differs from ground shape {g.shape}")
        c = np.where(np.isfinite(c), c, NO_SURFACE).astype(np.float32)
        if np.any(c < g):
            raise ValueError("ceiling lies below the ground somewhere")
    if dx <= 0:
        raise ValueError(f"dx must be positive, got {dx}")
    lw = -NO_SURFACE if left_wall is None else float(left_wall)
    rw = NO_SURFACE if right_wall is None else float(right_wall)
    if direction not in (1.0, -1.0):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if lw >= rw:
        raise ValueError(f"left wall ({lw}) must lie left of the right wall ({rw})")
    f32 = lambda v: jnp.asarray(v, dtype=jnp.float32)
    return Terrain(
        x0=f32(x0),
        dx=f32(dx),
        ground=jnp.asarray(g),
        ceiling=jnp.asarray(c),
        left_wall=f32(lw),
        right_wall=f32(rw),
        spawn_x=f32(spawn_x),
        spawn_align=f32(spawn_align),
        direction=f32(direction),
    )


def resample(xs: Sequence[float], heights: Sequence[float]) -> np.ndarray:
    """Linearly resample ``heights`` given at increasing ``xs`` onto the default grid."""
    xs_a = np.asarray(xs, dtype=np.float64)
    hs_a = np.asarray(heights, dtype=np.float64)
    if xs_a.shape != hs_a.shape or xs_a.ndim != 1 or xs_a.size < 2:
        raise ValueError("xs and heights must be 1-D arrays of equal length >= 2")
    if np.any(np.diff(xs_a) <= 0):
        raise ValueError("xs must be strictly increasing")
    return np.interp(grid_x(), xs_a, hs_a).astype(np.float32)


def flat() -> Terrain:
    """Flat ground at height 0; the walker starts with its left edge at x = 0."""
    return heightfield(np.zeros(GRID_POINTS))


def hills(amplitude: float = 2.0, wavelength: float = 40.0) -> Terrain:
    """Smooth rolling hills ``amplitude * (1 - cos(2 pi x / wavelength)) / 2``."""
    x = grid_x()
    return heightfield(amplitude * (1.0 - np.cos(2.0 * np.pi * x / wavelength)) / 2.0)


def bumpy(height: float = 0.6, feature: float = 2.0, seed: int = 0) -> Terrain:
    """Rough ground: smoothed random bumps of about ``height`` units every ``feature`` units.

    The area the walker spawns on (x in [-2, 2]) is kept flat so placement is fair.
    """
    rng = np.random.default_rng(seed)
    x = grid_x()
    knots = np.arange(GRID_X0, GRID_X0 + GRID_DX * GRID_POINTS + feature, feature)
    ys = rng.uniform(0.0, height, size=knots.size)
    g = np.interp(x, knots, ys)
    g = np.where(np.abs(x) <= 2.0, 0.0, g)
    return heightfield(g)


def tunnel(
    clearance: float = 6.0, start: float = 0.0, mouth: float = 4.0, mouth_top: float = 250.0
) -> Terrain:
    """Flat ground with a ceiling ``clearance`` units high from x = ``start`` onwards.

    The mouth is a steep ramp from ``mouth_top`` down to ``clearance`` over ``mouth``
    units before ``start``: a heightfield cannot hold a vertical face, and a node pushed
    out along a steep ramp's normal is pushed back horizontally, as by a wall (an abrupt
    jump would instead shove it down by the whole overlap in one step). The walker spawns
    with its right edge one unit before the mouth, so only walkers lower than the
    clearance (or able to squeeze) get far to the right.
    """
    x = grid_x()
    ramp = clearance + (mouth_top - clearance) * (start - x) / mouth
    ceiling = np.where(x >= start, clearance, np.where(x >= start - mouth, ramp, NO_SURFACE))
    return heightfield(np.zeros(GRID_POINTS), ceiling, spawn_x=start - mouth - 1.0, spawn_align=1.0)


def left_wall(gap: float = 0.5) -> Terrain:
    """Flat ground with a wall just left of the walker: it can only make progress rightwards."""
    return heightfield(np.zeros(GRID_POINTS), left_wall=0.0, spawn_x=gap, spawn_align=0.0)


def right_wall(gap: float = 0.5) -> Terrain:
    """Flat ground with a wall just right of the walker: it can only make progress leftwards."""
    return heightfield(
        np.zeros(GRID_POINTS), right_wall=0.0, spawn_x=-gap, spawn_align=1.0, direction=-1.0
    )


#: Built-in terrains by name.
TERRAINS: dict[str, Callable[..., Terrain]] = {
    "flat": flat,
    "hills": hills,
    "bumpy": bumpy,
    "tunnel": tunnel,
    "left_wall": left_wall,
    "right_wall": right_wall,
}


def make_terrain(name: str, **kwargs: float) -> Terrain:
    """Build a named terrain (``flat``, ``hills``, ``bumpy``, ``tunnel``, ``left_wall``,
    ``right_wall``); keyword arguments go to its builder."""
    try:
        builder = TERRAINS[name.replace("-", "_")]
    except KeyError:
        raise ValueError(f"unknown terrain {name!r}; choose one of {sorted(TERRAINS)}") from None
    return builder(**kwargs)


def stack(terrains: Sequence[Terrain], index: Sequence[int] | np.ndarray | None = None) -> Terrain:
    """Stack terrains into a per-walker batch.

    With ``index`` (one entry per walker), walker ``b`` gets ``terrains[index[b]]``; without
    it, walker ``b`` gets ``terrains[b]``. All terrains must share the grid size.
    """
    if not terrains:
        raise ValueError("stack needs at least one terrain")
    sizes = {t.ground.shape for t in terrains}
    if len(sizes) != 1:
        raise ValueError(f"terrains have different grid sizes {sorted(sizes)}; resample them")
    if any(t.is_batched for t in terrains):
        raise ValueError("stack takes unbatched terrains")
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *terrains)
    if index is None:
        return stacked
    idx = jnp.asarray(np.asarray(index, dtype=np.int32))
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(terrains)):
        raise ValueError(f"terrain index out of range 0..{len(terrains) - 1}")
    return jax.tree_util.tree_map(lambda a: a[idx], stacked)
