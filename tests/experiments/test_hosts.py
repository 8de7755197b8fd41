"""Reading a multi-process run's ``distributed`` section and environment into the
arguments of ``jax.distributed.initialize``."""

from __future__ import annotations

import pytest

from jelm.experiments.config import RESUMABLE_KEYS, ConfigError, DistributedConfig, from_mapping
from jelm.experiments.hosts import first_host, init_args

SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "8",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_NODELIST": "gpu[017-020,031],cpu3",
}


def test_one_process_when_nothing_says_otherwise():
    assert init_args(DistributedConfig(), {}) is None
    assert init_args(DistributedConfig(), {"JAX_NUM_PROCESSES": "1"}) is None
    assert init_args(DistributedConfig(), {**SLURM, "SLURM_NTASKS": "1"}) is None


def test_the_section_gives_every_argument():
    config = DistributedConfig(
        coordinator_address="10.0.0.1:9999", num_processes=4, process_id=3, timeout_s=60
    )
    assert init_args(config, SLURM) == {
        "coordinator_address": "10.0.0.1:9999",
        "num_processes": 4,
        "process_id": 3,
        "initialization_timeout": 60,
        "cluster_detection_method": "deactivate",
    }


def test_jax_variables_then_slurm_fill_what_the_section_leaves_out():
    env = {"JAX_COORDINATOR_ADDRESS": "head:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    args = init_args(DistributedConfig(), env)
    assert args is not None
    assert (args["coordinator_address"], args["num_processes"], args["process_id"]) == (
        "head:1234",
        2,
        1,
    )
    args = init_args(DistributedConfig(port=7000), SLURM)
    assert args is not None
    assert (args["coordinator_address"], args["num_processes"], args["process_id"]) == (
        "gpu017:7000",
        8,
        5,
    )
    args = init_args(DistributedConfig(process_id=0), {**SLURM, "JAX_NUM_PROCESSES": "3"})
    assert args is not None and (args["num_processes"], args["process_id"]) == (3, 0)


def test_auto_leaves_everything_to_jax():
    assert init_args(DistributedConfig(auto=True), SLURM) == {}


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        (DistributedConfig(num_processes=2, process_id=0), {}, "no coordinator address"),
        (DistributedConfig(num_processes=2, coordinator_address="h:1"), {}, "no process id"),
        (DistributedConfig(num_processes=2, process_id=2, coordinator_address="h:1"), {}, "not in"),
        (DistributedConfig(), {"JAX_NUM_PROCESSES": "two"}, "must be an integer"),
    ],
)
def test_an_incomplete_job_is_a_config_error(config, env, message):
    with pytest.raises(ConfigError, match=message):
        init_args(config, env)


@pytest.mark.parametrize(
    ("nodes", "host"),
    [
        ("node001", "node001"),
        ("node001,host2", "node001"),
        ("node[001-015],host2", "node001"),
        ("node[007,009-015]", "node007"),
    ],
)
def test_first_host_of_a_slurm_node_list(nodes, host):
    assert first_host(nodes) == host


def test_the_section_is_part_of_the_configuration_but_not_of_the_run_identity():
    config = from_mapping({"mutation": "gp", "distributed": {"num_processes": 2}})
    assert config.distributed.num_processes == 2
    assert "distributed" in RESUMABLE_KEYS
    with pytest.raises(ConfigError, match="unknown distributed keys"):
        from_mapping({"mutation": "gp", "distributed": {"processes": 2}})
