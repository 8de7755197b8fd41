"""The simulator against the float64 NumPy oracle (jelm.sim.oracle), on every backend.

From every state of a 20-step trajectory, one oracle step lands on the next state; the
oracle iterated on its own follows the trajectory; hand-made hard contacts; random
walkers (seeded draws and Hypothesis, derandomised; more of both in the slow pass).

Tolerance. The oracle runs in float64, the simulator in float32 (eps 6e-8). One step is
4 substeps x (muscles + 4 sweeps of a few dozen flops per joint); the rounding of
coordinates of magnitude S is ~6e-8 S per operation and does not grow much inside a
step (one step agrees to ~1e-6 S). Over 20 steps the difference grows to ~1e-5 S for the
seeds, and up to ~2e-4 S for random walkers of size ~200 pressed against the tunnel's
ceiling (contacts amplify rounding), so the chained comparison allows CHAINED_TOL. One
step is held to 1e-4 S for positions: 10-100x above rounding, while a real algorithmic
difference (the damping factor alone changes a velocity by h c = 0.9 % per substep,
gravity moves a node h^2 g = 1.7e-3 per substep) is 1e-3 S or more. Velocities are
(p - p_prev) / h, so their tolerance is 1e-4 S / h.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jelm.sim import terrain as terrains
from jelm.sim.base import DEFAULT_PARAMS, SimState, as_arrays
from jelm.sim.oracle import oracle_place, oracle_step, oracle_terrain, oracle_walker
from jelm.sim.physics import init_state
from jelm.sim.walker import BucketShape, pack
from tests.sim.helpers import BONE, SEEDS, braced_square, random_walker, trajectory
from tests.strategies import valid_walker_dicts

pytestmark = pytest.mark.usefixtures("every_backend")

REL_TOL = 1e-4
CHAINED_TOL = 5e-4
#: One layout for every comparison (one compile per backend): 28 rows, 20 steps.
ORACLE = BucketShape(32, 160, 10)
ORACLE_STEPS = 20
ORACLE_TERRAINS = ("flat", "hills", "tunnel", "left_wall")
ORACLE_ROWS = len(SEEDS) * len(ORACLE_TERRAINS)


def _batch(rows: list[tuple[dict, int]]):
    """Rows (walker, index into ORACLE_TERRAINS) padded to the shared layout, with a
    per-row terrain stack, and the oracle's terrains."""
    assert len(rows) <= ORACLE_ROWS
    batch = pack([w for w, _ in rows], ORACLE, batch_size=ORACLE_ROWS)
    index = [t for _, t in rows] + [0] * (ORACLE_ROWS - len(rows))
    stacked = terrains.stack([terrains.make_terrain(n) for n in ORACLE_TERRAINS], index)
    host = [oracle_terrain(terrains.make_terrain(n)) for n in ORACLE_TERRAINS]
    return batch, stacked, host


def every_terrain(walkers: list[dict]) -> list[tuple[dict, int]]:
    """Every walker on every oracle terrain."""
    return [(w, t) for w in walkers for t in range(len(ORACLE_TERRAINS))]


def one_terrain_each(walkers: list[dict]) -> list[tuple[dict, int]]:
    """Each walker on one oracle terrain, in turn."""
    return [(w, k % len(ORACLE_TERRAINS)) for k, w in enumerate(walkers)]


def _assert_close(name, got, want, scale, h=None, rel_tol=REL_TOL):
    tol = rel_tol * scale / (h or 1.0)
    err = np.abs(np.asarray(got, np.float64) - want).max()
    assert err <= tol, f"{name}: max |simulator - oracle| = {err:.3g} > {tol:.3g}"


