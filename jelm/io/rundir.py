"""Run directories: where one ELM run keeps everything it makes.

Layout of ``<run>/``::

    config.json        the resolved configuration (written once; a resume must match it)
    metrics.jsonl      one JSON object per generation, appended and flushed
    ledger.sqlite      every candidate (jelm.qd.ledger)
    checkpoints/<g>/   orbax checkpoints of the device state (jelm.io.checkpoint)
    plots/  renders/   figures and walker renders
    .lock              held while a process runs in the directory

A second process cannot run in a directory that is in use (:class:`RunDirError`); a
directory made for another configuration refuses to resume and says what differs.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message says why."""


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: tuple[str, ...] = ()
) -> list[str]:
    """Human-readable differences between two nested configs (``a.b: 1 -> 2``), skipping
    keys that start with any prefix in ``ignore`` (e.g. the generation budget, which a
    resumed run may extend)."""
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == p or key.startswith(p + ".") for p in ignore):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def _json_safe(value: Any) -> Any:
    """Metrics may hold NaN/inf (an empty archive's max fitness): write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class RunDir:
    """One run's directory, locked while open.

    ``RunDir(path, config)`` creates the directory and writes ``config.json``, or, if the
    directory holds a run already, checks that ``config`` matches it (keys under
    ``resume_ignore`` may differ) and marks the run as resumed.
    """

    def __init__(
        self,
        path: str | Path,
        config: Mapping[str, Any],
        resume_ignore: tuple[str, ...] = (),
    ):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "a+")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RunDirError(f"{self.path} is in use by another process") from None
        self.config = json.loads(json.dumps(config))  # plain JSON types from here on
        config_path = self.path / "config.json"
        self.resumed = config_path.exists()
        if self.resumed:
            try:
                stored = json.loads(config_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                self.close()
                raise RunDirError(f"{config_path} is unreadable ({exc})") from exc
            diffs = config_differences(stored, self.config, resume_ignore)
            if diffs:
                self.close()
                raise RunDirError(
                    f"{self.path} holds a run with another configuration; differences: "
                    + "; ".join(diffs[:10])
                    + ". Use a new run directory, or the original configuration."
                )
        else:
            tmp = config_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.config, indent=1, sort_keys=True))
            os.replace(tmp, config_path)
        for sub in ("checkpoints", "plots", "renders"):
            (self.path / sub).mkdir(exist_ok=True)

    @property
    def ledger_path(self) -> Path:
        """Where the run's ledger lives."""
        return self.path / "ledger.sqlite"

    @property
    def checkpoint_dir(self) -> Path:
        """Where the run's orbax checkpoints live."""
        return self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        """The per-generation metrics file."""
        return self.path / "metrics.jsonl"

    def append_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one generation's metrics (one JSON line, flushed and fsynced)."""
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(_json_safe(dict(row)), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def metrics(self) -> Iterator[dict[str, Any]]:
        """Every metrics row written so far; a torn last line (a kill mid-write) is
        skipped."""
        if not self.metrics_path.exists():
            return
        with open(self.metrics_path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def truncate_metrics(self, last_generation: int) -> None:
        """Drop metrics rows after ``last_generation`` (a resume restarts from the last
        checkpoint and writes those generations again)."""
        rows = [r for r in self.metrics() if r.get("generation", -1) <= last_generation]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        os.replace(tmp, self.metrics_path)

    def close(self) -> None:
        """Release the directory lock."""
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
