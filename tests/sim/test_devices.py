"""The simulator on several devices (jelm.sim.shard): ``evaluate`` and ``rollout`` spread
over 4 forced CPU devices in a subprocess equal one device bit for bit, on both backends;
and the option that keeps a batch on one device."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

import jelm.sim as sim
from jelm.sim import shard
from jelm.sim.seed_walkers import seed_walkers
from tests.devices import DEVICES, assert_same, on_devices, simulator


def _check(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(shard.ENV, "0")  # the reference: the one-device code path
    one = simulator(backend)
    many = on_devices(f"simulator.{backend}", tmp_path)
    assert int(many["meta.devices"]) == DEVICES
    assert int(many["meta.mesh"]) == DEVICES  # the rows really were spread
    assert int(one["meta.mesh"]) == 0
    assert_same(one, many)


@pytest.mark.slow  # a subprocess on four devices building the native step, ~15 s
def test_native_on_four_devices_is_bit_identical_to_one(tmp_path, monkeypatch):
    from jelm.sim import native

    if not native.available():
        pytest.skip(native.unavailable_reason())
    _check("native", tmp_path, monkeypatch)


@pytest.mark.slow
def test_xla_on_four_devices_is_bit_identical_to_one(tmp_path, monkeypatch):
    _check("xla", tmp_path, monkeypatch)


def test_sharding_is_on_by_default_and_turns_off(monkeypatch):
    monkeypatch.delenv(shard.ENV, raising=False)
    assert shard.enabled() and not shard.enabled(False)
    monkeypatch.setenv(shard.ENV, "0")
    assert not shard.enabled() and shard.enabled(True)
    assert shard.local_mesh() is None
    if len(jax.local_devices()) == 1:  # one device: the one-device code, whatever the option
        assert shard.local_mesh(True) is None


def test_padding_rounds_up_to_the_device_count_with_empty_rows():
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), (shard.AXIS,))
    assert shard.padded_rows(0, mesh) == 1 and shard.padded_rows(7, mesh) == 7
    batch = sim.pack([seed_walkers()["square"]] * 3)
    padded = shard.pad_rows(batch, 5)
    assert padded.batch_size == 5
    assert not np.asarray(padded.walker_mask)[3:].any()
    np.testing.assert_array_equal(np.asarray(padded.joints)[:3], np.asarray(batch.joints))
    stack = shard.pad_rows(sim.stack([sim.flat(), sim.hills()], np.array([0, 1])), 4, "edge")
    np.testing.assert_array_equal(np.asarray(stack.ground)[3], np.asarray(sim.hills().ground))