def check_one_step(rows: list[tuple[dict, int]], params=DEFAULT_PARAMS):
    """From every state of a 20-step trajectory, one oracle step lands on the next state;
    placement matches too."""
    batch, stacked, host = _batch(rows)
    start = init_state(batch, stacked, as_arrays(params))
    pos, vel = trajectory(batch, stacked, start, ORACLE_STEPS, params)
    start_pos = np.asarray(start.pos)
    h = params.dt / params.substeps
    for r, (walker, t) in enumerate(rows):
        ow = oracle_walker(walker)
        n = ow.n_joints
        scale = max(1.0, float(np.abs(pos[r, :, :n]).max()))
        where = f"row {r} on {ORACLE_TERRAINS[t]}"
        _assert_close(
            f"{where} placement", start_pos[r, :n], oracle_place(ow, host[t], params), scale
        )
        p, v = start_pos[r, :n], np.zeros((n, 2))
        for k in range(ORACLE_STEPS):
            p_o, v_o = oracle_step(ow, p, v, k, host[t], params)
            _assert_close(f"{where} step {k} pos", pos[r, k, :n], p_o, scale)
            _assert_close(f"{where} step {k} vel", vel[r, k, :n], v_o, scale, h)
            p, v = pos[r, k, :n], vel[r, k, :n]


def check_chained(rows: list[tuple[dict, int]], params=DEFAULT_PARAMS):
    """The oracle iterated 20 steps from its own placement follows the trajectory."""
    batch, stacked, host = _batch(rows)
    start = init_state(batch, stacked, as_arrays(params))
    pos, vel = trajectory(batch, stacked, start, ORACLE_STEPS, params)
    h = params.dt / params.substeps
    for r, (walker, t) in enumerate(rows):
        ow = oracle_walker(walker)
        n = ow.n_joints
        scale = max(1.0, float(np.abs(pos[r, :, :n]).max()))
        p = oracle_place(ow, host[t], params)
        v = np.zeros_like(p)
        for k in range(ORACLE_STEPS):
            p, v = oracle_step(ow, p, v, k, host[t], params)
        where = f"row {r} on {ORACLE_TERRAINS[t]} after {ORACLE_STEPS} steps"
        _assert_close(f"{where} pos", pos[r, -1, :n], p, scale, rel_tol=CHAINED_TOL)
        _assert_close(f"{where} vel", vel[r, -1, :n], v, scale, h, rel_tol=CHAINED_TOL)


def test_every_step_of_every_seed_on_every_terrain():
    check_one_step(every_terrain(list(SEEDS.values())))


@pytest.mark.slow
def test_the_oracle_on_its_own_follows_every_seed():
    """20 steps of the oracle on its own vs the simulator (plain Jacobi sweeps are not
    expansive: float32 and float64 runs of the same algorithm agree to ~1e-5 relative)."""
    check_chained(every_terrain(list(SEEDS.values())))


def test_the_tolerance_tells_other_physics_apart():
    """The oracle with half the damping, a single sweep or the muscle stiffness 10% off
    disagrees with the simulator by 10x the tolerance."""
    walker = SEEDS["square"]
    batch, stacked, host = _batch([(walker, 0)])
    start = init_state(batch, stacked, as_arrays(DEFAULT_PARAMS))
    pos, _ = trajectory(batch, stacked, start, ORACLE_STEPS)
    ow = oracle_walker(walker)
    n = ow.n_joints
    for wrong in (
        dataclasses.replace(DEFAULT_PARAMS, damping=DEFAULT_PARAMS.damping * 0.5),
        dataclasses.replace(DEFAULT_PARAMS, iterations=1),
        dataclasses.replace(DEFAULT_PARAMS, muscle_stiffness=DEFAULT_PARAMS.muscle_stiffness * 0.9),
    ):
        p = np.asarray(start.pos)[0, :n]
        v = np.zeros((n, 2))
        for k in range(ORACLE_STEPS):
            p, v = oracle_step(ow, p, v, k, host[0], wrong)
        err = np.abs(pos[0, -1, :n] - p).max()
        assert err > 10 * REL_TOL * np.abs(pos[0, :, :n]).max(), wrong


