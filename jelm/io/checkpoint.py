"""Checkpoints of a run's device state (archive, PRNG keys, operator state) with orbax.

A run directory keeps its checkpoints under ``checkpoints/<step>/``. Resuming a killed
run (DESIGN.md "Runs"; issue "The ELM loop on QDax": kill -9 at any moment and rerun)
restores the newest complete checkpoint; orbax writes each one to a temporary directory
and renames it when complete, so a kill mid-save leaves the previous one intact.

Everything that can go wrong on restore (a checkpoint from another configuration, with
other shapes or dtypes, or damaged on disk) raises :class:`CheckpointError` with a
message that names the directory and what differs, not a traceback from inside orbax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or restored; the message says why."""


def _describe(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Path -> (shape, dtype) of every leaf, for comparing a checkpoint to a template."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf) if not hasattr(leaf, "shape") else leaf
        out[jax.tree_util.keystr(path)] = (tuple(arr.shape), str(arr.dtype))
    return out


class Checkpoints:
    """Save and restore pytrees of arrays in ``directory`` (kept: the newest ``keep``).

    ``save(step, state)`` returns after the write is complete (synchronous: a resumed run
    must never find a half-written newest checkpoint). ``restore(template)`` returns the
    newest checkpoint's state in the template's structure, shapes and dtypes.
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except Exception as exc:  # orbax raises many kinds; the caller needs one
            raise CheckpointError(f"cannot open checkpoints in {self.directory}: {exc}") from exc

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None if there is none."""
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """Every complete checkpoint's step, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` (a pytree of arrays) as checkpoint ``step``."""
        try:
            self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
            self._manager.wait_until_finished()
        except Exception as exc:
            raise CheckpointError(
                f"cannot save checkpoint {step} in {self.directory}: {exc}"
            ) from exc

    def restore(self, template: Any, step: int | None = None) -> tuple[int, Any]:
        """``(step, state)`` of checkpoint ``step`` (default: the newest).

        ``template`` gives the expected structure, shapes and dtypes; any difference is a
        :class:`CheckpointError` naming the first mismatching leaf.
        """
        if step is None:
            step = self.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        try:
            state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} does not restore "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); it was written "
                "by another configuration or is damaged. Start a new run directory, or "
                "delete the checkpoint to resume from an earlier one."
            ) from exc
        want, got = _describe(template), _describe(state)
        for key, spec in want.items():
            if got.get(key) != spec:
                raise CheckpointError(
                    f"checkpoint {step} in {self.directory}: {key} is {got.get(key)}, "
                    f"this run expects {spec}; it was written by another configuration"
                )
        return step, state

    def close(self) -> None:
        """Release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
