"""Walkers, layouts and runners shared by the tests of jelm.sim."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from jelm.sim import backends
from jelm.sim.base import DEFAULT_PARAMS, SimState, as_arrays
from jelm.sim.physics import init_state, simulate
from jelm.sim.seed_walkers import seed_walkers

SEEDS = seed_walkers()
SEED_NAMES = tuple(SEEDS)
BONE = {"type": "distance", "amplitude": 0.0, "phase": 0.0}


def braced_square(side: float = 4.0) -> dict:
    """Four corners, four sides and both diagonals, all bones: a rigid body."""
    links = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)]
    return {
        "joints": [[0.0, 0.0], [0.0, side], [side, side], [side, 0.0]],
        "muscles": [[i, j, dict(BONE)] for i, j in links],
    }


def lone_mass() -> dict:
    return {"joints": [[0.0, 0.0]], "muscles": []}


def one_muscle(length: float = 4.0, amplitude: float = 6.0, phase: float = 0.0) -> dict:
    props = {"type": "muscle", "amplitude": amplitude, "phase": phase}
    return {"joints": [[0.0, 0.0], [length, 0.0]], "muscles": [[0, 1, props]]}


def random_walker(rng: np.random.Generator, max_joints: int = 12) -> dict:
    """A connected walker of 2..``max_joints`` joints spread over a 20 x 20 box (at least
    0.5 apart), a spanning tree of links plus extra ones (at most 10 per joint), each a
    bone or a muscle of random amplitude in [-10, 10] and phase in [0, 1)."""
    n = int(rng.integers(2, max_joints + 1))
    joints: list[list[float]] = []
    while len(joints) < n:
        p = rng.uniform(-10.0, 10.0, size=2)
        if all(np.hypot(*(p - q)) >= 0.5 for q in np.asarray(joints).reshape(-1, 2)):
            joints.append([float(p[0]), float(p[1])])
    pairs = [(int(rng.integers(k)), k) for k in range(1, n)]
    degree = np.zeros(n, int)
    for i, j in pairs:
        degree[i] += 1
        degree[j] += 1
    for _ in range(int(rng.integers(0, 2 * n))):
        i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
        if (i, j) in pairs or (j, i) in pairs or degree[i] >= 10 or degree[j] >= 10:
            continue
        pairs.append((i, j))
        degree[i] += 1
        degree[j] += 1
    muscles = []
    for i, j in pairs:
        if rng.random() < 0.5:
            props = {
                "type": "muscle",
                "amplitude": float(rng.uniform(-10.0, 10.0)),
                "phase": float(rng.random()),
            }
        else:
            props = dict(BONE)
        muscles.append([i, j, props])
    return {"joints": joints, "muscles": muscles}


@functools.partial(jax.jit, static_argnames=("steps", "backend"))
def _trajectory(batch, terrain, state, params, steps, backend):
    def one(s, _):
        s = simulate(batch, terrain, s, 1, params, backend=backend)
        return s, (s.pos, s.vel)

    _, (pos, vel) = jax.lax.scan(one, state, None, length=steps)
    return pos, vel


def trajectory(batch, terrain, state, steps, params=DEFAULT_PARAMS):
    """States after each of ``steps`` steps from ``state`` on the current backend
    (``$JELM_SIM_BACKEND``): pos, vel ``(B, T, J, 2)`` as NumPy."""
    pos, vel = _trajectory(
        batch, terrain, state, as_arrays(params), steps=steps, backend=backends.resolve().name
    )
    return np.swapaxes(np.asarray(pos), 0, 1), np.swapaxes(np.asarray(vel), 0, 1)


def start_state(batch, terrain, params=DEFAULT_PARAMS, shift=(0.0, 0.0), vel=(0.0, 0.0)):
    """``init_state`` with every live joint moved by ``shift`` and given velocity ``vel``."""
    s = init_state(batch, terrain, as_arrays(params))
    live = batch.joint_mask[..., None]
    pos = jnp.where(live, s.pos + jnp.asarray(shift, jnp.float32), 0.0)
    v = jnp.where(live, jnp.broadcast_to(jnp.asarray(vel, jnp.float32), s.vel.shape), 0.0)
    return SimState(pos=pos, vel=v, step=s.step)


PROBE = """
    import json, warnings
    import jelm.sim
    from jelm.sim import backends, native, evaluate, terrain
    from jelm.sim.seed_walkers import seed_walkers
    from jelm.sim.walker import pack
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = backends.resolve().name
        fitness = float(evaluate(pack([seed_walkers()["square"]]), terrain.flat(), 30).fitness[0])
    try:
        backends.resolve("native")
        error = None
    except jelm.sim.BackendUnavailable as exc:
        error = [type(exc).__name__, str(exc)]
    print(json.dumps({"auto": auto, "available": native.available(), "error": error,
                      "reason": native.unavailable_reason(), "fitness": fitness,
                      "warnings": [str(w.message) for w in caught]}))
"""


def run_probe(env: dict[str, str]) -> dict:
    """PROBE in a fresh process with ``env`` added: what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
