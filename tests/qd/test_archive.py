"""jelm.qd.archive: insertion rule, acceptance, niches, selection, metrics, deep grid, CVT."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from qdax.core.containers.mapelites_repertoire import MapElitesRepertoire, get_cells_indices
from qdax.utils.metrics import default_qd_metrics

from jelm.qd.archive import Archive, ArchiveConfig, stored

#: A toy genotype (the archive knows no domain): a float vector and an int per row.
TEMPLATE = {"x": np.zeros(3, np.float32), "n": np.zeros((), np.int32)}
# A 4 x 4 x 4 grid over [0, 4]^3: the cell of a descriptor is floor() of each coordinate.
SMALL = ArchiveConfig(grid=(4, 4, 4), lower=(0, 0, 0), upper=(4, 4, 4), fitness_offset=-10.0)


def genos(ids) -> dict:
    """Genotypes whose every array is tagged with the row's id (to recognise it later)."""
    ids = np.asarray(ids, np.int32)
    tag = ids.astype(np.float32)
    genotype = {"x": jnp.asarray(np.broadcast_to(tag[:, None], (len(ids), 3))), "n": ids}
    return stored(ids, genotype)


def cell_desc(cells) -> np.ndarray:
    """Descriptors at the centre of the given (h, w, m) cells of SMALL."""
    return np.asarray(cells, np.float32) + 0.5


def flat(cells) -> np.ndarray:
    return np.ravel_multi_index(np.asarray(cells).T, SMALL.grid)


def add(archive, state, ids, cells, fitness, valid=None):
    valid = np.ones(len(ids), bool) if valid is None else np.asarray(valid)
    return archive.add(state, genos(ids), cell_desc(cells), np.asarray(fitness, np.float32), valid)


def elites(state) -> tuple[np.ndarray, np.ndarray]:
    rep = state.repertoire
    return np.asarray(rep.fitnesses[:, 0]), np.asarray(rep.genotypes["id"])


def test_insertion_keeps_the_better_fitness_per_cell():
    archive = Archive.of(SMALL, TEMPLATE)
    state = archive.init()
    a, b = (0, 0, 0), (3, 2, 1)
    state, acc, niche = add(archive, state, [1, 2, 3], [a, a, b], [1.0, 3.0, 2.0])
    np.testing.assert_array_equal(acc, [False, True, True])
    np.testing.assert_array_equal(niche, flat([a, a, b]))
    f, ids = elites(state)
    assert f[flat([a])[0]] == 3.0 and ids[flat([a])[0]] == 2
    assert f[flat([b])[0]] == 2.0 and ids[flat([b])[0]] == 3
    # a worse candidate is rejected, a better one replaces the elite (whole genotype)
    state, acc, _ = add(archive, state, [4, 5], [a, b], [2.5, 7.0])
    np.testing.assert_array_equal(acc, [False, True])
    f, ids = elites(state)
    assert f[flat([a])[0]] == 3.0 and ids[flat([a])[0]] == 2
    assert f[flat([b])[0]] == 7.0 and ids[flat([b])[0]] == 5
    kept = jax.tree.map(lambda x: np.asarray(x[flat([b])[0]]), state.repertoire.genotypes)
    assert np.all(kept["genotype"]["x"] == 5.0) and kept["genotype"]["n"] == 5
    np.testing.assert_allclose(state.repertoire.descriptors[flat([b])[0]], cell_desc([b])[0])
    # equal fitness does not replace (strictly better only)
    state, acc, _ = add(archive, state, [6], [b], [7.0])
    assert not acc[0] and elites(state)[1][flat([b])[0]] == 5
    assert int(np.sum(np.isfinite(elites(state)[0]))) == 2


def test_invalid_rows_and_non_finite_values_are_never_inserted():
    archive = Archive.of(SMALL, TEMPLATE)
    state = archive.init()
    cells = [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)]
    fitness = [100.0, -np.inf, np.nan, 1.0]
    valid = [False, True, True, True]
    state, acc, niche = add(archive, state, [1, 2, 3, 4], cells, fitness, valid)
    np.testing.assert_array_equal(acc, [False, False, False, True])
    np.testing.assert_array_equal(niche, [-1, -1, -1, flat(cells[3:])[0]])
    f, ids = elites(state)
    assert np.sum(np.isfinite(f)) == 1 and ids[flat(cells[3:])[0]] == 4
    # an invalid row never displaces an elite, however good its fitness
    state, acc, _ = add(archive, state, [5], cells[3:], [1e9], [False])
    assert not acc[0] and elites(state)[0][flat(cells[3:])[0]] == 1.0
    # non-finite descriptors: niche -1, not inserted
    desc = np.asarray([[np.nan, 1.0, 1.0], [1.5, np.inf, 0.5]], np.float32)
    state2, acc, niche = archive.add(state, genos([7, 8]), desc, np.ones(2), np.ones(2, bool))
    np.testing.assert_array_equal(acc, [False, False])
    np.testing.assert_array_equal(niche, [-1, -1])
    np.testing.assert_array_equal(elites(state2)[0], elites(state)[0])


