"""The run machinery every ELM loop shares: one run directory, its ledger, checkpoints
and metrics, and resuming after a kill (ELM, arXiv 2206.08896v1, §5: long searches).

A :class:`Run` opens (or reopens) a run directory (:class:`jelm.io.rundir.RunDir`), its
ledger (:class:`jelm.qd.ledger.Ledger`, one column per descriptor of the domain) and its
orbax checkpoints. The host loop and the jitted device loop both write through it, so a
run directory looks the same whatever the operator.

Resume. The ledger commits every generation; checkpoints of the device state are written
after the ledger commit. :meth:`Run.restore` returns the newest checkpoint that restores:
a damaged one (a kill mid-write, a bad disk) is moved to ``<run>/damaged/`` with a warning
and the next older one is tried, so the loop replays the ledger from there instead of
stopping the run.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from jelm.io.checkpoint import CheckpointError, Checkpoints
from jelm.io.rundir import RunDir
from jelm.qd.ledger import Ledger

__all__ = ["DamagedCheckpointWarning", "Run", "Schedule"]


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint did not restore and was moved aside; the run resumes from an older
    one and replays the ledger."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a loop runs and how it is seeded.

    Attributes:
        generations: generations after the seeds (generation 0).
        batch: candidates per generation.
        checkpoint_every: generations between checkpoints (the last one is always saved).
        seed: the PRNG seed of the whole run (selection, mutation, evaluation).
    """

    generations: int
    batch: int
    checkpoint_every: int
    seed: int


class Run:
    """A run directory with its ledger and checkpoints, locked while open.

    ``config`` is the whole configuration (written to ``config.json``; a resume must
    match it except for the keys under ``resume_ignore``); ``identity`` the part the
    ledger hashes (the run's definition); ``descriptors`` the domain's descriptor names.
    """

    def __init__(
        self,
        out: str | Path,
        config: Mapping[str, Any],
        identity: Mapping[str, Any],
        descriptors: Iterable[str],
        resume_ignore: tuple[str, ...] = (),
        log: Callable[[str], None] = print,
    ) -> None:
        self.log = log
        self.rundir = RunDir(out, config, resume_ignore=resume_ignore)
        try:
            self.ledger = Ledger(
                self.rundir.ledger_path, run_config=identity, descriptors=descriptors
            )
        except BaseException:
            self.rundir.close()
            raise
        try:
            self.checkpoints = Checkpoints(self.rundir.checkpoint_dir)
        except BaseException:
            self.ledger.close()
            self.rundir.close()
            raise

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.rundir.path

    @property
    def resumed(self) -> bool:
        """Whether the directory held this run already."""
        return self.rundir.resumed

    def restore(self, template: Any) -> tuple[int, Any] | None:
        """``(generation, state)`` of the newest checkpoint that restores into
        ``template``'s structure, or ``None`` when none does. Damaged checkpoints are moved
        to ``<run>/damaged/`` (a :class:`DamagedCheckpointWarning` says which and why)."""
        for step in reversed(self.checkpoints.steps()):
            try:
                return self.checkpoints.restore(template, step)
            except CheckpointError as exc:
                self._set_aside(step, exc)
        return None

    def _set_aside(self, step: int, exc: Exception) -> None:
        damaged = self.path / "damaged"
        damaged.mkdir(exist_ok=True)
        target = damaged / f"checkpoint-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        source = self.checkpoints.directory / str(step)
        if source.exists():
            shutil.move(str(source), str(target))
        self.checkpoints.reload()
        message = f"{exc}; moved it to {target} and resuming from an earlier one"
        warnings.warn(message, DamagedCheckpointWarning, stacklevel=3)
        self.log(f"warning: {message}")

    def save(self, generation: int, state: Any) -> None:
        """Checkpoint the device state after ``generation`` (after its ledger commit)."""
        self.checkpoints.save(generation, state)

    def append_metrics(self, metrics: Mapping[str, Any]) -> None:
        """One generation's metrics, appended to ``metrics.jsonl``."""
        self.rundir.append_metrics(metrics)

    def truncate_metrics(self, last_generation: int) -> None:
        """Drop metrics rows after ``last_generation`` (they are written again)."""
        self.rundir.truncate_metrics(last_generation)

    def close(self) -> None:
        """Release the checkpoints, the ledger and the directory lock."""
        self.checkpoints.close()
        self.ledger.close()
        self.rundir.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
