"""Fixtures of the jelm.lm.hf tests."""

from __future__ import annotations

import pytest

from jelm.lm.tokenizer import Tokenizer
from tests.lm.hf.common import TEXTS


@pytest.fixture(scope="package")
def tok() -> Tokenizer:
    """The byte-level BPE every checkpoint of these tests uses (trained once)."""
    return Tokenizer.train(TEXTS, vocab_size=300)
