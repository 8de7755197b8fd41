"""The XLA step (jelm.sim.xla): what is particular to it.

The physics is tested on both backends (``test_physics.py``, ``test_oracle.py``, the XLA
runs in the slow pass) and the backends against each other (``test_backends.py``).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jelm.sim import terrain as terrains
from jelm.sim import xla
from jelm.sim.base import DEFAULT_PARAMS, SurfaceSpec, as_arrays
from jelm.sim.physics import init_state
from jelm.sim.walker import BucketShape, pack
from tests.sim.helpers import SEEDS, braced_square, lone_mass, one_muscle

SMALL = BucketShape(8, 16, 4)
simulate = jax.jit(xla.simulate, static_argnames=("steps", "surfaces", "chunk"))


def test_chunks_give_the_bits_of_one_batch():
    """A batch run in equal chunks (10 rows as 3 x 4, the last padded) gives every row
    what it gets in one piece: walkers never interact."""
    walkers = [
        [SEEDS["square"], braced_square(), one_muscle(), lone_mass()][k % 4] for k in range(10)
    ]
    batch = pack(walkers, SMALL)
    terrain = terrains.flat()
    p = as_arrays(DEFAULT_PARAMS)
    start = init_state(batch, terrain, p)
    spec = SurfaceSpec.of(terrain)
    whole = simulate(batch, terrain, start, steps=10, params=p, surfaces=spec)
    parts = simulate(batch, terrain, start, steps=10, params=p, surfaces=spec, chunk=4)
    np.testing.assert_array_equal(np.asarray(whole.pos), np.asarray(parts.pos))
    np.testing.assert_array_equal(np.asarray(whole.vel), np.asarray(parts.vel))
    assert xla.chunk_rows(SMALL.joints, SMALL.degree) >= 10, "one piece by default"


@pytest.mark.slow
def test_links_to_missing_joints_count_as_masked_out():
    """As on the native step: links past the row's joints are padding, bit for bit."""
    batch = pack([SEEDS["square"]], SMALL)
    bad = dataclasses.replace(
        batch, link_i=batch.link_i.at[0, 0].set(10_000), link_j=batch.link_j.at[0, 1].set(-5)
    )
    masked = dataclasses.replace(
        batch, link_mask=batch.link_mask.at[0, 0].set(False).at[0, 1].set(False)
    )
    terrain = terrains.flat()
    p = as_arrays(DEFAULT_PARAMS)
    spec = SurfaceSpec.of(terrain)
    got = simulate(bad, terrain, init_state(bad, terrain, p), steps=10, params=p, surfaces=spec)
    want = simulate(
        masked, terrain, init_state(masked, terrain, p), steps=10, params=p, surfaces=spec
    )
    assert np.isfinite(np.asarray(got.pos)).all()
    np.testing.assert_array_equal(np.asarray(got.pos), np.asarray(want.pos))
    np.testing.assert_array_equal(np.asarray(got.vel), np.asarray(want.vel))
