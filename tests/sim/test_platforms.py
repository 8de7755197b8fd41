"""Per-platform choices (jelm.sim.platforms): what changes on a GPU or TPU.

There is no accelerator here, so each choice is checked by naming the platform: the
settings, the XLA step's chunking, the backend ``auto`` takes and the refusal of
``native``. The ``XLA_FLAGS`` pin is checked in fresh processes, before JAX starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jelm.sim import backends, platforms, xla
from jelm.sim import terrain as terrains
from jelm.sim.base import DEFAULT_PARAMS, SurfaceSpec, as_arrays
from jelm.sim.native import NativeUnavailable
from jelm.sim.physics import init_state
from jelm.sim.walker import BucketShape, pack
from tests.sim.helpers import SEEDS

ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")
#: Steps of the chunking test: not the number of chunks, so the two loops are told apart.
STEPS = 5


def test_the_cpu_keeps_its_settings_and_accelerators_drop_them():
    cpu = platforms.choices("cpu")
    assert cpu == platforms.PlatformChoices("cpu", True, 131_072, True)
    assert platforms.choices("CPU") == cpu
    for name in ACCELERATORS:
        got = platforms.choices(name)
        assert not got.pin_cpu_isa and got.chunk_slots is None and not got.native, name
    assert platforms.choices("cuda").platform == "gpu"
    assert platforms.choices("tpu").platform == "tpu"
    other = platforms.choices("metal")
    assert other.platform == "metal" and other.chunk_slots is None and not other.native
    assert platforms.native_platforms() == ("cpu",)
    assert platforms.choices() == cpu, "this machine runs JAX on its CPU"


def test_chunks_are_cache_sized_on_the_cpu_and_the_whole_batch_elsewhere():
    assert xla.chunk_rows(32, 8, "cpu") == 131_072 // (32 * 8) == 512
    assert xla.chunk_rows(64, 10, "cpu") == 204
    assert xla.chunk_rows(8, 4, "cpu") == 4096
    assert xla.chunk_rows(64, 256, "cpu") == 64, "at least 64 rows"
    assert xla.chunk_rows(32, 8) == 512, "JAX's default backend here is the CPU"
    for name in ACCELERATORS:
        assert xla.chunk_rows(32, 8, name) is None, name


def _top_level_loop_lengths(platform: str, batch, terrain, state, params, spec) -> list[int]:
    """The lengths of the scans at the top of the traced XLA step: the chunks (``lax.map``)
    when the batch is split, else the steps."""
    jaxpr = jax.make_jaxpr(
        lambda b, t, s, p: xla.simulate(b, t, s, STEPS, p, spec, platform=platform)
    )(batch, terrain, state, params)
    return [e.params["length"] for e in jaxpr.eqns if e.primitive.name == "scan"]


@pytest.mark.slow  # the largest bucket, ~10 s
def test_the_xla_step_splits_a_batch_on_the_cpu_only_and_the_results_agree():
    """408 rows of the largest bucket are two CPU chunks of 204 and one piece on a GPU or
    TPU; both give every walker the same bits (walkers never interact)."""
    shape = BucketShape(64, 256, 10)
    rows = 2 * xla.chunk_rows(shape.joints, shape.degree, "cpu")
    names = list(SEEDS)
    batch = pack([SEEDS[names[k % len(names)]] for k in range(rows)], shape)
    terrain = terrains.flat()
    p = as_arrays(DEFAULT_PARAMS)
    start = init_state(batch, terrain, p)
    spec = SurfaceSpec.of(terrain)
    assert _top_level_loop_lengths("cpu", batch, terrain, start, p, spec) == [2]
    for name in ("gpu", "tpu"):
        assert _top_level_loop_lengths(name, batch, terrain, start, p, spec) == [STEPS], name
    run = jax.jit(xla.simulate, static_argnames=("steps", "surfaces", "platform"))
    split = run(batch, terrain, start, steps=STEPS, params=p, surfaces=spec, platform="cpu")
    whole = run(batch, terrain, start, steps=STEPS, params=p, surfaces=spec, platform="gpu")
    np.testing.assert_array_equal(np.asarray(split.pos), np.asarray(whole.pos))
    np.testing.assert_array_equal(np.asarray(split.vel), np.asarray(whole.vel))


def test_auto_takes_the_xla_step_on_an_accelerator_and_native_on_the_cpu(monkeypatch):
    monkeypatch.delenv(backends.ENV, raising=False)
    for name in ACCELERATORS:
        assert backends.resolve(platform=name).name == "xla", name
        assert backends.resolve("auto", platform=name).name == "xla", name
        assert backends.resolve("xla", platform=name).name == "xla", name
    assert backends.resolve("auto", platform="cpu").name == "native"


@pytest.mark.parametrize("name", ACCELERATORS)
def test_native_is_refused_on_an_accelerator_saying_why(name):
    with pytest.raises(NativeUnavailable) as exc:
        backends.resolve("native", platform=name)
    message = str(exc.value)
    assert message.startswith("native backend unavailable: the native backend runs on cpu only")
    assert f"JAX runs on {name}" in message and "'auto'" in message


def test_the_platform_is_guessed_before_jax_starts():
    """JAX_PLATFORMS (or the jax_platforms option) decides when set; else an installed
    GPU plugin, then libtpu; else the CPU."""
    assert platforms.guess("cuda,cpu", [], False) == "gpu"
    assert platforms.guess("tpu", [], False) == "tpu"
    assert platforms.guess("cpu", ["jax_cuda12_plugin"], True) == "cpu"
    assert platforms.guess(None, ["jax_cuda12_plugin"], False) == "gpu"
    assert platforms.guess("", ["jax_rocm7_plugin"], True) == "gpu"
    assert platforms.guess(None, [], True) == "tpu"
    assert platforms.guess(None, [], False) == "cpu"
    assert platforms.expected() == "cpu", "no accelerator plugin in this environment"


PIN_PROBE = """
import json, os, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    if os.environ.get("PROBE_START_FIRST"):
        import jax
        jax.devices()
    import jelm.sim
    from jax._src import xla_bridge
    started = xla_bridge.backends_are_initialized()
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("PROBE_RESOLVE"):
        from jelm.sim import backends
        backends.resolve("xla")
