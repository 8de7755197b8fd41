"""The ELM loops on several devices: a short ``gp`` run (the host loop, evaluating through
the Sodarace domain) and a short ``direct`` run (the jitted device loop) on 4 forced CPU
devices in a subprocess end with the archive of one device, bit for bit."""

from __future__ import annotations

import pytest

from jelm.sim import shard
from tests.devices import DEVICES, assert_same, loop, on_devices


@pytest.mark.slow  # two whole runs and a second process: half a minute or more
@pytest.mark.parametrize("mutation", ["gp", "direct"])
def test_a_run_on_four_devices_ends_with_the_archive_of_one(mutation, tmp_path, monkeypatch):
    monkeypatch.setenv(shard.ENV, "0")  # the reference: the one-device code path
    one = loop(mutation)
    many = on_devices(f"loop.{mutation}", tmp_path)
    assert int(many["meta.devices"]) == DEVICES and int(many["meta.mesh"]) == DEVICES
    assert_same(one, many)
