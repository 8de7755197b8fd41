"""The device loop in a run directory (jelm.qd.device with jelm.qd.run): a run stopped and
continued ends where an uninterrupted one ends, archive and ledger alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jelm.experiments.config import from_mapping
from jelm.experiments.run import evolve
from tests.qd.test_loop import TINY, _ledger_rows


def _go(path: Path, generations: int) -> np.ndarray:
    config = from_mapping(
        {**TINY, "mutation": "direct", "generations": generations, "checkpoint_every": 1}
    )
    _, _, state, _ = evolve(config, path, log=str)
    return np.asarray(state.repertoire.fitnesses[:, 0])


@pytest.mark.slow
def test_direct_run_resumes_identically(tmp_path: Path):
    whole = _go(tmp_path / "whole", 4)
    _go(tmp_path / "parts", 2)
    parts = _go(tmp_path / "parts", 4)
    np.testing.assert_array_equal(whole, parts)
    assert _ledger_rows(tmp_path / "whole") == _ledger_rows(tmp_path / "parts")
    rows = _ledger_rows(tmp_path / "whole")
    assert len(rows) == 2 + 4 * 8
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
