"""What the tests of jelm.programs.diff share: a seed program and a failure-kind probe."""

from __future__ import annotations

import pytest

from jelm.domains.sodarace.seeds import seed_source
from jelm.programs.diff import DiffError, apply_diff

SQUARE = seed_source("square")


def kind_of(source: str, diff: str, **kw) -> str:
    """The ``DiffError`` kind of applying ``diff`` to ``source`` (which must fail)."""
    with pytest.raises(DiffError) as info:
        apply_diff(source, diff, **kw)
    return info.value.kind
