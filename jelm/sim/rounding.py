"""Arithmetic whose rounding no XLA pass may change, so that every compiled program of
the simulator (one device, sharded, any batch shape) rounds alike (``jelm/sim/README.md``,
"Determinism")."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` as a true division in every compiled program.

    XLA's algebraic simplifier rewrites a division by a broadcast value into a
    multiplication by its reciprocal (another rounding) when the broadcast is visible to
    it, and whether it is depends on the order of its passes: a division by a scalar
    inside the simulation loop stays a division in a one-device program and becomes a
    multiplication in a sharded one. Materialising the broadcast divisor behind an
    optimization barrier hides it from every pipeline.
    """
    num = jnp.asarray(num)
    den = jnp.asarray(den, num.dtype)
    shape = jnp.broadcast_shapes(num.shape, den.shape)
    return num / jax.lax.optimization_barrier(jnp.broadcast_to(den, shape))
