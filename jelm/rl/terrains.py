"""Terrain distributions for stage 3 of ELM (Lehman et al., 2022, §7).

The conditional inventor is trained on a small set of terrains, each sample's terrain drawn
uniformly; the paper's two sets are the left wall, the right wall and a tunnel, and the
two walls and bumpy ground. A distribution is a tuple of terrain names of
:mod:`jelm.sim.terrain`; terrain ``i`` of a distribution is its id. This module builds and
stacks the terrains, draws ids, and renders each terrain as the occupancy image that the
convolutional terrain embedding network (:mod:`jelm.rl.encoders`) reads.

Host code (NumPy) except :func:`sample_terrains`, which is a traceable JAX function.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jelm.sim.terrain import TERRAINS, Terrain, make_terrain, stack


def _canonical(name: str) -> str:
    """A terrain name as :data:`jelm.sim.terrain.TERRAINS` spells it."""
    return name.strip().replace("-", "_")


# The caches hold concrete arrays even when first filled while a function is traced
# (``ensure_compile_time_eval``): a cached tracer would leak into later calls.
@functools.cache
def _build(names: tuple[str, ...]) -> tuple[Terrain, ...]:
    with jax.ensure_compile_time_eval():
        return tuple(make_terrain(n) for n in names)


@functools.cache
def _stacked(names: tuple[str, ...]) -> Terrain:
    with jax.ensure_compile_time_eval():
        return stack(_build(names))


@dataclasses.dataclass(frozen=True)
class TerrainDistribution:
    """A uniform distribution over named built-in terrains; terrain ``i`` has id ``i``.

    Names are those of :data:`jelm.sim.terrain.TERRAINS` (``-`` is read as ``_``). A name
    may appear only once, so an id names one terrain and every terrain is a distinct
    condition for the policy.
    """

    name: str
    terrains: tuple[str, ...]

    def __post_init__(self) -> None:
        names = tuple(_canonical(n) for n in self.terrains)
        if not names:
            raise ValueError(f"distribution {self.name!r} has no terrains")
        unknown = [n for n in names if n not in TERRAINS]
        if unknown:
            raise ValueError(
                f"distribution {self.name!r}: unknown terrain(s) {unknown}; "
                f"choose from {sorted(TERRAINS)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"distribution {self.name!r} repeats a terrain: {list(names)}")
        object.__setattr__(self, "terrains", names)

    def __len__(self) -> int:
        return len(self.terrains)

    def build(self) -> tuple[Terrain, ...]:
        """The terrains, built by :func:`jelm.sim.terrain.make_terrain` (cached)."""
        return _build(self.terrains)

    def stacked(self) -> Terrain:
        """The terrains as one batched :class:`Terrain`; index ``i`` is terrain ``i``."""
        return _stacked(self.terrains)


#: The paper's two stage-3 distributions (ELM §7).
DISTRIBUTIONS: dict[str, TerrainDistribution] = {
    "walls_tunnel": TerrainDistribution("walls_tunnel", ("left_wall", "right_wall", "tunnel")),
    "walls_bumpy": TerrainDistribution("walls_bumpy", ("left_wall", "right_wall", "bumpy")),
}


def distribution(name_or_names: str | Sequence[str] | TerrainDistribution) -> TerrainDistribution:
    """A registered distribution by name, or one over a comma-separated list of terrains.

    ``"walls_tunnel"`` gives the registered distribution; ``"flat,tunnel"`` (or the
    sequence ``["flat", "tunnel"]``) gives a distribution over those terrains, in that
    order. Raises ValueError naming the valid choices otherwise.
    """
    if isinstance(name_or_names, TerrainDistribution):
        return name_or_names
    if isinstance(name_or_names, str):
        key = name_or_names.strip()
        if key in DISTRIBUTIONS:
            return DISTRIBUTIONS[key]
        names = key.split(",")
    else:
        names = list(name_or_names)
    names = [_canonical(n) for n in names]
    if not names or any(n not in TERRAINS for n in names):
        raise ValueError(
            f"unknown terrain distribution {name_or_names!r}; choose one of "
            f"{sorted(DISTRIBUTIONS)} or a comma-separated list of terrains from "
            f"{sorted(TERRAINS)}"
        )
    return TerrainDistribution(",".join(names), tuple(names))


def sample_terrains(key: jax.Array, n_terrains: int, n: int) -> jax.Array:
    """``n`` terrain ids, each drawn uniformly and independently from ``0..n_terrains-1``.

    Traceable; ``n`` must be static under ``jit``. Returns int32 ``[n]``.
    """
    return jax.random.randint(key, (n,), 0, n_terrains, dtype=jnp.int32)


def _heights_at(x0: float, dx: float, heights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`jelm.sim.terrain.interp_heights` (height only): linear
    between grid points, the edge height continued flat beyond the grid."""
    k = heights.shape[0]
    s = (x - x0) / dx
    i = np.clip(np.floor(s), 0, k - 2).astype(np.int64)
    frac = np.clip(s - i, 0.0, 1.0)
    h0, h1 = heights[i], heights[i + 1]
    return h0 + frac * (h1 - h0)


