"""jelm.domains.sodarace.direct: every child stays a valid walker; the jitted MAP-Elites loop."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

from jelm.domains.sodarace.api import Walker, WalkerLimits, WalkerValidationError
from jelm.domains.sodarace.direct import DirectParams, make_direct, mutate
from jelm.domains.sodarace.domain import SodaraceDomain
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_walker
from jelm.qd.archive import Archive, ArchiveConfig
from jelm.qd.device import evolve
from jelm.sim.walker import BucketShape, pack, unpack
from tests.strategies import valid_walker_dicts

SEEDS = {name: seed_walker(name).to_dict() for name in SEED_NAMES}
BIG = BucketShape(32, 128, 8)  # holds every seed
# Rates turned up so every edit (and every rejection path) happens often.
STRESS = DirectParams(
    joint_sigma=2.0, joint_rate=0.5, link_rate=0.8, p_flip=0.7, p_add=0.9, p_remove=0.5
)

mutate_jit = jax.jit(mutate)


def check_rows(batch, params: DirectParams = STRESS) -> None:
    """Every real row satisfies the validity rules, checked on the arrays and by
    ``Walker.from_dict`` on the unpacked dict."""
    jm = np.asarray(batch.joint_mask)
    lm = np.asarray(batch.link_mask)
    joints = np.asarray(batch.joints).astype(np.float64)
    li, lj = np.asarray(batch.link_i), np.asarray(batch.link_j)
    amp, mus = np.asarray(batch.amplitude), np.asarray(batch.muscle)
    cap = min(batch.max_degree, 10)
    for r in range(batch.batch_size):
        if not jm[r].any():
            assert not lm[r].any()
            continue
        n = int(jm[r].sum())
        assert jm[r, :n].all(), "joint rows stay a prefix"
        i, j = li[r][lm[r]], lj[r][lm[r]]
        assert len(i) >= 1
        assert np.all((i < n) & (j < n) & (i != j))
        assert len({(min(a, b), max(a, b)) for a, b in zip(i, j, strict=True)}) <= len(i)
        deg = np.bincount(np.concatenate([i, j]), minlength=n)
        assert deg.max() <= cap
        assert np.all(np.abs(amp[r]) <= 10.0)
        assert np.all(amp[r][~(lm[r] & mus[r])] == 0.0)
        p = joints[r, :n]
        assert np.all(np.abs(p) <= 100.0)
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)) + np.eye(n) * 1e9
        assert d.min() >= params.min_joint_distance
        try:
            Walker.from_dict(unpack(batch, r))
        except WalkerValidationError as exc:  # pragma: no cover - the assertion's message
            pytest.fail(f"row {r}: {exc}")


def test_mutated_seeds_stay_valid_over_many_generations():
    names = list(SEED_NAMES)
    batch = pack([SEEDS[names[k % len(names)]] for k in range(28)], shape=BIG, batch_size=32)
    key = jax.random.key(0)
    for _ in range(12):
        key, sub = jax.random.split(key)
        batch = mutate_jit(sub, batch, STRESS)
        check_rows(batch)
    # padding rows stayed padding
    assert not np.asarray(batch.joint_mask)[28:].any()


@pytest.mark.slow
def test_degree_and_link_limits_hold_under_pressure():
    # square in its own small bucket (4 slots per joint): adding every time saturates it
    shape = BucketShape(8, 16, 4)
    only_add = dataclasses.replace(STRESS, p_add=1.0, p_remove=0.0)
    batch = pack([SEEDS["square"]] * 32, shape=shape)
    key = jax.random.key(1)
    for _ in range(6):
        key, sub = jax.random.split(key)
        batch = mutate_jit(sub, batch, only_add)
        check_rows(batch, only_add)
    deg_full = np.asarray(batch.link_mask).sum(1)
    assert deg_full.max() == 10  # 5 joints: a complete graph (10 links) fits degree 4
    # removing every time never removes the last link
    only_remove = dataclasses.replace(STRESS, p_add=0.0, p_remove=1.0)
    for _ in range(10):
        key, sub = jax.random.split(key)
        batch = mutate_jit(sub, batch, only_remove)
        check_rows(batch, only_remove)
    np.testing.assert_array_equal(np.asarray(batch.link_mask).sum(1), 1)
    # a chain of 8 joints in a bucket of 2 slots per joint: only its two ends can link
    bone = {"type": "distance", "amplitude": 0.0, "phase": 0.0}
    chain = {
        "joints": [[2.0 * k, float(k % 2)] for k in range(8)],
        "muscles": [[k, k + 1, bone] for k in range(7)],
    }
    batch = pack([chain] * 32, shape=BucketShape(8, 16, 2))
    for _ in range(3):
        key, sub = jax.random.split(key)
        batch = mutate_jit(sub, batch, only_add)
        check_rows(batch, only_add)
    np.testing.assert_array_equal(np.asarray(batch.link_mask).sum(1), 8)  # closed into a ring


def test_jitter_that_breaks_spacing_or_the_box_is_rejected():
    # joints on the box edge and 0.1 apart: a huge jitter almost always breaks a rule
    walker = {
        "joints": [[99.5, 0.0], [99.7, 0.0], [99.7, 0.2], [-99.9, -99.9]],
        "muscles": [[0, 1, {"type": "muscle", "amplitude": 10.0, "phase": 0.5}], [1, 2, {}]],
    }
    walker["muscles"][1][2] = {"type": "distance", "amplitude": 0.0, "phase": 0.0}
    batch = pack([walker] * 32, shape=BucketShape(8, 16, 4))
    wild = dataclasses.replace(STRESS, joint_sigma=50.0, joint_rate=1.0)
    child = mutate_jit(jax.random.key(2), batch, wild)
    check_rows(child, wild)
    same = np.all(np.asarray(child.joints) == np.asarray(batch.joints), axis=(1, 2))
    assert same.mean() > 0.9  # rejected: the parent's joints were kept
    tight = dataclasses.replace(STRESS, joint_sigma=0.3, joint_rate=1.0)
    child = mutate_jit(jax.random.key(3), batch, tight)
    check_rows(child, tight)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(valid_walker_dicts(limits=WalkerLimits(max_links=40), max_joints=12))
def test_mutation_keeps_any_valid_walker_valid(d):
    batch = pack([d] * 4, shape=BucketShape(12, 40, 10))
    try:  # the float32 packing of an edge case (joints exactly 0.1 apart) may round below
        Walker.from_dict(unpack(batch, 0))
    except WalkerValidationError:
        assume(False)
    key = jax.random.key(len(d["joints"]) * 1000 + len(d["muscles"]))
    for _ in range(3):
        key, sub = jax.random.split(key)
        batch = mutate_jit(sub, batch, STRESS)
        check_rows(batch)


def test_mutation_changes_rows_and_is_deterministic():
    batch = pack([SEEDS[n] for n in SEED_NAMES] * 4, shape=BIG, batch_size=32)
    params = DirectParams()
    a = mutate_jit(jax.random.key(7), batch, params)
    b = mutate_jit(jax.random.key(7), batch, params)
    c = mutate_jit(jax.random.key(8), batch, params)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)

    def changed(u, v):
        diff = np.zeros(u.batch_size, bool)
        for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(v), strict=True):
            diff |= np.any(np.asarray(x != y).reshape(u.batch_size, -1), axis=1)
        return diff

    real = np.asarray(batch.walker_mask)
    assert changed(a, batch)[real].mean() >= 0.9
    assert changed(a, c)[real].mean() >= 0.9
    check_rows(a, params)


@pytest.mark.slow
def test_mutate_vmaps_over_keys():
    batch = pack([SEEDS["square"], SEEDS["radial"]], shape=BucketShape(16, 64, 8))
    keys = jax.random.split(jax.random.key(9), 3)
    out = jax.jit(jax.vmap(mutate, in_axes=(0, None)))(keys, batch)
    assert out.joints.shape == (3, 2, 16, 2)
    first = mutate_jit(keys[0], batch, DirectParams())
    np.testing.assert_array_equal(out.joints[0], first.joints)
    np.testing.assert_array_equal(out.link_mask[0], first.link_mask)


def _device_run(generations: int):
    domain = SodaraceDomain(steps=30, bucket=(16, 64, 8))
    cfg = ArchiveConfig(grid=(5, 5, 5), lower=(0, 0, 0), upper=(30, 30, 200))
    archive = Archive.of(cfg, domain.genotype_template())
    seeds = domain.pack([SEEDS["square"], SEEDS["radial"]], 2)
    operator = make_direct(domain, DirectParams())
    state, hist = evolve(domain, operator, archive, seeds, jax.random.key(0), generations, 32)
    return domain, archive, state, {k: np.asarray(v) for k, v in hist.items()}


@pytest.mark.slow
def test_the_device_loop_improves_the_archive_from_the_seeds():
    """``direct`` through jelm.qd.device.evolve: scores only grow, coverage rises, the
    children are valid walkers with unique ledger-style ids, and a key replays exactly."""
    domain, archive, state, hist = _device_run(6)
    assert all(len(v) == 7 for v in hist.values())
    assert np.all(np.diff(hist["qd_score"]) >= 0)
    assert np.all(np.diff(hist["max_fitness"]) >= 0)
    assert np.all(np.diff(hist["coverage"]) >= 0)
    assert hist["coverage"][-1] > hist["coverage"][0]
    assert hist["valid_rate"][1:].min() > 0.9
    assert np.all((hist["acceptance_rate"] >= 0) & (hist["acceptance_rate"] <= 1))
    m = archive.metrics(state)
    assert float(m["qd_score"]) == pytest.approx(hist["qd_score"][-1])
    f = np.asarray(state.repertoire.fitnesses[:, 0])
    ids = np.asarray(state.repertoire.genotypes["id"])[np.isfinite(f)]
    assert len(set(ids.tolist())) == len(ids) and ids.min() >= 1 and ids.max() <= 2 + 6 * 32
    walkers = domain.walkers(state.repertoire.genotypes["genotype"])
    for row in np.flatnonzero(np.isfinite(f)):
        Walker.from_dict(unpack(walkers, int(row)))
    _, _, _, again = _device_run(6)
    np.testing.assert_array_equal(again["qd_score"], hist["qd_score"])


def test_the_device_loop_rejects_bad_arguments():
    domain = SodaraceDomain(steps=10, bucket=(16, 64, 8))
    archive = Archive.of(ArchiveConfig(), domain.genotype_template())
    operator = make_direct(domain, DirectParams())
    seeds = domain.pack([SEEDS["square"]], 1)
    with pytest.raises(ValueError, match="batch >= 1"):
        evolve(domain, operator, archive, seeds, jax.random.key(0), 1, 0)
    with pytest.raises(ValueError, match="at least one seed"):
        evolve(domain, operator, archive, domain.pack([], 0), jax.random.key(0), 1, 4)
