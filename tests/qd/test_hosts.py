"""The host loop, and the device loop, over two processes of a ``jax.distributed`` job
(two local CPU processes, gloo collectives) end with the archive and ledger of one
process, the same seed: both processes hold the archive, only process 0 wrote the run
directory, and a job restarted on its run directory resumes from process 0's checkpoint
and ledger."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from jelm.qd.ledger import Ledger
from tests.hosts import launch, run

GENERATIONS = 3


def _one(tmp_path_factory, mutation: str) -> tuple[Path, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("one") / "run"
    arrays = run(GENERATIONS, out, mutation)
    assert int(arrays["filled"]) >= 3
    return out, arrays


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A one-process ``gp`` run of the test configuration: its directory and archive."""
    return _one(tmp_path_factory, "gp")


@pytest.fixture(scope="module")
def one_direct(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """The same with ``direct``, the device loop."""
    return _one(tmp_path_factory, "direct")


def _two(tmp_path: Path, generations: int, mutation: str = "gp") -> list[dict[str, np.ndarray]]:
    outs = [tmp_path / f"process{k}-{generations}.npz" for k in range(2)]
    results = launch(2, tmp_path / "run", outs, generations, mutation=mutation)
    for k, result in enumerate(results):
        assert result.returncode == 0, f"process {k}:\n{result.stderr[-4000:]}"
    archives = []
    for out in outs:
        with np.load(out) as saved:
            archives.append(dict(saved))
    return archives


def _assert_same_run(two: Path, one: tuple[Path, dict[str, np.ndarray]], archives) -> None:
    ref_dir, ref = one
    for many in archives:
        assert sorted(many) == sorted(ref)
        for name in ref:
            np.testing.assert_array_equal(ref[name], many[name], err_msg=name, strict=True)
    with (
        Ledger(two / "ledger.sqlite", readonly=True) as a,
        Ledger(ref_dir / "ledger.sqlite", readonly=True) as b,
    ):
        assert a.last_generation() == b.last_generation() == GENERATIONS

        def rows(ledger: Ledger) -> list[tuple]:
            return [
                (r.id, r.program, r.status, r.fitness, r.accepted, r.niche)
                for r in ledger.iter_candidates()
            ]

        assert rows(a) == rows(b)


@pytest.mark.slow  # two runs and two extra processes: a minute or more on 2 cores
def test_two_processes_end_with_the_archive_of_one(tmp_path, one):
    archives = _two(tmp_path, GENERATIONS)
    _assert_same_run(tmp_path / "run", one, archives)
    written = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert written == sorted(p.name for p in one[0].iterdir())


@pytest.mark.slow
def test_a_restarted_job_resumes_from_process_0s_checkpoint_and_ledger(tmp_path, one):
    _two(tmp_path, 1)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "1").is_dir()
    shutil.rmtree(checkpoints / "1")  # as if killed before it was written: replay gen 1
    archives = _two(tmp_path, GENERATIONS)
    assert not (tmp_path / "run" / "damaged").exists()  # checkpoint 0 restored
    _assert_same_run(tmp_path / "run", one, archives)


@pytest.mark.slow
def test_the_device_loop_over_two_processes_ends_with_the_archive_of_one(tmp_path, one_direct):
    """``direct``: both processes run the jitted generations, each simulating its share of
    every batch; a restart resumes from process 0's checkpoint."""
    _two(tmp_path, 1, "direct")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "1")  # replay generation 1
    archives = _two(tmp_path, GENERATIONS, "direct")
    _assert_same_run(tmp_path / "run", one_direct, archives)
