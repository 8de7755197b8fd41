"""What the comparison scripts in experiments/ share: one Sodarace run, and a table cell.

A comparison runs the main job (``jelm.experiments.run.run``) once per seed, operator
and random seed at one budget, keeps each run's per-generation metrics under
``experiments/results/`` and throws the run directory away (ledgers are large).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before JAX starts)
from jelm.experiments.config import from_mapping
from jelm.experiments.run import run

HERE = Path(__file__).resolve().parent


def run_once(
    settings: dict[str, Any],
    out: Path,
    results_name: str,
    inspect: Callable[[Path], Any] | None = None,
) -> tuple[list[dict], float, Any]:
    """Run the main job with ``settings`` (no renders, no progress bar, one checkpoint at
    the end) in ``out``; copy its metrics to ``results/<results_name>.jsonl``, delete
    ``out``. Returns the per-generation metrics, the end-to-end candidates/s (sandbox
    start, compilation and plots included) and what ``inspect(out)`` found before the
    run directory went.

    The run's compiled programs are dropped at the end (``jax.clear_caches``): a process
    that runs many comparisons would otherwise keep every sampler shape of every run
    loaded, each with its memory mappings, until the kernel's limit
    (``vm.max_map_count``) stops XLA. The next run loads the shapes it shares from the
    persistent compilation cache instead of compiling them again.
    """
    config = from_mapping(
        {
            "renders": 0,
            "progress": False,
            "checkpoint_every": settings["generations"],
            **settings,
        }
    )
    try:
        summary = run(config, out)
    finally:
        jax.clear_caches()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    found = inspect(out) if inspect is not None else None
    (HERE / "results").mkdir(exist_ok=True)
    shutil.copy(out / "metrics.jsonl", HERE / "results" / f"{results_name}.jsonl")
    shutil.rmtree(out)
    return rows, summary["evaluations"] / summary["elapsed_s"], found


def cell(values: list[float], fmt: str = "{:.1f}") -> str:
    """``mean +- std`` of a table cell."""
    return f"{fmt.format(np.mean(values))} +- {fmt.format(np.std(values))}"
