"""The native step as an XLA FFI call (jelm.sim.native.ffi): what is particular to it.

It agrees with the XLA step step by step, composes with jit / scan / vmap, runs rows of
one topology in lane groups bit-identical to each row alone, and skips links that point
past a row's joints exactly as if they were masked out.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.sim import native
from jelm.sim import terrain as terrains
from jelm.sim.base import ACCURATE_PARAMS, DEFAULT_PARAMS, SimState, SurfaceSpec, as_arrays
from jelm.sim.physics import evaluate, init_state, simulate
from jelm.sim.walker import BucketShape, pack
from tests.sim.helpers import SEEDS

SEED_LIST = list(SEEDS.values())
SHAPE = BucketShape(32, 128, 8)
TERRAINS = ("flat", "hills", "bumpy", "tunnel", "left_wall", "right_wall")


@pytest.mark.parametrize(
    ("params", "steps", "tol"),
    [
        (DEFAULT_PARAMS, 1, 1e-5),
        pytest.param(DEFAULT_PARAMS, 10, 1e-3, marks=pytest.mark.slow),
        pytest.param(ACCURATE_PARAMS, 1, 1e-5, marks=pytest.mark.slow),
        pytest.param(ACCURATE_PARAMS, 10, 1e-3, marks=pytest.mark.slow),
    ],
    ids=["default-1", "default-10", "accurate-1", "accurate-10"],
)
def test_steps_agree_with_the_xla_step_on_every_terrain(params, steps, tol):
    """From the same state, 1 and 10 steps of both backends agree to float32 rounding on
    every built-in terrain, one terrain per row (the sums run in another order)."""
    batch = pack([SEED_LIST[k % len(SEED_LIST)] for k in range(len(TERRAINS) * 2)], SHAPE)
    stacked = terrains.stack(
        [terrains.make_terrain(n) for n in TERRAINS], [k % len(TERRAINS) for k in range(12)]
    )
    p = as_arrays(params)
    state = init_state(batch, stacked, p)
    a = simulate(batch, stacked, state, steps, p, backend="xla")
    b = simulate(batch, stacked, state, steps, p, backend="native")
    scale = float(np.abs(np.asarray(a.pos)).max())
    assert np.abs(np.asarray(a.pos) - np.asarray(b.pos)).max() <= tol * scale
    h = params.dt / params.substeps
    assert np.abs(np.asarray(a.vel) - np.asarray(b.vel)).max() <= tol * scale / h
    np.testing.assert_array_equal(np.asarray(a.step), np.asarray(b.step))


@pytest.mark.slow
def test_seed_fitness_agrees_with_the_xla_step_over_the_default_horizon():
    """600 steps on flat ground: every seed's fitness within 0.2 units of the XLA step's
    (chaotic walkers drift apart by rounding, not physics; jelm/sim/README.md has the
    measured figure)."""
    batch = pack(SEED_LIST, SHAPE)
    a = evaluate(batch, terrains.flat(), 600, backend="xla")
    b = evaluate(batch, terrains.flat(), 600, backend="native")
    assert np.all(np.asarray(b.valid))
    np.testing.assert_allclose(np.asarray(b.fitness), np.asarray(a.fitness), atol=0.2)
    np.testing.assert_array_equal(np.asarray(a.descriptors), np.asarray(b.descriptors))


def test_runs_inside_jit_scan_and_vmap():
    """The FFI call composes: a scan of single steps equals one call of many steps, and
    vmap over a stack of states equals separate calls."""
    batch = pack(SEED_LIST[:3], SHAPE)
    terrain = terrains.flat()
    p = as_arrays(DEFAULT_PARAMS)
    start = init_state(batch, terrain, p)

    @jax.jit
    def scanned(state: SimState) -> SimState:
        def one(s, _):
            return simulate(batch, terrain, s, 1, p, backend="native"), None

        return jax.lax.scan(one, state, None, length=12)[0]

    whole = simulate(batch, terrain, start, 12, p, backend="native")
    stepped = scanned(start)
    np.testing.assert_array_equal(np.asarray(whole.pos), np.asarray(stepped.pos))
    np.testing.assert_array_equal(np.asarray(whole.vel), np.asarray(stepped.vel))

    shifted = SimState(pos=start.pos + 1.0, vel=start.vel, step=start.step)
    states = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), start, shifted)
    both = jax.vmap(lambda s: simulate(batch, terrain, s, 5, p, backend="native"))(states)
    for k, s in enumerate((start, shifted)):
        alone = simulate(batch, terrain, s, 5, p, backend="native")
        np.testing.assert_array_equal(np.asarray(both.pos[k]), np.asarray(alone.pos))


def _variant(walker: dict, rng: np.random.Generator) -> dict:
    """The same topology with other joint positions, amplitudes and phases."""
    joints = [
        [x + rng.uniform(-0.05, 0.05), y + rng.uniform(-0.05, 0.05)] for x, y in walker["joints"]
    ]
    muscles = []
    for i, j, spec in walker["muscles"]:
        spec = dict(spec)
        if spec["type"] == "muscle":
            spec["amplitude"] = float(
                np.clip(spec["amplitude"] + rng.uniform(-0.2, 0.2), 0.0, 10.0)
            )
            spec["phase"] = spec["phase"] + rng.uniform(-0.3, 0.3)
        muscles.append([i, j, spec])
    return {"joints": joints, "muscles": muscles}


@pytest.mark.parametrize("surface", ["flat", "walls"])
def test_lane_groups_give_each_walker_what_it_gets_alone(surface):
    """Rows of one topology run eight to a vector (the lane kernel, flat ground without a
    ceiling); every walker's state is bit-identical to simulating it alone (the row
    kernel), for a full group, a partial one, rows at different steps and per-row
    terrains. The library's counter shows the groups ran."""
    rng = np.random.default_rng(7)
    walkers = [_variant(SEEDS["cppn_fixed"], rng) for _ in range(11)]
    walkers += [_variant(SEEDS["square"], rng) for _ in range(3)]
    walkers += [SEEDS["runner"]]
    order = rng.permutation(len(walkers))
    walkers = [walkers[k] for k in order]
    batch = pack(walkers, SHAPE)
    if surface == "flat":
        terrain = terrains.flat()
        alone_terrain = [terrain] * len(walkers)
    else:
        choices = [terrains.flat(), terrains.left_wall(), terrains.right_wall()]
        index = [k % 3 for k in range(len(walkers))]
        terrain = terrains.stack(choices, index)
        alone_terrain = [choices[k] for k in index]
    p = as_arrays(DEFAULT_PARAMS)
    start = init_state(batch, terrain, p)
    start = SimState(
        pos=start.pos, vel=start.vel, step=jnp.arange(len(walkers), dtype=jnp.int32) % 4
    )
    lib = native.library()
    before = lib.jelm_lane_groups()
    spec = SurfaceSpec.of(terrain)
    assert spec == SurfaceSpec(flat_ground=True, ceiling=False)
    together = simulate(batch, terrain, start, 40, p, surfaces=spec, backend="native")
    jax.block_until_ready(together.pos)
    assert lib.jelm_lane_groups() - before == 3  # cppn_fixed: 8 + 3, square: 3
    for k, w in enumerate(walkers):
        one = pack([w], SHAPE)
        s0 = init_state(one, alone_terrain[k], p)
        s0 = SimState(pos=s0.pos, vel=s0.vel, step=start.step[k : k + 1])
        alone = simulate(one, alone_terrain[k], s0, 40, p, surfaces=spec, backend="native")
        np.testing.assert_array_equal(np.asarray(alone.pos[0]), np.asarray(together.pos[k]))
        np.testing.assert_array_equal(np.asarray(alone.vel[0]), np.asarray(together.vel[k]))