def image_axes(
    terrain: Terrain,
    *,
    height: int = 32,
    width: int = 64,
    x_before: float = 8.0,
    x_after: float = 24.0,
    y_max: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The world x of each column and the world y of each row of :func:`terrain_image`.

    Columns run left to right in world x (never mirrored), over the ``x_before +
    x_after`` units around the spawn point that lie ``x_before`` behind and ``x_after``
    ahead of it in the terrain's direction of progress. Rows run from ``y_max`` (row 0)
    down to 0 (the last row). Both ends of each axis are sampled.
    """
    if height < 2 or width < 2:
        raise ValueError(f"image must be at least 2x2, got {height}x{width}")
    if x_before < 0 or x_after < 0 or x_before + x_after <= 0:
        raise ValueError(
            f"need x_before, x_after >= 0 with a positive sum, got {x_before}, {x_after}"
        )
    if y_max <= 0:
        raise ValueError(f"y_max must be positive, got {y_max}")
    spawn = float(terrain.spawn_x)
    direction = float(terrain.direction)
    a, b = spawn - x_before * direction, spawn + x_after * direction
    xs = np.linspace(min(a, b), max(a, b), width)
    ys = np.linspace(y_max, 0.0, height)
    return xs, ys


def terrain_image(terrain: Terrain, **view: float | int) -> np.ndarray:
    """The strip around the spawn point as an occupancy image: float32 ``[height, width]``,
    1 where solid, 0 where free; ``view`` (height, width, x_before, x_after, y_max) goes
    to :func:`image_axes`, which holds the defaults.

    Pixel ``(r, c)`` samples the point of :func:`image_axes`; it is solid when it lies on
    or below the ground, on or above the ceiling, or on or beyond a wall.

    The image is in world orientation, not mirrored into the direction of progress, so
    walls appear on their true side. Mirroring would make ``left_wall`` and
    ``right_wall`` the same picture (flat ground, a wall just behind the spawn), though
    their walkers must go opposite ways; here one is the other flipped left to right. The
    window still leans ahead: it holds ``x_after`` units in the direction of progress and
    ``x_before`` behind. The direction itself is not drawn: terrains that differ only in
    direction (none of the built-ins do) give the same image.
    """
    if terrain.is_batched:
        raise ValueError("terrain_image takes an unbatched terrain")
    xs, ys = image_axes(terrain, **view)
    x0, dx = float(terrain.x0), float(terrain.dx)
    ground = _heights_at(x0, dx, np.asarray(terrain.ground, dtype=np.float64), xs)
    ceiling = _heights_at(x0, dx, np.asarray(terrain.ceiling, dtype=np.float64), xs)
    wall = (xs <= float(terrain.left_wall)) | (xs >= float(terrain.right_wall))
    y = ys[:, None]
    solid = (y <= ground[None, :]) | (y >= ceiling[None, :]) | wall[None, :]
    return solid.astype(np.float32)


def images(dist: TerrainDistribution, **kw: float) -> np.ndarray:
    """:func:`terrain_image` of each terrain of ``dist``: float32 ``[n_terrains, H, W]``;
    keyword arguments go to :func:`terrain_image`."""
    return np.stack([terrain_image(t, **kw) for t in dist.build()])
