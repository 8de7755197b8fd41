"""The archive of the ELM loop: a QDax MAP-Elites repertoire of walkers (paper §4.2).

MAP-Elites (Mouret & Clune 2015, arXiv 1504.04909) keeps the best candidate ("elite") of
every niche of a descriptor space; ELM (Lehman et al. 2022, arXiv 2206.08896, §4.2) runs
it on Sodarace with a 12 x 12 x 12 grid over the walker's initial height, width and mass.
The elites live in QDax's :class:`~qdax.core.containers.mapelites_repertoire.
MapElitesRepertoire` (qdax 0.5.0), so QDax's selectors, metrics and plots read it
directly; insertion is jelm's own (below) because the loop needs per-row acceptance, a
deterministic tie rule and the deep grid, which QDax's ``add`` does not give.

Everything on the device is a pure function over pytrees with explicit keys (evosax /
QDax style). :class:`Archive` is a hashable, static description (config + bucket shape);
:class:`ArchiveState` is the pytree that changes (checkpoint it with orbax).

Genotype. One pytree of batch-leading arrays: ``program_id`` (int32, the ledger's id of
the program that built the walker; for the ``direct`` operator a per-run counter) plus the
packed walker arrays of one fixed :class:`jelm.sim.walker.BucketShape` (the fields of
:class:`~jelm.sim.walker.WalkerBatch`: ``joints``, ``joint_mask``, ``link_i``,
``link_j``, ``muscle``, ``amplitude``, ``phase``, ``link_mask``). A plain dict of arrays
(not a ``WalkerBatch``) so orbax restores it without custom node types;
:func:`genotype_of` and :meth:`Archive.walkers` convert.

Choices (written down as DESIGN.md asks):

* Descriptor bounds. Measured on flat ground with ``jelm.sim`` (600 steps), the seeds'
  (height, width, mass) are square (10, 10, 39), radial (12, 12, 51), wheel (12, 12, 104),
  galloper (9, 13, 78), cppn_fixed (7.5, 10, 92), cppn_mutable (8, 12, 115), runner
  (6, 18.6, 119). Defaults: height and width in [0, 30], mass in [0, 400]: the seeds sit in
  the lower third of each axis (cells 2-7 of 12 in height/width, 1-3 in mass) with room
  for growth (a 32-joint walker 30 x 30 with ~100 links has mass ~400). Values outside
  the bounds are clipped into the edge cells (what QDax's nearest-centroid rule does).
* Grid cells. Cell ``i`` of an axis covers ``[lo + i w, lo + (i + 1) w)``, ``w = (hi -
  lo) / n``; the flat niche index is C-order over (height, width, mass), i.e.
  ``np.ravel_multi_index((ih, iw, im), grid)``. (QDax's ``compute_euclidean_centroids``
  orders cells by ``meshgrid``'s "xy" convention, which swaps the first two axes; jelm
  builds the centroids itself so the index above is also the row of
  ``repertoire.centroids``.) Exactly on a boundary the upper cell wins (QDax's argmin
  would take the lower); nowhere else do the two rules differ.
* CVT (``kind="cvt"``): ``n_centroids`` centroids by k-means on the host with QDax's
  ``compute_cvt_centroids`` (seeded by ``cvt_seed``), computed in the unit cube and
  compared with descriptors normalised by the bounds (QDax compares raw units, where
  mass, spanning 400, would swamp height and width, spanning 30).
  ``repertoire.centroids`` holds them in descriptor units.
* QD-score. ``qd_score = sum over filled cells of (fitness - fitness_offset)``, the same
  as QDax's ``default_qd_metrics(repertoire, qd_offset=-fitness_offset)`` (QDax adds
  ``qd_offset`` once per filled cell). ``fitness_offset`` is the lowest plausible
  fitness, default -100: fitness is the centre of mass's x displacement, and walkers
  move a few units per simulated second (the seeds: -4..+14 in 10 s), so every filled
  cell adds a positive term and the score only grows as cells fill or improve.
* Coverage is reported twice: ``coverage`` as a fraction in [0, 1] and
  ``coverage_percent`` (what QDax's ``default_qd_metrics`` calls ``coverage``).
* Insertion. Rows that are not ``valid``, or whose fitness or descriptors are not
  finite, are never inserted (niche -1). Per batch a cell takes at most one candidate:
  the batch's best for that cell (ties: the lowest row), accepted iff its fitness is
  strictly greater than the cell's elite. With ``deep == 1`` this is MAP-Elites exactly
  (QDax's ``add`` writes every tied row and keeps an arbitrary one).
* Deep grid (``deep = k``): "keep the last k candidates per cell", as OpenELM's
  ``history_length``: the cell's elite stays in the QDax repertoire, and when a new elite
  displaces it the old one moves into a per-cell ring buffer of ``k - 1`` slots (oldest
  overwritten). A cell thus holds its last ``k`` elites, in increasing fitness. The
  repertoire, and so every metric, is the plain MAP-Elites archive; ``select`` picks a
  filled cell uniformly, then one of the cell's stored candidates uniformly.
* Selection is uniform over filled cells, with replacement (QDax's ``UniformSelector``
  for ``deep == 1``). An empty archive selects uniformly over all cells (zero genotypes);
  the loop never selects before the seeds are in.
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

from jelm.sim.walker import BucketShape, WalkerBatch

__all__ = [
    "WALKER_FIELDS",
    "Archive",
    "ArchiveConfig",
    "ArchiveState",
    "DeepHistory",
    "genotype_of",
]

#: The WalkerBatch array fields a genotype carries (besides ``program_id``).
WALKER_FIELDS: tuple[str, ...] = (
    "joints",
    "joint_mask",
    "link_i",
    "link_j",
    "muscle",
    "amplitude",
    "phase",
    "link_mask",
)

Genotype = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class ArchiveConfig:
    """How the archive tessellates (height, width, mass) and scores itself.

    Attributes:
        grid: cells per descriptor axis (``kind="grid"``), the paper's 12 x 12 x 12.
        lower, upper: descriptor bounds (see the module docstring for the choice).
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


