"""Packing walkers into padded batches (jelm.sim.walker): seeds, errors, active links."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from jelm.sim.walker import BucketShape, WalkerDoesNotFit, pack
from tests.sim.helpers import BONE, SEED_NAMES, SEEDS, braced_square

SMALL = BucketShape(8, 16, 4)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_packs(name):
    batch = pack([SEEDS[name]])
    assert int(np.asarray(batch.joint_mask).sum()) == len(SEEDS[name]["joints"])
    assert int(np.asarray(batch.link_mask).sum()) == len(SEEDS[name]["muscles"])
    assert np.asarray(batch.muscle).sum() == sum(
        link[2]["type"] == "muscle" for link in SEEDS[name]["muscles"]
    )


def test_pack_errors_name_the_walker_and_reason():
    big = {"joints": [[float(k), 0.0] for k in range(10)], "muscles": [[0, 1, dict(BONE)]]}
    with pytest.raises(WalkerDoesNotFit, match=r"walker 1: 10 joints exceed the cap of 8") as e:
        pack([SEEDS["square"], big], SMALL)
    assert e.value.index == 1
    hub = {
        "joints": [[0.0, 0.0]] + [[math.cos(a), math.sin(a)] for a in np.linspace(0, 3, 5)],
        "muscles": [[0, k, dict(BONE)] for k in range(1, 6)],
    }
    with pytest.raises(WalkerDoesNotFit, match=r"walker 2: a joint has 5 links") as e:
        pack([SEEDS["square"], braced_square(), hub], SMALL)
    assert e.value.index == 2
    many = {
        "joints": [[float(k), float(k % 2)] for k in range(8)],
        "muscles": [[k, (k + d) % 8, dict(BONE)] for d in (1, 2, 3) for k in range(8)][:17],
    }
    with pytest.raises(WalkerDoesNotFit, match=r"walker 0: 17 links exceed the cap of 16") as e:
        pack([many], BucketShape(8, 16, 10))
    assert e.value.index == 0


def test_links_past_the_joints_are_not_active_and_have_no_length():
    """A hand-edited batch whose links point past the row's joints (pack never makes
    one): those links are not active and their rest length is 0, as for padding."""
    batch = pack([SEEDS["square"]], SMALL)
    assert np.asarray(batch.active_links).tolist() == np.asarray(batch.link_mask).tolist()
    bad = dataclasses.replace(
        batch,
        link_i=batch.link_i.at[0, 0].set(10_000),
        link_j=batch.link_j.at[0, 1].set(-5),
    )
    active = np.asarray(bad.active_links)[0]
    assert not active[0] and not active[1] and active[2:8].all() and not active[8:].any()
    rest = np.asarray(bad.rest_lengths)[0]
    assert rest[0] == rest[1] == 0.0
    np.testing.assert_array_equal(rest[2:], np.asarray(batch.rest_lengths)[0, 2:])