@pytest.mark.parametrize("name", ["square", "galloper"])
def test_links_to_missing_joints_count_as_masked_out(name):
    """A hand-made batch whose links point past the joints (pack never makes one) gives
    bit for bit what the same batch gives with those links masked out: they are skipped,
    never read out of bounds, and weigh nothing in the other bones' weights."""
    batch = pack([SEEDS[name]], BucketShape(32, 128, 8))
    bad = dataclasses.replace(
        batch,
        link_i=batch.link_i.at[0, 0].set(10_000),
        link_j=batch.link_j.at[0, 1].set(-5),
    )
    masked = dataclasses.replace(
        batch, link_mask=batch.link_mask.at[0, 0].set(False).at[0, 1].set(False)
    )
    got = evaluate(bad, terrains.flat(), 60, backend="native")
    want = evaluate(masked, terrains.flat(), 60, backend="native")
    assert bool(got.valid[0])
    np.testing.assert_array_equal(np.asarray(got.final.pos), np.asarray(want.final.pos))
    np.testing.assert_array_equal(np.asarray(got.final.vel), np.asarray(want.final.vel))
    np.testing.assert_array_equal(np.asarray(got.fitness), np.asarray(want.fitness))
    np.testing.assert_array_equal(np.asarray(got.descriptors), np.asarray(want.descriptors))
    full = evaluate(batch, terrains.flat(), 60, backend="native")
    assert not np.array_equal(np.asarray(full.final.pos), np.asarray(got.final.pos))
