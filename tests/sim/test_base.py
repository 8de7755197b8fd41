"""The shared types of jelm.sim (jelm.sim.base): parameters as a pytree, surface specs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.sim import terrain as terrains
from jelm.sim.base import (
    ACCURATE_PARAMS,
    DEFAULT_PARAMS,
    GENERAL_SURFACES,
    PhysicsParams,
    SurfaceSpec,
    as_arrays,
)


def test_params_are_a_pytree_of_floats_with_static_loop_counts():
    leaves, tree = jax.tree_util.tree_flatten(DEFAULT_PARAMS)
    assert len(leaves) == 11 and all(isinstance(v, float) for v in leaves)
    assert jax.tree_util.tree_unflatten(tree, leaves) == DEFAULT_PARAMS
    assert jax.tree_util.tree_structure(ACCURATE_PARAMS) != tree, "iterations is static"
    arrays = as_arrays(ACCURATE_PARAMS)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(arrays))
    assert (arrays.iterations, arrays.substeps) == (16, 4)
    assert float(arrays.gravity) == np.float32(ACCURATE_PARAMS.gravity)


def test_equal_params_trace_to_the_same_function():
    """A jitted function of ``as_arrays(params)`` compiles once for the default and an
    explicitly built equal value (floats are traced, not folded into constants)."""
    traces = []

    @jax.jit
    def f(p: PhysicsParams) -> jax.Array:
        traces.append(None)
        return p.gravity * p.dt + p.damping

    explicit = PhysicsParams(gravity=25.0, damping=1.1)
    assert f(as_arrays(DEFAULT_PARAMS)) == f(as_arrays(explicit))
    assert len(traces) == 1
    f(as_arrays(dataclasses.replace(DEFAULT_PARAMS, gravity=10.0)))
    assert len(traces) == 1, "another value, the same trace"


@pytest.mark.parametrize(
    ("name", "flat_ground", "ceiling"),
    [
        ("flat", True, False),
        ("left_wall", True, False),
        ("right_wall", True, False),
        ("hills", False, False),
        ("bumpy", False, False),
        ("tunnel", True, True),
    ],
)
def test_surface_spec_of_every_terrain(name, flat_ground, ceiling):
    assert SurfaceSpec.of(terrains.make_terrain(name)) == SurfaceSpec(flat_ground, ceiling)


def test_surface_spec_of_a_stack_needs_what_any_row_needs():
    flat, hills, tunnel = terrains.flat(), terrains.hills(), terrains.tunnel()
    assert SurfaceSpec.of(terrains.stack([flat, tunnel], [0, 0, 1])) == SurfaceSpec(True, True)
    assert SurfaceSpec.of(terrains.stack([flat, hills], [0, 1])) == SurfaceSpec(False, False)
    assert SurfaceSpec(flat_ground=False, ceiling=True) == GENERAL_SURFACES
