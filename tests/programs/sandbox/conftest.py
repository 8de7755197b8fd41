"""Sandbox pools shared by the tests of one process (each starts real worker processes)."""

from __future__ import annotations

import warnings

import pytest

from jelm.domains.sodarace.domain import PROGRAM
from jelm.programs.sandbox import Sandbox, SandboxIsolationWarning
from tests.programs.sandbox.programs import HOSTILE, limits
from tests.programs.sandbox.toy import TOY


@pytest.fixture(scope="session")
def sb():
    """Sodarace programs, every layer on."""
    with Sandbox(program=PROGRAM, workers=2, limits=limits()) as s:
        yield s


@pytest.fixture(scope="session")
def os_only():
    """Sodarace programs with every import they want, the static guard and the audit hook
    off: what this pool stops, the OS layer alone stops."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SandboxIsolationWarning)
        with Sandbox(program=HOSTILE, workers=2, limits=limits(guard=False, audit_hook=False)) as s:
            yield s


@pytest.fixture(scope="session")
def toy():
    """The toy domain's programs (lists of numbers), every layer on."""
    with Sandbox(program=TOY, workers=1, limits=limits()) as s:
        yield s
