"""Tests for jelm.domains.sodarace.limits: the limits a valid walker respects (§4)."""

from __future__ import annotations

import pickle

import pytest

from jelm.domains.sodarace.limits import DEFAULT_LIMITS, WalkerLimits


def test_default_limits_values():
    expected = WalkerLimits(
        max_links_per_joint=10,
        max_amplitude=10.0,
        min_joint_distance=0.1,
        max_joints=64,
        max_links=256,
        max_abs_coordinate=100.0,
    )
    assert expected == DEFAULT_LIMITS
    with pytest.raises(AttributeError, match="cannot assign to field 'max_joints'"):
        DEFAULT_LIMITS.max_joints = 3  # frozen
    assert pickle.loads(pickle.dumps(DEFAULT_LIMITS)) == DEFAULT_LIMITS
