"""Joining the processes of a multi-host run: the ``distributed`` section of a run's
configuration and the environment, read into ``jax.distributed.initialize``'s arguments
(``jelm/qd/README.md``, "Many hosts").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from jelm.experiments.config import ConfigError, DistributedConfig

__all__ = ["first_host", "init_args", "start"]


def first_host(nodelist: str) -> str:
    """The first host name of a SLURM node list (``node[001-004,010],gpu2`` -> ``node001``)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ConfigError(f"cannot read a host name from SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix + re.split(r"[,-]", ranges)[0] if ranges else prefix


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def init_args(
    config: DistributedConfig, environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The keyword arguments of ``jax.distributed.initialize`` for this process, or
    ``None`` when the run is one process.

    Each value comes from ``config`` when set, else from ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, else from SLURM (``SLURM_NTASKS``,
    ``SLURM_PROCID``, the first host of ``SLURM_STEP_NODELIST`` or ``SLURM_JOB_NODELIST``
    at ``config.port``). One process in all (or nothing set) is a plain run;
    ``config.auto`` gives ``{}``: JAX detects everything (TPU pods). Each process sees
    every device of its machine unless ``JAX_LOCAL_DEVICE_IDS`` says which."""
    env = os.environ if environ is None else environ
    if config.auto:
        return {}
    slurm = "SLURM_PROCID" in env and "SLURM_NTASKS" in env
    count = config.num_processes
    if count is None and env.get("JAX_NUM_PROCESSES"):
        count = _int(env["JAX_NUM_PROCESSES"], "JAX_NUM_PROCESSES")
    if count is None and slurm:
        count = _int(env["SLURM_NTASKS"], "SLURM_NTASKS")
    if count is None or count == 1:
        return None
    index = config.process_id
    if index is None and env.get("JAX_PROCESS_ID"):
        index = _int(env["JAX_PROCESS_ID"], "JAX_PROCESS_ID")
    if index is None and slurm:
        index = _int(env["SLURM_PROCID"], "SLURM_PROCID")
    address = config.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if address is None and nodes:
        address = f"{first_host(nodes)}:{config.port}"
    problems = []
    if address is None:
        problems.append("no coordinator address (distributed.coordinator_address)")
    if index is None:
        problems.append("no process id (distributed.process_id)")
    elif not 0 <= index < count:
        problems.append(f"process id {index} is not in [0, {count})")
    if count < 1:
        problems.append(f"the process count must be at least 1, got {count}")
    if problems:
        raise ConfigError(f"a run of {count} processes needs: " + "; ".join(problems))
    return {
        "coordinator_address": address,
        "num_processes": count,
        "process_id": index,
        "initialization_timeout": config.timeout_s,
        # jelm has read the job; JAX's own SLURM detection would also pin each process
        # to the device numbered SLURM_LOCALID (JAX_LOCAL_DEVICE_IDS still does that)
        "cluster_detection_method": "deactivate",
    }


def start(config: DistributedConfig) -> bool:
    """Join the job's processes (once, before any JAX computation) when the run has
    several; CPU collectives go through gloo. Returns whether the run is multi-process."""
    import jax

    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    args = init_args(config)
    if args is None:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**args)
    return jax.process_count() > 1
