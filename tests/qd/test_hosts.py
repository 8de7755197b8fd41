"""The host loop over two processes of a ``jax.distributed`` job (two local CPU processes,
gloo collectives) ends with the archive of one process, the same seed: both processes hold
it, and only process 0 wrote the run directory."""

from __future__ import annotations

import numpy as np
import pytest

from jelm.qd.ledger import Ledger
from tests.hosts import launch, run

GENERATIONS = 3


@pytest.mark.slow  # three runs and two extra processes: about a minute on 2 cores
def test_two_processes_end_with_the_archive_of_one(tmp_path):
    outs = [tmp_path / f"process{k}.npz" for k in range(2)]
    done = launch(2, tmp_path / "run", outs, GENERATIONS)
    for k, result in enumerate(done):
        assert result.returncode == 0, f"process {k}:\n{result.stderr[-4000:]}"
    one = run(GENERATIONS, tmp_path / "one")
    assert int(one["filled"]) >= 3
    for out in outs:
        with np.load(out) as many:
            assert sorted(many) == sorted(one)
            for name in one:
                np.testing.assert_array_equal(one[name], many[name], err_msg=name, strict=True)
    with (
        Ledger(tmp_path / "run" / "ledger.sqlite", readonly=True) as two,
        Ledger(tmp_path / "one" / "ledger.sqlite", readonly=True) as ref,
    ):
        assert two.last_generation() == ref.last_generation() == GENERATIONS
        a, b = list(two.iter_candidates()), list(ref.iter_candidates())
        assert [(r.program, r.status, r.fitness, r.accepted) for r in a] == [
            (r.program, r.status, r.fitness, r.accepted) for r in b
        ]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
