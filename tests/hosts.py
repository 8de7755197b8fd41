"""One process of a multi-process ELM run, for the tests: ``python -m tests.hosts INDEX
COUNT PORT RUN OUT GENERATIONS [MUTATION]`` joins a ``jax.distributed`` job of ``COUNT``
processes on ``localhost:PORT`` (CPU, gloo collectives), runs the test configuration with
``MUTATION`` (default ``gp``: the host loop; ``direct``: the device loop) in run directory
``RUN`` (written by process 0 only) and saves the final archive to ``OUT``
(:func:`archive_arrays`). :func:`launch` starts every process of such a job.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import jelm.sim  # noqa: F401  (pins XLA flags before the JAX backend starts)

ROOT = Path(__file__).resolve().parent.parent


def archive_arrays(state: Any, metrics: dict[str, Any]) -> dict[str, np.ndarray]:
    """The archive's fitnesses, descriptors, stored ids and genotypes, and its metrics."""
    import jax

    rep = state.repertoire
    out = {
        "fitness": np.asarray(rep.fitnesses),
        "descriptors": np.asarray(rep.descriptors),
        "filled": np.asarray(metrics["filled"]),
        "qd_score": np.asarray(metrics["qd_score"]),
    }
    for name, leaf in jax.tree_util.tree_leaves_with_path(rep.genotypes):
        out["genotype" + jax.tree_util.keystr(name)] = np.asarray(leaf)
    return out


def run(
    generations: int, out: Path, mutation: str = "gp", **distributed: Any
) -> dict[str, np.ndarray]:
    """A ``mutation`` run of the test configuration in run directory ``out``; its
    archive."""
    from jelm.experiments.config import DistributedConfig, from_mapping
    from jelm.experiments.hosts import start
    from jelm.experiments.run import evolve
    from tests.qd.test_loop import TINY

    start(DistributedConfig(**distributed))  # before building the domain touches JAX
    raw = {
        **TINY,
        "mutation": mutation,
        "generations": generations,
        "qd": {"grid": [10, 10, 10]},  # finer than TINY's: more cells to compare
        "distributed": distributed,
    }
    config = from_mapping(raw)
    _, _, state, metrics = evolve(config, out, log=str)
    return archive_arrays(state, metrics)


def free_port() -> int:
    """A TCP port nothing listens on now (the coordinator's)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


def launch(
    count: int,
    run_dir: Path,
    outs: list[Path],
    generations: int,
    timeout: float = 300,
    mutation: str = "gp",
) -> list[subprocess.CompletedProcess]:
    """Run every process of a ``count``-process job to the end; their results."""
    port = free_port()
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "JELM_SIM_THREADS": "1",
        # a cache of its own: processes of a job written beside the workers' own
        "JAX_COMPILATION_CACHE_DIR": str(run_dir.parent / "jax-cache"),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.hosts"]
            + [str(v) for v in (k, count, port, run_dir, outs[k], generations, mutation)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for k in range(count)
    ]
    done = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


if __name__ == "__main__":
    index, count, port = (int(v) for v in sys.argv[1:4])
    run_dir, out, generations = Path(sys.argv[4]), Path(sys.argv[5]), int(sys.argv[6])
    arrays = run(
        generations,
        run_dir,
        sys.argv[7] if len(sys.argv) > 7 else "gp",
        coordinator_address=f"localhost:{port}",
        num_processes=count,
        process_id=index,
        timeout_s=60,
    )
    np.savez(out, **arrays)
