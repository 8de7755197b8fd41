"""A second, toy domain for the sandbox's generic parts: programs return lists of numbers.

Its encoder, API and validator are imported by the sandbox workers like a real domain's
(standard library and :mod:`jelm.domains.base` only). A phenotype is exactly
:data:`LENGTH` finite numbers.
"""

from __future__ import annotations

import math
from typing import Any

from jelm.domains.base import PhenotypeError, ProgramSpec

#: How many numbers a valid phenotype has.
LENGTH = 3


def ramp(n: int) -> list[float]:
    """The API programs import: ``[0.0, 1.0, ..., n - 1]``."""
    return [float(i) for i in range(n)]


def encode_numbers(value: Any, options: dict[str, int]) -> list[float]:
    """Child side: a list of numbers as plain floats; far too long lists are refused."""
    if not isinstance(value, list):
        raise TypeError(f"make_numbers() returned {type(value).__name__}, not a list")
    if len(value) > options["max_length"]:
        raise PhenotypeError(f"{len(value)} numbers (max {options['max_length']})", "too_long")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise PhenotypeError("not all entries are numbers", "not_numbers")
    if any(v == 7 for v in value):
        raise ValueError("seven is unlucky")  # a ValueError without a code
    return [float(v) for v in value]


def validate_numbers(raw: Any) -> list[float]:
    """Parent side: exactly LENGTH finite numbers."""
    if type(raw) is not list or len(raw) != LENGTH:
        n = len(raw) if type(raw) is list else type(raw).__name__
        raise PhenotypeError(f"want {LENGTH} numbers, got {n}", "wrong_length")
    if not all(type(v) is float and math.isfinite(v) for v in raw):
        raise PhenotypeError("entries must be finite floats", "not_finite")
    return list(raw)


TOY = ProgramSpec(
    entry="make_numbers",
    file_name="numbers.py",
    validate=validate_numbers,
    encode="tests.programs.sandbox.toy:encode_numbers",
    encode_options={"max_length": 100},
    api_module="tests.programs.sandbox.toy",
    allowed_imports=("math",),
    module_aliases={
        "numbers_api": "tests.programs.sandbox.toy",
        "old_toy.numbers.api": "tests.programs.sandbox.toy",
    },
    phenotype="numbers",
)
