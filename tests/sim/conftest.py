"""Fixtures of the jelm.sim tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["native", pytest.param("xla", marks=pytest.mark.slow)])
def every_backend(request):
    """Runs a module's tests once per simulator backend (``$JELM_SIM_BACKEND``, read by
    :func:`jelm.sim.backends.resolve`): the native step, the CPU default, in the default
    pass, and the XLA step that accelerators use in the slow pass (the contract tests of
    ``test_backends.py`` compare the two in the default pass)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JELM_SIM_BACKEND", request.param)
        yield request.param
