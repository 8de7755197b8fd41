"""The native CPU backend of jelm.sim (jelm/sim/native.cc as an XLA FFI call).

tests/test_physics.py runs every physics test on both backends (the oracle, closed
forms, determinism); this file checks what is particular to the native one: that it
builds here, agrees with the XLA step, runs inside jit / scan / vmap, and that a machine
without a compiler falls back to the XLA step with a warning instead of failing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.domains.sodarace.seeds import SEED_NAMES, seed_walker
from jelm.sim import native
from jelm.sim import terrain as terrains
from jelm.sim.physics import (
    ACCURATE_PARAMS,
    DEFAULT_PARAMS,
    SimState,
    SurfaceSpec,
    as_arrays,
    evaluate,
    init_state,
    simulate,
)
from jelm.sim.walker import BucketShape, pack

SEEDS = [seed_walker(name).to_dict() for name in SEED_NAMES]
SHAPE = BucketShape(32, 128, 8)
TERRAINS = ("flat", "hills", "bumpy", "tunnel", "left_wall", "right_wall")


def test_native_backend_builds_and_is_the_cpu_default():
    assert native.available(), native.unavailable_reason()
    assert native.unavailable_reason() is None
    assert native.resolve() == "native"
    assert native.resolve("auto") == "native"
    assert native.resolve("xla") == "xla"
    with pytest.raises(ValueError, match="unknown simulator backend"):
        native.resolve("gpu")
    with pytest.raises(ValueError, match="unknown simulator backend"):
        evaluate(pack(SEEDS[:1]), terrains.flat(), 2, backend="cuda")


@pytest.mark.parametrize("params", [DEFAULT_PARAMS, ACCURATE_PARAMS], ids=["default", "accurate"])
def test_steps_agree_with_the_xla_step_on_every_terrain(params):
    """From the same state, 1 and 10 steps of both backends agree to float32 rounding on
    every built-in terrain, one terrain per row (the sums run in another order)."""
    batch = pack([SEEDS[k % len(SEEDS)] for k in range(len(TERRAINS) * 2)], SHAPE)
    stacked = terrains.stack(
        [terrains.make_terrain(n) for n in TERRAINS], [k % len(TERRAINS) for k in range(12)]
    )
    p = as_arrays(params)
    state = init_state(batch, stacked, p)
    for steps, tol in ((1, 1e-5), (10, 1e-3)):
        a = simulate(batch, stacked, state, steps, p, backend="xla")
        b = simulate(batch, stacked, state, steps, p, backend="native")
        scale = float(np.abs(np.asarray(a.pos)).max())
        assert np.abs(np.asarray(a.pos) - np.asarray(b.pos)).max() <= tol * scale
        h = params.dt / params.substeps
        assert np.abs(np.asarray(a.vel) - np.asarray(b.vel)).max() <= tol * scale / h
        np.testing.assert_array_equal(np.asarray(a.step), np.asarray(b.step))


def test_seed_fitness_agrees_with_the_xla_step():
    """600 steps on flat ground: every seed's fitness within 0.2 units of the XLA step's
    (measured: 0.06 at most; chaotic walkers drift apart by rounding, not physics)."""
    batch = pack(SEEDS, SHAPE)
    a = evaluate(batch, terrains.flat(), 600, backend="xla")
    b = evaluate(batch, terrains.flat(), 600, backend="native")
    assert np.all(np.asarray(b.valid))
    np.testing.assert_allclose(np.asarray(b.fitness), np.asarray(a.fitness), atol=0.2)
    np.testing.assert_array_equal(np.asarray(a.descriptors), np.asarray(b.descriptors))


def test_runs_inside_jit_scan_and_vmap():
    """The FFI call composes: a scan of single steps equals one call of many steps, and
    vmap over a stack of states equals separate calls."""
    batch = pack(SEEDS[:3], SHAPE)
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


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


PROBE = """
    import json, warnings
    import jelm.sim
    from jelm.sim import native, evaluate, terrain
    from jelm.sim.walker import pack
    from jelm.domains.sodarace.seeds import seed_walker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = native.resolve()
        fitness = float(evaluate(pack([seed_walker("square").to_dict()]), terrain.flat(), 30).fitness[0])
    print(json.dumps({"backend": backend, "available": native.available(),
                      "reason": native.unavailable_reason(), "fitness": fitness,
                      "warnings": [str(w.message) for w in caught]}))
