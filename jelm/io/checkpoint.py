"""Checkpoints of a run's device state with orbax, so long searches resume (ELM §5).

A run directory keeps its checkpoints under ``checkpoints/<step>/``; orbax writes each one
to a temporary directory and renames it when complete, so a kill mid-save leaves the
previous one intact (resuming is :mod:`jelm.qd.run`'s job).

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


def _path_name(path: tuple[Any, ...]) -> str:
    """A leaf's path as ``a/b/0``, the same whether a level is a dict, a dataclass or a
    sequence (orbax's metadata keeps dicts where the state has dataclasses)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _describe(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Path -> (shape, dtype) of every leaf, for comparing a checkpoint to a template."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf) if not hasattr(leaf, "shape") else leaf
        out[_path_name(path)] = (tuple(arr.shape), str(arr.dtype))
    return out


class Checkpoints:
    """Save and restore pytrees of arrays in ``directory`` (kept: the newest ``keep``).

    ``save(step, state)`` returns after the write is complete (synchronous: a resumed run
    must never find a half-written newest checkpoint). ``restore(template)`` returns the
    newest checkpoint's state in the template's structure, shapes and dtypes.
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        # In a job of several processes (jax.distributed) only the one that opens the
        # directory writes it: orbax then runs without cross-process barriers, and the
        # state is written and read as host arrays (orbax refuses process-local device
        # arrays in a multi-process job).
        self._alone = jax.process_count() > 1
        alone: dict[str, Any] = {}
        if self._alone:
            me = jax.process_index()
            alone["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}
            )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not self._alone, enable_async_checkpointing=False, **alone
        )
        if self._alone:
            self.directory.mkdir(parents=True, exist_ok=True)
        try:
            # the one item's handler named up front: a manager opened on an existing
            # directory then reads its metadata (shapes are checked before restoring)
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
            )
        except Exception as exc:  # orbax raises many kinds; the caller needs one
            raise CheckpointError(f"cannot open checkpoints in {self.directory}: {exc}") from exc

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None if there is none."""
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """Every complete checkpoint's step, oldest first."""
        return sorted(self._manager.all_steps())

    def reload(self) -> None:
        """Read the directory again (after a checkpoint was moved away)."""
        self._manager.reload()

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` (a pytree of arrays) as checkpoint ``step``."""
        try:
            if self._alone:
                state = jax.device_get(state)
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
        want = _describe(template)
        stored = self._stored(step)
        if stored is not None:
            self._compare(step, stored, want, "it was written by another configuration")
        host = jax.device_get(template) if self._alone else template
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, host)
        try:
            state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            if self._alone:
                state = jax.tree_util.tree_map(jax.numpy.asarray, state)
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} does not restore "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); it was written "
                "by another configuration or is damaged"
            ) from exc
        self._compare(step, _describe(state), want, "it was written by another configuration")
        return step, state

    def _stored(self, step: int) -> dict[str, tuple[tuple[int, ...], str]] | None:
        """Path -> (shape, dtype) of every leaf checkpoint ``step`` holds, from its
        metadata (``None`` when the metadata cannot be read: restoring then says why)."""
        try:
            tree = self._manager.item_metadata(step).tree
            leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
            return {
                _path_name(path): (tuple(meta.shape), str(np.dtype(meta.dtype)))
                for path, meta in leaves
            }
        except Exception:
            return None

    def _compare(
        self,
        step: int,
        got: dict[str, tuple[tuple[int, ...], str]],
        want: dict[str, tuple[tuple[int, ...], str]],
        why: str,
    ) -> None:
        """Raise a :class:`CheckpointError` naming the first leaf that differs."""
        for key in sorted(set(want) | set(got)):
            if got.get(key) != want.get(key):
                has = "absent" if key not in got else f"{got[key]}"
                expects = "no such leaf" if key not in want else f"{want[key]}"
                raise CheckpointError(
                    f"checkpoint {step} in {self.directory}: leaf {key} is {has}, this run "
                    f"expects {expects}; {why}"
                )

    def close(self) -> None:
        """Release orbax's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
