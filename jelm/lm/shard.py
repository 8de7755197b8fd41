"""Data parallel over every local device for the language model (ELM §3.1's mutation
step and the training of stages 1-3): parameters replicated, batch rows split along one
mesh axis.

:func:`local_mesh` is the mesh the sampler and the train step use (``None`` on one
device or when turned off), :func:`replicate` and :func:`split_rows` place pytrees on it,
:func:`pad_rows` rounds a batch up to a multiple of the device count. Why sampled tokens
equal one device's and what training reorders: ``jelm/lm/README.md``, "Devices".
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

#: The environment variable that turns the LM's sharding off (``0``) or on (``1``) when a
#: call does not say; unset, the LM follows the simulator's :data:`SIM_ENV`.
ENV = "JELM_LM_SHARD"
#: The simulator's switch (``jelm.sim.shard.ENV``), which the LM follows by default, so
#: that one variable turns both off. Named, not imported: importing ``jelm.sim`` pins
#: XLA:CPU's instruction set for the whole process.
SIM_ENV = "JELM_SIM_SHARD"
#: The mesh axis the batch rows are split along.
AXIS = "data"


def enabled(shard: bool | None = None) -> bool:
    """Whether to spread the LM's batches over the local devices: ``shard`` when given,
    else ``$JELM_LM_SHARD``, else ``$JELM_SIM_SHARD`` (on unless it is ``0``)."""
    if shard is not None:
        return bool(shard)
    value = os.environ.get(ENV) or os.environ.get(SIM_ENV) or "1"
    return value.strip() != "0"


@functools.cache
def _mesh(devices: tuple[jax.Device, ...]) -> Mesh:
    return Mesh(np.array(devices, dtype=object), (AXIS,))


def local_mesh(shard: bool | None = None) -> Mesh | None:
    """A one-axis mesh of every local device of JAX's default backend, or ``None`` when
    there is only one or sharding is off (:func:`enabled`): then callers run their
    one-device code."""
    if not enabled(shard):
        return None
    devices = tuple(jax.local_devices())
    return _mesh(devices) if len(devices) > 1 else None


def size(mesh: Mesh | None) -> int:
    """The devices of ``mesh`` (1 for ``None``)."""
    return 1 if mesh is None else int(mesh.devices.size)


def padded_rows(rows: int, mesh: Mesh | None) -> int:
    """``rows`` rounded up to a multiple of the mesh's device count (at least one row a
    device; ``rows`` itself without a mesh)."""
    if mesh is None:
        return rows
    n = size(mesh)
    return max(1, -(-rows // n)) * n


def pad_rows(tree: Any, rows: int) -> Any:
    """Every leaf of ``tree`` (NumPy or JAX arrays) padded with zeros along its leading
    axis to ``rows`` (for a batch with a loss mask: rows that weigh nothing)."""

    def pad(a: Any) -> Any:
        extra = rows - a.shape[0]
        if extra == 0:
            return a
        widths = [(0, extra)] + [(0, 0)] * (a.ndim - 1)
        return np.pad(a, widths) if isinstance(a, np.ndarray) else jnp.pad(a, widths)

    return jax.tree_util.tree_map(pad, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def rows(mesh: Mesh) -> NamedSharding:
    """The leading (row) axis split over the devices, the rest whole."""
    return NamedSharding(mesh, P(AXIS))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` on every device of ``mesh`` (unchanged without one; no copy when it is
    already there)."""
    return tree if mesh is None else jax.device_put(tree, replicated(mesh))


def split_rows(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` with every leaf's leading axis (a multiple of the device count) split over
    ``mesh`` (unchanged without one; no copy when it is already so placed)."""
    return tree if mesh is None else jax.device_put(tree, rows(mesh))
