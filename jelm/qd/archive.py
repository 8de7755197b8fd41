"""The archive of the ELM loop: a QDax MAP-Elites repertoire of any domain's genotypes.

MAP-Elites (Mouret & Clune 2015, arXiv 1504.04909) keeps the best candidate of every
niche of a descriptor space; ELM (arXiv 2206.08896v1, §4.2) runs it with a 12 x 12 x 12
grid over Sodarace's height, width and mass. The elites live in QDax's
``MapElitesRepertoire``, so QDax's selectors, metrics and plots read it; insertion is
jelm's own (per-row acceptance, a deterministic tie rule, the deep grid). The rules
(cells, CVT, QD-score, ties, deep grid, selection) are written down in
``jelm/qd/README.md``.

A stored genotype is ``{"id": int32, "genotype": <the domain's genotype pytree>}``: ``id``
is the candidate's ledger id. :class:`Archive` is a hashable, static description (config
and the genotype's leaf shapes); :class:`ArchiveState` is the pytree that changes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from qdax.core.containers.mapelites_repertoire import (
    MapElitesRepertoire,
    compute_cvt_centroids,
    get_cells_indices,
)

__all__ = ["Archive", "ArchiveConfig", "ArchiveState", "DeepHistory", "stored"]

#: A stored genotype: ``{"id": ..., "genotype": <domain pytree>}``.
Genotype = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ArchiveConfig:
    """How the archive tessellates the descriptor space and scores itself.

    Attributes:
        grid: cells per descriptor axis (``kind="grid"``).
        lower, upper: descriptor bounds (values outside are clipped into the edge cells).
        kind: ``"grid"`` (regular grid) or ``"cvt"`` (centroidal Voronoi tessellation).
        n_centroids: number of CVT cells (``kind="cvt"``).
        cvt_samples: uniform samples k-means clusters into the CVT centroids.
        cvt_seed: seed of those samples and of k-means.
        fitness_offset: subtracted from every elite's fitness in the QD-score.
        deep: candidates kept per cell (1 = MAP-Elites; k > 1 = the deep grid).
    """

    grid: tuple[int, ...] = (12, 12, 12)
    lower: tuple[float, ...] = (0.0, 0.0, 0.0)
    upper: tuple[float, ...] = (30.0, 30.0, 400.0)
    kind: Literal["grid", "cvt"] = "grid"
    n_centroids: int = 1728
    cvt_samples: int = 50_000
    cvt_seed: int = 0
    fitness_offset: float = -100.0
    deep: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(int(n) for n in self.grid))
        object.__setattr__(self, "lower", tuple(float(v) for v in self.lower))
        object.__setattr__(self, "upper", tuple(float(v) for v in self.upper))
        self.check()

    def check(self) -> None:
        """Raise ``ValueError`` with a clear message for an unusable configuration."""
        if self.kind not in ("grid", "cvt"):
            raise ValueError(f"archive kind must be 'grid' or 'cvt', got {self.kind!r}")
        if len(self.lower) != len(self.upper):
            raise ValueError(
                f"descriptor bounds differ in length: lower {self.lower}, upper {self.upper}"
            )
        for axis, (lo, hi) in enumerate(zip(self.lower, self.upper, strict=True)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(
                    f"descriptor bounds of axis {axis} are inverted or empty: [{lo}, {hi}]"
                )
        if self.kind == "grid":
            if len(self.grid) != len(self.lower):
                raise ValueError(
                    f"grid {self.grid} has {len(self.grid)} axes but the bounds have "
                    f"{len(self.lower)}"
                )
            if any(n < 1 for n in self.grid):
                raise ValueError(f"every grid axis needs at least one cell, got {self.grid}")
        elif self.n_centroids < 1 or self.cvt_samples < self.n_centroids:
            raise ValueError(
                f"CVT needs n_centroids >= 1 and cvt_samples >= n_centroids, got "
                f"{self.n_centroids} and {self.cvt_samples}"
            )
        if self.deep < 1:
            raise ValueError(f"deep (candidates kept per cell) must be >= 1, got {self.deep}")
        if not math.isfinite(self.fitness_offset):
            raise ValueError(f"fitness_offset must be finite, got {self.fitness_offset}")

    @property
    def n_descriptors(self) -> int:
        return len(self.lower)

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.grid)) if self.kind == "grid" else self.n_centroids


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DeepHistory:
    """The deep grid's ring buffers: the ``k - 1`` previous elites of every cell.

    ``genotypes`` leaves are ``(cells, k - 1, ...)``; ``fitnesses`` ``(cells, k - 1)``
    (-inf when empty); ``descriptors`` ``(cells, k - 1, n_descriptors)``; ``head``
    ``(cells,)`` the slot the next displaced elite goes to; ``count`` ``(cells,)`` how
    many slots are filled.
    """

    genotypes: Genotype
    fitnesses: jax.Array
    descriptors: jax.Array
    head: jax.Array
    count: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ArchiveState:
    """The archive's device state: the QDax repertoire of elites (fitnesses ``(cells,
    1)``, -inf for empty cells) and, for ``deep > 1``, the history of older elites."""

    repertoire: MapElitesRepertoire
    history: DeepHistory | None = None


def stored(ids: Any, genotypes: Any) -> Genotype:
    """What the archive stores for a batch: ledger ids ``(B,)`` and the domain's
    genotypes (leaves with a leading batch axis)."""
    return {"id": jnp.asarray(ids, jnp.int32), "genotype": genotypes}


@functools.lru_cache(maxsize=32)
def _unit_centroids(config: ArchiveConfig) -> np.ndarray:
    """Centroids in the unit cube (host, cached): cell centres (C-order) or k-means."""
    if config.kind == "grid":
        axes = [(np.arange(n) + 0.5) / n for n in config.grid]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)
    centroids = compute_cvt_centroids(
        num_descriptors=config.n_descriptors,
        num_init_cvt_samples=config.cvt_samples,
        num_centroids=config.n_centroids,
        minval=0.0,
        maxval=1.0,
        key=jax.random.key(config.cvt_seed),
    )
    return np.asarray(centroids, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Archive:
    """A MAP-Elites archive of one genotype layout (static; pure methods).

    ``Archive.of(config, template)`` describes it (``template``: one genotype of the
    domain, without the batch axis); :meth:`init` makes the empty state; :meth:`add`,
    :meth:`select` and :meth:`metrics` are jitted pure functions of the state.
    """

    config: ArchiveConfig
    treedef: Any  # the domain genotype's tree structure
    leaves: tuple[jax.ShapeDtypeStruct, ...]  # its leaves' shapes and dtypes

    @classmethod
    def of(cls, config: ArchiveConfig, template: Any) -> Archive:
        """The archive of genotypes laid out like ``template`` (one genotype)."""
        leaves, treedef = jax.tree.flatten(template)
        specs = tuple(jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) for x in leaves)
        return cls(config, treedef, specs)

    @classmethod
    def create(cls, config: ArchiveConfig, template: Any) -> tuple[Archive, ArchiveState]:
        """The archive and its empty state."""
        archive = cls.of(config, template)
        return archive, archive.init()

    # ------------------------------------------------------------------ geometry

    @property
    def n_cells(self) -> int:
        return self.config.n_cells

    @property
    def centroids(self) -> np.ndarray:
        """``(cells, n_descriptors)`` centroids in descriptor units (host array)."""
        lo = np.asarray(self.config.lower, np.float32)
        hi = np.asarray(self.config.upper, np.float32)
        return _unit_centroids(self.config) * (hi - lo) + lo

    def niche_of(self, descriptors: jax.Array) -> jax.Array:
        """``(B,)`` int32 niche index of every descriptor row (traceable).

        Grid: C-order flat index of the per-axis cells, clipped into the grid. CVT: the
        nearest centroid in bounds-normalised units. Non-finite rows give -1.
        """
        d = jnp.asarray(descriptors, jnp.float32)
        lo = jnp.asarray(self.config.lower, jnp.float32)
        hi = jnp.asarray(self.config.upper, jnp.float32)
        finite = jnp.all(jnp.isfinite(d), axis=-1)
        unit = jnp.where(finite[:, None], (d - lo) / (hi - lo), 0.0)
        if self.config.kind == "grid":
            grid = jnp.asarray(self.config.grid, jnp.int32)
            cell = jnp.clip(jnp.floor(unit * grid).astype(jnp.int32), 0, grid - 1)
            g = self.config.grid
            strides = np.asarray([math.prod(g[a + 1 :]) for a in range(len(g))], np.int32)
            index = jnp.sum(cell * jnp.asarray(strides), axis=-1)
        else:
            index = get_cells_indices(unit, jnp.asarray(_unit_centroids(self.config)))
        return jnp.where(finite, index.astype(jnp.int32), -1)

    # ------------------------------------------------------------------ state

    def init(self) -> ArchiveState:
        """The empty archive (every fitness -inf, genotypes zero)."""
        example = self.empty_genotype()
        repertoire = MapElitesRepertoire.init_default(
            genotype=example, centroids=jnp.asarray(self.centroids)
        )
        history = None
        k = self.config.deep - 1
        if k > 0:
            cells = self.n_cells
            history = DeepHistory(
                genotypes=jax.tree.map(lambda x: jnp.zeros((cells, k, *x.shape), x.dtype), example),
                fitnesses=jnp.full((cells, k), -jnp.inf, jnp.float32),
                descriptors=jnp.zeros((cells, k, self.config.n_descriptors), jnp.float32),
                head=jnp.zeros((cells,), jnp.int32),
                count=jnp.zeros((cells,), jnp.int32),
            )
        return ArchiveState(repertoire=repertoire, history=history)

    def empty_genotype(self) -> Genotype:
        """One stored genotype of zeros (id 0)."""
        zeros = [jnp.zeros(spec.shape, spec.dtype) for spec in self.leaves]
        return {"id": jnp.zeros((), jnp.int32), "genotype": self.treedef.unflatten(zeros)}

    # ------------------------------------------------------------------ insertion

    @functools.partial(jax.jit, static_argnums=0)
    def add(
        self,
        state: ArchiveState,
        genotypes: Genotype,
        descriptors: jax.Array,
        fitness: jax.Array,
        valid: jax.Array,
    ) -> tuple[ArchiveState, jax.Array, jax.Array]:
        """Insert a batch; returns ``(state, accepted (B,) bool, niche (B,) int32)``.

        ``niche`` is the row's cell (-1 for rows that cannot be inserted: not valid, or
        non-finite fitness or descriptors). ``accepted`` is True for exactly the rows that
        became their cell's elite (see the module docstring for the rule).
        """
        cells = self.n_cells
        rep = state.repertoire
        fitness = jnp.asarray(fitness, jnp.float32).reshape(-1)
        rows = fitness.shape[0]
        descriptors = jnp.asarray(descriptors, jnp.float32).reshape(rows, -1)
        niche = self.niche_of(descriptors)
        ok = jnp.asarray(valid, bool).reshape(-1) & jnp.isfinite(fitness) & (niche >= 0)
        niche = jnp.where(ok, niche, -1)
        seg = jnp.where(ok, niche, cells)  # invalid rows go to an extra, discarded segment
        f = jnp.where(ok, fitness, -jnp.inf)
        best = jax.ops.segment_max(f, seg, num_segments=cells + 1)
        row = jnp.arange(rows, dtype=jnp.int32)
        is_best = ok & (f == best[seg])
        first = jax.ops.segment_min(jnp.where(is_best, row, rows), seg, num_segments=cells + 1)
        winner = is_best & (row == first[seg])
        current = rep.fitnesses[jnp.clip(niche, 0, cells - 1), 0]
        accepted = winner & (f > current)
        target = jnp.where(accepted, niche, cells)  # out of range: dropped

        history = state.history
        if history is not None:
            history = self._push_history(history, rep, niche, accepted, current)

        def put(store: jax.Array, new: jax.Array) -> jax.Array:
            return store.at[target].set(new.astype(store.dtype), mode="drop")

        new_rep = rep.replace(
            genotypes=jax.tree.map(put, rep.genotypes, genotypes),
            fitnesses=put(rep.fitnesses, f[:, None]),
            descriptors=put(rep.descriptors, descriptors),
        )
        return ArchiveState(repertoire=new_rep, history=history), accepted, niche

    def _push_history(
        self,
        history: DeepHistory,
        rep: MapElitesRepertoire,
        niche: jax.Array,
        accepted: jax.Array,
        current: jax.Array,
    ) -> DeepHistory:
        """Move the elites that ``accepted`` rows displace into their cells' ring buffers."""
        cells = self.n_cells
        k = self.config.deep - 1
        cell = jnp.clip(niche, 0, cells - 1)
        push = accepted & (current > -jnp.inf)
        target = jnp.where(push, cell, cells)
        slot = history.head[cell]

        def put(store: jax.Array, old: jax.Array) -> jax.Array:
            return store.at[target, slot].set(old[cell].astype(store.dtype), mode="drop")

        return DeepHistory(
            genotypes=jax.tree.map(put, history.genotypes, rep.genotypes),
            fitnesses=put(history.fitnesses, rep.fitnesses[:, 0]),
            descriptors=put(history.descriptors, rep.descriptors),
            head=history.head.at[target].set((slot + 1) % k, mode="drop"),
            count=history.count.at[target].set(
                jnp.minimum(history.count[cell] + 1, k), mode="drop"
            ),
        )

    # ------------------------------------------------------------------ selection

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def select(self, state: ArchiveState, key: jax.Array, n: int) -> Genotype:
        """``n`` genotypes drawn uniformly over the filled cells (with replacement); with
        the deep grid, then uniformly over the candidates stored in the chosen cell."""
        rep = state.repertoire
        if state.history is None:
            filled = rep.fitnesses[:, 0] > -jnp.inf
            safe = rep.replace(
                fitnesses=jnp.where(jnp.any(filled), rep.fitnesses, 0.0)
            )  # empty archive: uniform over all cells instead of NaN probabilities
            return safe.select(key, n).genotypes
        history = state.history
        filled = rep.fitnesses[:, 0] > -jnp.inf
        total = jnp.sum(filled)
        p = jnp.where(total > 0, filled / jnp.maximum(total, 1), 1.0 / self.n_cells)
        key_cell, key_slot = jax.random.split(key)
        cell = jax.random.choice(key_cell, self.n_cells, shape=(n,), p=p)
        stored = history.count[cell] + 1
        pick = jnp.floor(jax.random.uniform(key_slot, (n,)) * stored).astype(jnp.int32)
        pick = jnp.minimum(pick, stored - 1)  # 0: the elite; s > 0: history slot s - 1
        slot = jnp.clip(pick - 1, 0, self.config.deep - 2)

        def take(elite: jax.Array, old: jax.Array) -> jax.Array:
            e, o = elite[cell], old[cell, slot]
            mask = (pick == 0).reshape((n,) + (1,) * (e.ndim - 1))
            return jnp.where(mask, e, o)

        return jax.tree.map(take, rep.genotypes, history.genotypes)

    # ------------------------------------------------------------------ metrics

    @functools.partial(jax.jit, static_argnums=0)
    def metrics(self, state: ArchiveState) -> dict[str, jax.Array]:
        """Archive metrics (all scalars): ``qd_score`` (sum of ``fitness -
        fitness_offset`` over filled cells), ``coverage`` (filled fraction in [0, 1]),
        ``coverage_percent``, ``max_fitness`` (-inf if empty), ``mean_fitness`` over filled
        cells (NaN if empty), ``filled`` (cell count) and ``stored`` (candidates stored,
        counting the deep grid's history)."""
        f = state.repertoire.fitnesses[:, 0]
        filled = f > -jnp.inf
        count = jnp.sum(filled)
        total = jnp.sum(jnp.where(filled, f, 0.0))
        stored = count if state.history is None else count + jnp.sum(state.history.count)
        coverage = count / self.n_cells
        return {
            "qd_score": total - self.config.fitness_offset * count,
            "coverage": coverage,
            "coverage_percent": 100.0 * coverage,
            "max_fitness": jnp.max(f),
            "mean_fitness": jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan),
            "filled": count.astype(jnp.int32),
            "stored": stored.astype(jnp.int32),
        }
