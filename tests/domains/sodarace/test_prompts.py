"""Tests for jelm.domains.sodarace.prompts: the diff model's commit messages (ELM §3.1)."""

from __future__ import annotations

import numpy as np
import pytest

from jelm.domains.sodarace.prompts import COMMIT_MESSAGES, PROMPTS
from jelm.programs.diff import sample_message


def test_commit_messages_and_odds():
    assert [m for m, _ in COMMIT_MESSAGES] == [
        "Changed make_walker function.",
        "Changed parameters in make_walker function.",
        "Small change to make_walker function.",
    ]
    assert sum(w for _, w in COMMIT_MESSAGES) == pytest.approx(1.0)
    assert PROMPTS.commit_messages == COMMIT_MESSAGES


def test_sampled_messages_come_at_40_30_30():
    rng = np.random.default_rng(1234)
    n = 10_000
    draws = [sample_message(rng, COMMIT_MESSAGES) for _ in range(n)]
    for message, weight in zip(COMMIT_MESSAGES, (0.4, 0.3, 0.3), strict=True):
        assert abs(draws.count(message[0]) / n - weight) < 0.02, message
