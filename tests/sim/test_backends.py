"""The registry of simulator backends and the contract every backend keeps.

Every available backend, on every seed walker and every built-in terrain: the fitness is
the centre of mass's x displacement times the terrain's direction (worked out here from
the placed start and the final state), results do not depend on the rows around a
walker and repeat bit for bit, and the backends agree with each other (descriptors
bit-identical, fitness to float32 rounding). A backend that cannot run says why.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from jelm.sim import backends, native, xla
from jelm.sim import terrain as terrains
from jelm.sim.backends import Backend, UnknownBackend
from jelm.sim.base import BackendUnavailable
from jelm.sim.physics import evaluate, init_state
from jelm.sim.walker import BucketShape, pack
from tests.sim.helpers import SEED_NAMES, SEEDS, run_probe

AVAILABLE = [name for name in backends.names() if backends.get(name).available()]
TERRAIN_NAMES = tuple(sorted(terrains.TERRAINS))
#: The direction of progress of each terrain, written out: leftwards on ``right_wall``.
DIRECTION = {name: -1.0 if name == "right_wall" else 1.0 for name in TERRAIN_NAMES}
SHAPE = BucketShape(32, 128, 8)
STEPS = 120
#: |fitness difference| allowed between two backends after STEPS steps (measured: 8e-4;
#: the sums run in another order, so chaotic walkers drift apart by rounding).
AGREEMENT = 0.01


def _rows(order: tuple[int, ...] | None = None):
    """Every seed on every terrain, one row each, in ``order`` (default: terrain-major)."""
    rows = [(w, t) for t in range(len(TERRAIN_NAMES)) for w in range(len(SEED_NAMES))]
    if order is not None:
        rows = [rows[k] for k in order]
    batch = pack([SEEDS[SEED_NAMES[w]] for w, _ in rows], SHAPE)
    built = [terrains.make_terrain(name) for name in TERRAIN_NAMES]
    return rows, batch, terrains.stack(built, [t for _, t in rows])


@functools.cache
def _run(backend: str, reverse: bool = False):
    n = len(SEED_NAMES) * len(TERRAIN_NAMES)
    rows, batch, terrain = _rows(tuple(reversed(range(n))) if reverse else None)
    result = evaluate(batch, terrain, STEPS, backend=backend)
    start = np.asarray(init_state(batch, terrain).pos)
    by_row = {
        row: (
            np.asarray(result.fitness)[r],
            np.asarray(result.final.pos)[r],
            np.asarray(result.descriptors)[r],
        )
        for r, row in enumerate(rows)
    }
    return rows, result, start, by_row


# --- the registry ----------------------------------------------------------------------


def test_both_backends_are_registered_native_first_and_run_here():
    assert backends.names() == ("native", "xla")
    assert backends.get("native").platforms == ("cpu",)
    assert backends.get("native").simulate is native.simulate
    assert backends.get("xla").platforms is None
    assert backends.get("xla").simulate is xla.simulate
    assert AVAILABLE == ["native", "xla"], backends.get("native").why_not()


def test_auto_takes_native_on_the_cpu_and_the_environment_can_name_another(monkeypatch):
    monkeypatch.delenv(backends.ENV, raising=False)
    assert backends.resolve().name == "native"
    assert backends.resolve("auto").name == "native"
    monkeypatch.setenv(backends.ENV, "xla")
    assert backends.resolve().name == "xla"
    assert backends.resolve(None).name == "xla"
    assert backends.resolve("native").name == "native", "an explicit name beats the env"


def test_an_unknown_name_lists_the_choices(monkeypatch):
    with pytest.raises(
        UnknownBackend, match=r"unknown simulator backend 'gpu'; .* auto, native, xla"
    ):
        backends.resolve("gpu")
    with pytest.raises(ValueError, match=r"unknown simulator backend 'cuda'"):
        evaluate(pack([SEEDS["square"]]), terrains.flat(), 2, backend="cuda")
    monkeypatch.setenv(backends.ENV, "numpy")
    with pytest.raises(ValueError, match=r"unknown simulator backend 'numpy'"):
        backends.resolve()


def test_a_backend_for_another_device_says_so():
    reason = backends.get("native").why_not("gpu")
    assert reason is not None and "runs on cpu" in reason and "gpu" in reason
    assert not backends.get("native").available("tpu")
    assert backends.get("xla").why_not("gpu") is None


def test_a_taken_name_is_refused_and_the_same_entry_again_is_harmless():
    with pytest.raises(ValueError, match=r"simulator backend 'xla' is already registered"):
        backends.register(Backend("xla", native.simulate))
    assert backends.register(backends.get("xla")) is backends.get("xla")
    assert backends.names() == ("native", "xla")


def test_an_unavailable_backend_says_why_and_auto_falls_back(tmp_path):
    """A fresh cache and a compiler that does not exist: ``auto`` runs the XLA step and
    warns once why; asking for ``native`` by name raises NativeUnavailable saying why."""
    out = run_probe({"JELM_CACHE_DIR": str(tmp_path), "CXX": "no-such-compiler++"})
    assert out["auto"] == "xla" and not out["available"]
    assert "no C++ compiler (no-such-compiler++)" in out["reason"]
    assert out["error"][0] == "NativeUnavailable"
    assert out["error"][1].startswith("native backend unavailable: no C++ compiler")
    assert np.isfinite(out["fitness"])
    assert any("the native backend is unavailable, using xla" in w for w in out["warnings"])
    assert issubclass(native.NativeUnavailable, BackendUnavailable)


# --- the contract of every backend -------------------------------------------------------


@pytest.mark.parametrize("backend", AVAILABLE)
def test_fitness_is_the_centre_of_mass_x_displacement_times_the_direction(backend):
    """Worked out from the placed start and the final state, unit masses: the mean of the
    final joint x minus the mean of the placed joint x, times +1, or -1 on right_wall."""
    rows, result, start, _ = _run(backend)
    fitness = np.asarray(result.fitness, np.float64)
    displacement = np.asarray(result.displacement, np.float64)
    final = np.asarray(result.final.pos, np.float64)
    assert np.asarray(result.valid).all()
    moved = {name: 0 for name in TERRAIN_NAMES}
    for r, (w, t) in enumerate(rows):
        n = len(SEEDS[SEED_NAMES[w]]["joints"])
        dx = final[r, :n, 0].mean() - start[r, :n, 0].astype(np.float64).mean()
        expected = DIRECTION[TERRAIN_NAMES[t]] * dx
        where = f"{SEED_NAMES[w]} on {TERRAIN_NAMES[t]}"
        assert fitness[r] == pytest.approx(expected, abs=1e-4), where
        assert displacement[r] == pytest.approx(dx, abs=1e-4), where
        moved[TERRAIN_NAMES[t]] += abs(dx) > 0.05
    # Every terrain has walkers that moved, so a scaled or unsigned fitness fails above.
    assert all(count >= 4 for count in moved.values()), moved


@pytest.mark.parametrize("backend", AVAILABLE)
def test_results_repeat_and_do_not_depend_on_the_rows_around_a_walker(backend):
    """The same batch in the reverse row order (every walker beside other walkers and
    terrains) gives every walker the same bits, and so does running it again."""
    _, _, _, forward = _run(backend)
    _, _, _, backward = _run(backend, reverse=True)
    rows, batch, terrain = _rows()
    again = evaluate(batch, terrain, STEPS, backend=backend)
    for r, row in enumerate(rows):
        where = f"{SEED_NAMES[row[0]]} on {TERRAIN_NAMES[row[1]]}"
        for a, b in zip(forward[row], backward[row], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=where)
        assert np.asarray(again.fitness)[r] == forward[row][0], where
        np.testing.assert_array_equal(np.asarray(again.final.pos)[r], forward[row][1])


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(AVAILABLE, 2)))
def test_backends_agree_on_every_seed_and_terrain(a, b):
    """Descriptors and validity are bit-identical (the drivers compute them); fitness
    agrees to float32 rounding of sums in another order."""
    rows, ra, _, _ = _run(a)
    _, rb, _, _ = _run(b)
    np.testing.assert_array_equal(np.asarray(ra.descriptors), np.asarray(rb.descriptors))
    np.testing.assert_array_equal(np.asarray(ra.valid), np.asarray(rb.valid))
    fa, fb = np.asarray(ra.fitness), np.asarray(rb.fitness)
    for r, (w, t) in enumerate(rows):
        where = f"{SEED_NAMES[w]} on {TERRAIN_NAMES[t]}: {a} {fa[r]} vs {b} {fb[r]}"
        assert abs(fa[r] - fb[r]) <= AGREEMENT, where
