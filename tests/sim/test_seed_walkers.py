"""The seed walkers shipped as data (jelm/sim/seed_walkers.json).

That the file equals what the seed programs build is checked beside the programs, in
``tests/domains/sodarace/test_seeds.py``.
"""

from __future__ import annotations

import numpy as np

from jelm.sim.seed_walkers import seed_walkers
from jelm.sim.walker import pack


def test_seven_seeds_in_the_papers_order_each_a_fresh_copy():
    seeds = seed_walkers()
    assert tuple(seeds) == (
        "square",
        "radial",
        "wheel",
        "galloper",
        "cppn_fixed",
        "cppn_mutable",
        "runner",
    )
    seeds["square"]["joints"].clear()
    assert len(seed_walkers()["square"]["joints"]) == 5


def test_every_seed_is_a_walker_the_simulator_packs():
    seeds = seed_walkers()
    batch = pack(list(seeds.values()))
    joints = np.asarray(batch.joint_mask).sum(axis=1)
    assert joints.tolist() == [len(w["joints"]) for w in seeds.values()]