def test_acceptance_mask_matches_a_reference_over_random_batches():
    archive = Archive.of(SMALL, TEMPLATE)
    state = archive.init()
    rng = np.random.default_rng(0)
    best = np.full(archive.n_cells, -np.inf)
    best_id = np.zeros(archive.n_cells, int)
    next_id = 0
    for _ in range(12):
        b = 40
        cells = rng.integers(0, 4, size=(b, 3))
        # few distinct values so ties inside a batch and with the elite happen
        fitness = rng.integers(-3, 6, size=b).astype(np.float32)
        valid = rng.random(b) > 0.15
        ids = np.arange(next_id, next_id + b)
        next_id += b
        state, acc, niche = add(archive, state, ids, cells, fitness, valid)
        want = np.zeros(b, bool)
        idx = flat(cells)
        for c in np.unique(idx[valid]):
            rows = np.flatnonzero(valid & (idx == c))
            top = rows[np.argmax(fitness[rows])]  # argmax: the lowest row among ties
            if fitness[top] > best[c]:
                want[top] = True
                best[c], best_id[c] = fitness[top], ids[top]
        np.testing.assert_array_equal(np.asarray(acc), want)
        np.testing.assert_array_equal(np.asarray(niche), np.where(valid, idx, -1))
        f, got_ids = elites(state)
        np.testing.assert_array_equal(f, best.astype(np.float32))
        filled = np.isfinite(best)
        np.testing.assert_array_equal(got_ids[filled], best_id[filled])


def test_niche_index_matches_a_hand_computation():
    archive = Archive.of(ArchiveConfig(), TEMPLATE)  # 12 x 12 x 12 over [0,30] x [0,30] x [0,400]
    desc = np.asarray(
        [
            [10.0, 10.0, 39.142136],  # the square seed: cells (4, 4, 1)
            [0.0, 0.0, 0.0],  # the lower corner
            [29.99, 29.99, 399.9],  # the upper corner
            [-5.0, 31.0, 1000.0],  # out of bounds: clipped into the edge cells
            [7.6, 18.6, 118.8],  # cells (3, 7, 3)
        ],
        np.float32,
    )
    by_hand = [
        4 * 144 + 4 * 12 + 1,
        0,
        11 * 144 + 11 * 12 + 11,
        0 * 144 + 11 * 12 + 11,
        3 * 144 + 7 * 12 + 3,
    ]
    np.testing.assert_array_equal(archive.niche_of(desc), by_hand)
    # the niche's centroid is the centre of the descriptor's cell ...
    c = archive.centroids[by_hand[0]]
    np.testing.assert_allclose(c, [(4 + 0.5) * 2.5, (4 + 0.5) * 2.5, (1 + 0.5) * 400 / 12])
    # ... so QDax's nearest-centroid rule agrees away from cell boundaries
    rng = np.random.default_rng(1)
    inside = rng.uniform([0, 0, 0], [30, 30, 400], size=(500, 3)).astype(np.float32)
    qdax_idx = get_cells_indices(jnp.asarray(inside), jnp.asarray(archive.centroids))
    np.testing.assert_array_equal(archive.niche_of(inside), qdax_idx)


def test_plain_grid_equals_qdax_map_elites_add():
    archive = Archive.of(SMALL, TEMPLATE)
    state = archive.init()
    rep = MapElitesRepertoire.init_default(
        genotype=jax.tree.map(lambda x: x[0], genos([0])),
        centroids=jnp.asarray(archive.centroids),
    )
    rng = np.random.default_rng(2)
    for step in range(6):
        b = 32
        desc = rng.uniform(0.05, 3.95, size=(b, 3)).astype(np.float32)
        fitness = rng.normal(size=b).astype(np.float32)  # distinct: no ties
        g = genos(np.arange(b) + 100 * step)
        state, _, _ = archive.add(state, g, desc, fitness, np.ones(b, bool))
        rep = rep.add(g, jnp.asarray(desc), jnp.asarray(fitness))
    np.testing.assert_array_equal(state.repertoire.fitnesses, rep.fitnesses)
    np.testing.assert_array_equal(state.repertoire.descriptors, rep.descriptors)
    for ours, theirs in zip(
        jax.tree.leaves(state.repertoire.genotypes), jax.tree.leaves(rep.genotypes), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)


