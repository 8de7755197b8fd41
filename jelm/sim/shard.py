"""Spreading a batch of walkers over every local device: data parallel over the walker
axis (the Sodarace simulator of the ELM paper, Lehman et al. 2022, §4, scales out with
the batch because walkers never interact).

:func:`local_mesh` is the mesh the drivers use (``None`` on one device or when turned
off); :func:`over_devices` pads a batch to a multiple of the device count with empty
rows, runs each device's rows through a function with ``shard_map`` and drops the
padding rows. Why the results equal one device's bit for bit: ``jelm/sim/README.md``,
"Devices".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jelm.sim.terrain import Terrain
from jelm.sim.walker import WalkerBatch

#: The environment variable that turns sharding off (``0``) when a call does not say.
ENV = "JELM_SIM_SHARD"
#: The mesh axis the walker rows are split along.
AXIS = "walkers"


def enabled(shard: bool | None = None) -> bool:
    """Whether to spread batches over the local devices: ``shard`` when given, else
    ``$JELM_SIM_SHARD`` (on unless it is ``0``)."""
    if shard is not None:
        return bool(shard)
    return os.environ.get(ENV, "1").strip() != "0"


@functools.cache
def _mesh(devices: tuple[jax.Device, ...]) -> Mesh:
    return Mesh(np.array(devices, dtype=object), (AXIS,))


def local_mesh(shard: bool | None = None) -> Mesh | None:
    """A one-axis mesh of every local device of JAX's default backend, or ``None`` when
    there is only one or sharding is off (:func:`enabled`): then the drivers run their
    one-device code."""
    return mesh_of(jax.local_devices(), shard)


def mesh_of(devices: Sequence[jax.Device], shard: bool | None = None) -> Mesh | None:
    """A one-axis mesh of ``devices`` (for a computation that spans processes: every
    device of every process, ``jax.devices()``), or ``None`` for one device or when
    sharding is off (:func:`enabled`)."""
    devices = tuple(devices)
    if not enabled(shard) or len(devices) < 2:
        return None
    return _mesh(devices)


def padded_rows(rows: int, mesh: Mesh) -> int:
    """``rows`` rounded up to a multiple of the mesh's device count (at least one row a
    device)."""
    n = mesh.devices.size
    return max(1, -(-rows // n)) * n


def pad_rows(tree: Any, rows: int, mode: str = "constant") -> Any:
    """Every leaf of ``tree`` padded along its leading axis to ``rows``: with zeros
    (``mode="constant"``: for a :class:`WalkerBatch`, empty rows whose masks are all
    false) or copies of the last row (``mode="edge"``)."""

    def pad(a: jax.Array) -> jax.Array:
        extra = rows - a.shape[0]
        if extra == 0:
            return a
        return jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), mode=mode)

    return jax.tree_util.tree_map(pad, tree)


def over_devices(
    fn: Callable[..., Any],
    mesh: Mesh,
    batch: WalkerBatch,
    terrain: Terrain,
    *shared: Any,
) -> Any:
    """``fn(batch, terrain, *shared)`` with the batch's rows spread over ``mesh``
    (traceable).

    The batch is padded with empty rows to a multiple of the device count (a per-row
    terrain stack repeats its last terrain), each device runs ``fn`` on its own rows
    (``shard_map``), and the padding rows are dropped from the outputs, every leaf of
    which must have the row axis first. ``shared`` (the physics parameters) and an
    unbatched terrain are replicated. ``fn`` must treat rows independently, as every
    simulator backend does.
    """
    rows = batch.batch_size
    total = padded_rows(rows, mesh)
    batch = pad_rows(batch, total)
    if terrain.is_batched:
        terrain = pad_rows(terrain, total, mode="edge")
    # check_vma=False: the steps' loops carry values that are the same on every device
    # (zeros, loop counters) beside per-device ones, which the replication checker would
    # make every backend annotate; no collective runs inside, so there is nothing to check.
    spread = jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(P(AXIS), P(AXIS) if terrain.is_batched else P(), *(P() for _ in shared)),
        out_specs=P(AXIS),
        check_vma=False,
    )
    out = spread(batch, terrain, *shared)
    return jax.tree_util.tree_map(lambda a: a[:rows], out)
