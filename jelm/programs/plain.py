"""Plain data as a program's result: the encoder of domains that need none of their own.

A domain's :class:`jelm.programs.spec.ProgramSpec` names the function the sandbox runs on
what a program returned (ELM, arXiv 2206.08896v1, §3: running the genotype gives the
phenotype). :func:`encode_plain` accepts JSON data only (numbers, strings, booleans,
``None``, lists, tuples and string-keyed dicts of them) and refuses anything else before
it is sent back. Standard library only: sandbox workers import it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["encode_plain"]

_ATOMS = (bool, int, float, str, type(None))


def encode_plain(value: Any, max_items: int | None = 100_000) -> Any:
    """``value`` as JSON data (tuples become lists). ``TypeError`` names the first value
    of another type; ``ValueError`` (with ``code``) refuses a non-finite number or more
    than ``max_items`` values in all."""
    budget = [max_items if max_items is not None else math.inf]

    def visit(v: Any, where: str) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise _refuse(f"more than {max_items} values", "too_large")
        if isinstance(v, _ATOMS):
            if isinstance(v, float) and not math.isfinite(v):
                raise _refuse(f"{where} is {v}", "non_finite")
            return v
        if isinstance(v, list | tuple):
            return [visit(x, f"{where}[{k}]") for k, x in enumerate(v)]
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"{where} has a key of type {type(k).__name__}, not str")
                out[k] = visit(x, f"{where}[{k!r}]")
            return out
        raise TypeError(f"{where} is a {type(v).__name__}, not plain data")

    return visit(value, "the result")


def _refuse(message: str, code: str) -> ValueError:
    exc = ValueError(message)
    exc.code = code  # type: ignore[attr-defined]
    return exc