def test_select_returns_filled_cells_uniformly():
    archive = Archive.of(SMALL, TEMPLATE)
    state = archive.init()
    cells = [(0, 0, 0), (1, 2, 3), (3, 3, 3), (2, 0, 1), (0, 3, 2)]
    state, _, _ = add(archive, state, [10, 11, 12, 13, 14], cells, [5.0, -1.0, 0.0, 2.0, 9.0])
    n = 5000
    picked = archive.select(state, jax.random.key(0), n)
    ids = np.asarray(picked["id"])
    assert set(ids) == {10, 11, 12, 13, 14}
    # whole genotypes come along (joints are tagged with the id)
    np.testing.assert_array_equal(np.asarray(picked["genotype"]["x"])[:, 0], ids.astype(np.float32))
    counts = np.bincount(ids - 10, minlength=5)
    expected = n / 5
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 30.0, counts  # 4 degrees of freedom: P(chi2 > 30) ~ 5e-6
    # the same key selects the same parents
    again = archive.select(state, jax.random.key(0), n)
    np.testing.assert_array_equal(again["id"], ids)


def test_metrics_by_hand():
    archive = Archive.of(SMALL, TEMPLATE)
    state = archive.init()
    m = archive.metrics(state)
    assert float(m["qd_score"]) == 0.0 and float(m["coverage"]) == 0.0
    assert int(m["filled"]) == 0 and float(m["max_fitness"]) == -np.inf
    assert math.isnan(float(m["mean_fitness"]))
    cells = [(0, 0, 0), (1, 1, 1), (2, 2, 2)]
    state, _, _ = add(archive, state, [1, 2, 3], cells, [1.0, 2.0, -3.0])
    m = archive.metrics(state)
    # offset -10: (1 + 10) + (2 + 10) + (-3 + 10) = 30
    assert float(m["qd_score"]) == pytest.approx(30.0)
    assert float(m["coverage"]) == pytest.approx(3 / 64)
    assert float(m["coverage_percent"]) == pytest.approx(300 / 64)
    assert float(m["max_fitness"]) == 2.0
    assert float(m["mean_fitness"]) == pytest.approx(0.0)
    assert int(m["filled"]) == 3 and int(m["stored"]) == 3
    # QDax's own metrics on the same repertoire, with qd_offset = -fitness_offset
    q = default_qd_metrics(state.repertoire, qd_offset=10.0)
    assert float(q["qd_score"]) == pytest.approx(float(m["qd_score"]))
    assert float(q["coverage"]) == pytest.approx(float(m["coverage_percent"]))


def test_deep_grid_keeps_the_last_k_elites_per_cell():
    cfg = ArchiveConfig(grid=(4, 4, 4), lower=(0, 0, 0), upper=(4, 4, 4), deep=3)
    archive = Archive.of(cfg, TEMPLATE)
    state = archive.init()
    a, b = (1, 1, 1), (2, 2, 2)
    for i, f in enumerate([1.0, 2.0, 0.5, 3.0, 4.0]):  # 0.5 is no new elite: not kept
        state, acc, _ = add(archive, state, [i], [a], [f])
        assert bool(acc[0]) == (f != 0.5)
    state, _, _ = add(archive, state, [50], [b], [7.0])
    ca, cb = flat([a])[0], flat([b])[0]
    f, ids = elites(state)
    assert f[ca] == 4.0 and ids[ca] == 4  # the elite of a
    h = state.history
    kept = sorted(np.asarray(h.genotypes["id"][ca])[: int(h.count[ca])].tolist())
    assert kept == [1, 3]  # the two previous elites; the oldest (id 0, fitness 1) evicted
    assert sorted(np.asarray(h.fitnesses[ca]).tolist()) == [2.0, 3.0]
    assert int(h.count[cb]) == 0
    m = archive.metrics(state)
    assert int(m["filled"]) == 2 and int(m["stored"]) == 4
    assert float(m["qd_score"]) == pytest.approx((4.0 + 100.0) + (7.0 + 100.0))
    # selection: cells uniformly, then a cell's stored candidates uniformly
    n = 6000
    ids = np.asarray(archive.select(state, jax.random.key(3), n)["id"])
    assert set(ids) == {1, 3, 4, 50}
    counts = np.array([np.sum(ids == k) for k in (50, 4, 3, 1)])
    expected = n * np.array([1 / 2, 1 / 6, 1 / 6, 1 / 6])
    assert float(np.sum((counts - expected) ** 2 / expected)) < 30.0, counts