print(json.dumps({"flags": flags, "started": started,
                  "warnings": [str(w.message) for w in caught]}))
"""


def _pin_probe(env: dict[str, str], path: str | None = None) -> dict:
    """PIN_PROBE in a fresh process: XLA_FLAGS after ``import jelm.sim``, whether JAX had
    started, and the warnings. ``path`` goes first on PYTHONPATH."""
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    base.pop(platforms.ALLOW_FMA_ENV, None)
    if path is not None:
        base["PYTHONPATH"] = os.pathsep.join([path, base.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PIN_PROBE)],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    os.uname().machine.lower() not in ("x86_64", "amd64"), reason="the pin is for x86-64"
)
def test_the_fma_pin_is_set_for_the_cpu_only():
    cpu = _pin_probe({"JAX_PLATFORMS": "cpu"})
    assert cpu["flags"] == platforms.CPU_ISA_FLAG and not cpu["started"]
    for name in ("cuda", "tpu"):
        accel = _pin_probe({"JAX_PLATFORMS": name})
        assert accel["flags"] == "" and not accel["started"], name
    assert _pin_probe({"JAX_PLATFORMS": "cpu", platforms.ALLOW_FMA_ENV: "1"})["flags"] == ""
    late = _pin_probe({"JAX_PLATFORMS": "cpu", "PROBE_START_FIRST": "1"})
    assert late["flags"] == "" and late["started"]
    assert any("imported after JAX started its CPU backend" in w for w in late["warnings"])


@pytest.mark.skipif(
    os.uname().machine.lower() not in ("x86_64", "amd64"), reason="the pin is for x86-64"
)
def test_a_gpu_plugin_without_a_device_leaves_the_cpu_unpinned_and_says_so(tmp_path):
    """A GPU plugin that registers no device: jelm.sim expects a GPU and does not pin,
    JAX then runs on the CPU, and the first backend choice warns how to pin it."""
    plugin = tmp_path / "jax_plugins" / "xla_cuda_probe"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("def initialize():\n    pass\n")
    out = _pin_probe({"PROBE_RESOLVE": "1"}, path=str(tmp_path))
    assert out["flags"] == ""
    assert any(
        "expected JAX to run on gpu" in w and "JAX_PLATFORMS=cpu" in w for w in out["warnings"]
    ), out["warnings"]
