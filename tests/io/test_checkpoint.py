"""Checkpoints: round trip, newest wins, kill -9 during a save, clear errors on mismatch
and damage (jelm.io.checkpoint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.io.checkpoint import CheckpointError, Checkpoints


def _state(seed: int, n: int = 8) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "fitness": jnp.asarray(rng.normal(size=(n,)), jnp.float32),
        "ids": jnp.asarray(rng.integers(0, 100, size=(n,)), jnp.int32),
        "key": jax.random.key_data(jax.random.PRNGKey(seed)),
        "nested": {"joints": jnp.asarray(rng.normal(size=(n, 4, 2)), jnp.float32)},
    }


def _equal(a: dict, b: dict) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_round_trip_and_newest_wins(tmp_path: Path):
    with Checkpoints(tmp_path / "ck", keep=2) as ck:
        assert ck.latest_step() is None
        for step in (1, 2, 3):
            ck.save(step, _state(step))
        assert ck.steps() == [2, 3]  # keep=2
        step, got = ck.restore(_state(0))
        assert step == 3 and _equal(got, _state(3))
        step, got = ck.restore(_state(0), step=2)
        assert step == 2 and _equal(got, _state(2))
    with Checkpoints(tmp_path / "ck") as again:  # reopened from disk
        assert again.latest_step() == 3


def test_no_checkpoint_is_a_clear_error(tmp_path: Path):
    with (
        Checkpoints(tmp_path / "empty") as ck,
        pytest.raises(CheckpointError, match="no checkpoint"),
    ):
        ck.restore(_state(0))


def test_mismatched_template_names_the_leaf(tmp_path: Path):
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(1, _state(1, n=8))
        with pytest.raises(
            CheckpointError,
            match=r"leaf fitness is \(\(8,\), 'float32'\), this run expects "
            r"\(\(16,\), 'float32'\); it was written by another configuration",
        ):
            ck.restore(_state(0, n=16))  # other shapes
        other = _state(0)
        other["extra"] = jnp.zeros(3)
        with pytest.raises(CheckpointError, match=r"leaf extra is absent"):
            ck.restore(other)  # other structure


def test_damaged_checkpoint_is_a_clear_error(tmp_path: Path):
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(1, _state(1))
    # Overwrite every data file of the checkpoint with garbage.
    damaged = 0
    for path in (tmp_path / "ck" / "1").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(os.urandom(64))
            damaged += 1
    assert damaged
    with Checkpoints(tmp_path / "ck") as ck, pytest.raises(CheckpointError, match="damaged"):
        ck.restore(_state(0))


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, jax.numpy as jnp
    from jelm.io.checkpoint import Checkpoints
    ck = Checkpoints(sys.argv[1], keep=2)
    step = 0
    while True:
        step += 1
        ck.save(step, {"x": jnp.full((256, 256), float(step), jnp.float32)})
        print(step, flush=True)
    """
)


@pytest.mark.parametrize("delay", [0.3, 0.9])
def test_kill_during_saves_leaves_a_restorable_checkpoint(tmp_path: Path, delay: float):
    """A real process saving in a loop is killed with SIGKILL; the newest complete
    checkpoint restores, and its content is exactly what was saved at that step."""
    directory = tmp_path / "ck"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    first = proc.stdout.readline()  # at least one checkpoint finished
    assert first.strip() == "1"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Checkpoints(directory) as ck:
        step, got = ck.restore({"x": jnp.zeros((256, 256), jnp.float32)})
    assert step >= 1
    assert np.all(np.asarray(got["x"]) == float(step))