def genotype_of(batch: WalkerBatch, program_id: Any) -> Genotype:
    """The archive genotype of ``batch``'s rows: ``program_id`` (scalar or ``(B,)``) plus
    the walker arrays."""
    rows = batch.joints.shape[0]
    ids = jnp.broadcast_to(jnp.asarray(program_id, jnp.int32), (rows,))
    out = {"program_id": ids}
    out.update({name: getattr(batch, name) for name in WALKER_FIELDS})
    return out


def _empty_genotype(shape: BucketShape) -> Genotype:
    j, ell = shape.joints, shape.links
    return {
        "program_id": jnp.zeros((), jnp.int32),
        "joints": jnp.zeros((j, 2), jnp.float32),
        "joint_mask": jnp.zeros((j,), bool),
        "link_i": jnp.zeros((ell,), jnp.int32),
        "link_j": jnp.zeros((ell,), jnp.int32),
        "muscle": jnp.zeros((ell,), bool),
        "amplitude": jnp.zeros((ell,), jnp.float32),
        "phase": jnp.zeros((ell,), jnp.float32),
        "link_mask": jnp.zeros((ell,), bool),
    }


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
    """A MAP-Elites archive of walkers of one bucket shape (static; pure methods).

    ``Archive(config, shape)`` describes it; :meth:`init` makes the empty state;
    :meth:`add`, :meth:`select` and :meth:`metrics` are jitted pure functions of the state.
    """

    config: ArchiveConfig
    shape: BucketShape

    @classmethod
    def create(cls, config: ArchiveConfig, shape: BucketShape) -> tuple[Archive, ArchiveState]:
        """The archive and its empty state."""
        archive = cls(config, shape)
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
        example = _empty_genotype(self.shape)
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

    def walkers(self, genotypes: Genotype) -> WalkerBatch:
        """The WalkerBatch of a batch of genotypes."""
        return WalkerBatch(
            **{name: genotypes[name] for name in WALKER_FIELDS}, max_degree=self.shape.degree
        )

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
