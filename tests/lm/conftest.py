"""Fixtures shared by the jelm.lm tests."""

from __future__ import annotations

import pytest

from tests.lm_fixtures import BACKEND_TEXTS, make_tiny_model


@pytest.fixture(scope="session")
def backend_model_dir(tmp_path_factory):
    """A tiny random jelm model directory (context 64) for the backend tests."""
    path = tmp_path_factory.mktemp("tiny_model")
    return make_tiny_model(path, seed=0, n_ctx=64, vocab_size=300, texts=BACKEND_TEXTS)