"""  # noqa: E501


def test_without_a_compiler_it_falls_back_to_xla_with_a_warning(tmp_path):
    """A fresh cache and a compiler that does not exist: the simulator still runs, on the
    XLA step, and says why once."""
    done = _run_python(PROBE, {"JELM_CACHE_DIR": str(tmp_path), "CXX": "no-such-compiler++"})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "xla" and not out["available"]
    assert "no C++ compiler" in out["reason"]
    assert np.isfinite(out["fitness"])
    assert any("native CPU backend is unavailable" in w for w in out["warnings"])


@pytest.mark.slow
def test_a_failing_build_falls_back_and_an_explicit_request_fails_clearly(tmp_path):
    """A compiler that fails (here: `false`) leaves no library behind; "auto" falls back,
    while asking for "native" raises NativeUnavailable naming the build failure."""
    env = {"JELM_CACHE_DIR": str(tmp_path), "CXX": "false"}
    done = _run_python(PROBE, env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "xla" and "failed" in out["reason"]
    assert not list(tmp_path.rglob("*.so"))
    code = "import jelm.sim\nfrom jelm.sim import native\nnative.resolve('native')"
    done = _run_python(code, env)
    assert done.returncode != 0
    assert "NativeUnavailable" in done.stderr and "native backend unavailable" in done.stderr


def test_env_selects_the_xla_backend(tmp_path):
    done = _run_python(PROBE, {"JELM_SIM_BACKEND": "xla"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["backend"] == "xla"


@pytest.mark.slow
def test_the_library_is_cached_and_a_damaged_one_is_rebuilt(tmp_path):
    """A second process reuses the built library instead of compiling again; a library
    damaged in the cache is rebuilt (with a warning) instead of disabling the backend."""
    env = {"JELM_CACHE_DIR": str(tmp_path)}
    first = _run_python(PROBE, env)
    assert first.returncode == 0, first.stderr
    libs = list(tmp_path.rglob("sodarace-*.so"))
    assert len(libs) == 1
    stamp = libs[0].stat().st_mtime_ns
    second = _run_python(PROBE, env)
    assert second.returncode == 0, second.stderr
    assert [p.stat().st_mtime_ns for p in tmp_path.rglob("sodarace-*.so")] == [stamp]
    a = json.loads(first.stdout.strip().splitlines()[-1])
    b = json.loads(second.stdout.strip().splitlines()[-1])
    assert a["backend"] == b["backend"] == "native" and a["fitness"] == b["fitness"]

    libs[0].write_bytes(b"not a shared object")
    third = _run_python(PROBE, env)
    assert third.returncode == 0, third.stderr
    c = json.loads(third.stdout.strip().splitlines()[-1])
    assert c["backend"] == "native" and c["fitness"] == a["fitness"]
    assert any("rebuilding the damaged native library" in w for w in c["warnings"])
    assert libs[0].read_bytes()[:4] == b"\x7fELF"


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
    by_name = dict(zip(SEED_NAMES, SEEDS, strict=True))
    walkers = [_variant(by_name["cppn_fixed"], rng) for _ in range(11)]
    walkers += [_variant(by_name["square"], rng) for _ in range(3)]
    walkers += [by_name["runner"]]
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
    lib = native._load()
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


def test_links_to_missing_joints_are_skipped_not_read_out_of_bounds():
    """A hand-made batch whose links point past the joints (pack never makes one) runs
    without touching memory outside the row: those links are ignored."""
    batch = pack(SEEDS[:1], BucketShape(8, 16, 4))
    bad = dataclasses.replace(
        batch,
        link_i=batch.link_i.at[0, 0].set(10_000),
        link_j=batch.link_j.at[0, 1].set(-5),
    )
    result = evaluate(bad, terrains.flat(), 60, backend="native")
    assert np.all(np.isfinite(np.asarray(result.final.pos)))