def test_deep_one_is_plain_map_elites():
    archive = Archive.of(SMALL, TEMPLATE)
    assert archive.init().history is None
    deep = Archive.of(
        ArchiveConfig(grid=(4, 4, 4), lower=(0, 0, 0), upper=(4, 4, 4), deep=2), TEMPLATE
    )
    s1, s2 = archive.init(), deep.init()
    rng = np.random.default_rng(4)
    for _ in range(4):
        cells = rng.integers(0, 4, size=(16, 3))
        fit = rng.normal(size=16)
        ids = rng.integers(0, 1000, size=16)
        s1, a1, _ = add(archive, s1, ids, cells, fit)
        s2, a2, _ = add(deep, s2, ids, cells, fit)
        np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(s1.repertoire.fitnesses, s2.repertoire.fitnesses)


def test_cvt_archive_with_few_centroids():
    cfg = ArchiveConfig(
        kind="cvt", n_centroids=8, cvt_samples=2000, lower=(0, 0, 0), upper=(30, 30, 400)
    )
    archive = Archive.of(cfg, TEMPLATE)
    state = archive.init()
    cent = archive.centroids
    assert cent.shape == (8, 3)
    assert np.all(cent >= [0, 0, 0]) and np.all(cent <= [30, 30, 400])
    np.testing.assert_allclose(state.repertoire.centroids, cent, rtol=1e-6)
    rng = np.random.default_rng(5)
    desc = rng.uniform([0, 0, 0], [30, 30, 400], size=(64, 3)).astype(np.float32)
    # nearest centroid in bounds-normalised units, by hand
    unit_d = desc / np.asarray([30, 30, 400], np.float32)
    unit_c = cent / np.asarray([30, 30, 400], np.float32)
    by_hand = np.argmin(((unit_d[:, None] - unit_c[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(archive.niche_of(desc), by_hand)
    fitness = rng.normal(size=64).astype(np.float32)
    state, acc, niche = archive.add(state, genos(np.arange(64)), desc, fitness, np.ones(64, bool))
    np.testing.assert_array_equal(niche, by_hand)
    f, ids = elites(state)
    for c in range(8):
        rows = np.flatnonzero(by_hand == c)
        if len(rows):
            assert f[c] == fitness[rows].max() and ids[c] == rows[np.argmax(fitness[rows])]
        else:
            assert f[c] == -np.inf
    assert int(np.sum(acc)) == len(np.unique(by_hand))
    # the same seed gives the same tessellation
    np.testing.assert_array_equal(Archive.of(cfg, TEMPLATE).centroids, cent)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lower": (0, 10, 0), "upper": (30, 5, 400)}, "inverted"),
        ({"grid": (12, 0, 12)}, "at least one cell"),
        ({"grid": (12, 12)}, "axes"),
        ({"deep": 0}, "deep"),
        ({"kind": "hex"}, "kind"),
        ({"kind": "cvt", "n_centroids": 0}, "CVT"),
    ],
)
def test_bad_configurations_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ArchiveConfig(**kwargs)


def test_state_is_a_pytree_that_round_trips_and_goes_through_jit():
    archive = Archive.of(
        ArchiveConfig(grid=(4, 4, 4), lower=(0,) * 3, upper=(4,) * 3, deep=2), TEMPLATE
    )
    state = archive.init()
    state, _, _ = add(archive, state, [1, 2], [(0, 0, 0), (0, 0, 0)], [1.0, 2.0])
    leaves, tree = jax.tree.flatten(state)
    again = jax.tree.unflatten(tree, [np.asarray(x) for x in leaves])
    same = jax.jit(lambda s: s)(again)
    for x, y in zip(jax.tree.leaves(same), leaves, strict=True):
        np.testing.assert_array_equal(x, y)
    m1, m2 = archive.metrics(state), archive.metrics(same)
    assert float(m1["qd_score"]) == float(m2["qd_score"])