def test_hard_contacts():
    """Hand-made states that exercise side entry into the tunnel mouth, a deep landing
    (final clamp), a wall hit and sliding on a slope: every step agrees with the oracle."""
    mouth = {"joints": [[-1.2, 10.0], [-0.2, 10.0]], "muscles": [[0, 1, dict(BONE)]]}
    square = braced_square(3.0)
    # (walker, terrain, shift, velocity)
    cases = [
        (mouth, "tunnel", None, (60.0, 0.0)),  # rams the steep mouth sideways
        (square, "flat", (0.0, 0.5), (3.0, -80.0)),  # lands hard
        (square, "left_wall", (0.2, 0.2), (-40.0, 0.0)),  # hits the wall
        (square, "hills", (20.0, 2.5), (8.0, -5.0)),  # slides on a slope
    ]
    batch, stacked, _ = _batch([(c[0], ORACLE_TERRAINS.index(c[1])) for c in cases])
    start = init_state(batch, stacked, as_arrays(DEFAULT_PARAMS))
    pos0 = np.array(start.pos)
    vel0 = np.zeros_like(pos0)
    pos0[0, :2] = mouth["joints"]  # placed by hand in front of the mouth
    for r, (w, _, shift, v) in enumerate(cases):
        n = len(w["joints"])
        if shift is not None:
            pos0[r, :n] += shift
        vel0[r, :n] = v
    state = SimState(pos=jnp.asarray(pos0), vel=jnp.asarray(vel0), step=start.step)
    pos, vel = trajectory(batch, stacked, state, ORACLE_STEPS)
    h = DEFAULT_PARAMS.dt / DEFAULT_PARAMS.substeps
    for r, (w, name, _, _) in enumerate(cases):
        ow = oracle_walker(w)
        n = ow.n_joints
        host = oracle_terrain(terrains.make_terrain(name))
        scale = max(1.0, float(np.abs(pos[r, :, :n]).max()))
        p, v = pos0[r, :n], vel0[r, :n]
        for k in range(ORACLE_STEPS):
            p_o, v_o = oracle_step(ow, p, v, k, host, DEFAULT_PARAMS)
            _assert_close(f"{name} step {k} pos", pos[r, k, :n], p_o, scale)
            _assert_close(f"{name} step {k} vel", vel[r, k, :n], v_o, scale, h)
            p, v = pos[r, k, :n], vel[r, k, :n]
    # The mouth walker was stopped by the steep face, not shoved through or under it.
    assert np.all(pos[0, :, :2, 0] < 0.0)
    assert np.all(pos[0, :, :2, 1] > 6.0)


# --- random walkers -----------------------------------------------------------------------


def _random_rows(seed: int) -> list[tuple[dict, int]]:
    """A full layout of random walkers (28, one terrain each) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return one_terrain_each([random_walker(rng) for _ in range(ORACLE_ROWS)])


def test_random_walkers():
    """28 random walkers (2-12 joints, bones and muscles of any amplitude), a terrain
    each: every step and the oracle on its own agree."""
    rows = _random_rows(0)
    check_one_step(rows)
    check_chained(rows)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 5))
def test_random_walkers_slow(seed):
    rows = _random_rows(seed)
    check_one_step(rows)
    check_chained(rows)


EDGE_WALKERS = st.lists(valid_walker_dicts(max_joints=12), min_size=1, max_size=8)


@settings(
    max_examples=5,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(EDGE_WALKERS)
def test_walkers_at_the_edges_of_validation(walkers):
    """Walkers Hypothesis builds at the edges of what validation accepts (coordinates at
    the bounds, joints at the minimum distance, full-degree joints, extreme amplitudes
    and phases), each on one oracle terrain: every step agrees (the slow pass also runs
    the oracle on its own, for more examples)."""
    check_one_step(one_terrain_each(walkers))


@pytest.mark.slow
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(EDGE_WALKERS)
def test_walkers_at_the_edges_of_validation_slow(walkers):
    rows = one_terrain_each(walkers)
    check_one_step(rows)
    check_chained(rows)
