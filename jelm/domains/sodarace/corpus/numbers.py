"""Parameter edits of the corpus (ELM arXiv 2206.08896v1, §3.1, §4): new values for the
literals of a walker program, written in their style.

The kinds of the "Changed parameters" and "Small change" messages: ``tweak_number``,
``scale_number``, ``flip_sign``, ``sweep_amplitudes``, ``sweep_phases``,
``sweep_constants``, ``sweep_statement``, ``change_count``. Each takes the parent and the
generator and returns text edits, or ``None`` when the parent has no site for it.
"""

from __future__ import annotations

import numpy as np

from jelm.domains.sodarace.corpus.base import Edits, pick
from jelm.domains.sodarace.corpus.program import Program
from jelm.programs.edits import Number, number_edits

__all__ = [
    "FACTORS",
    "change_count",
    "clamp",
    "flip_sign",
    "is_amp",
    "is_phase",
    "scale_number",
    "sweep_amplitudes",
    "sweep_constants",
    "sweep_phases",
    "sweep_statement",
    "tunable",
    "tweak_number",
    "values_edits",
]

#: Factors of ``scale_number`` (and of a copied statement's number).
FACTORS = (0.25, 0.5, 0.6, 0.7, 0.75, 1.3, 1.4, 1.5, 2.0, 3.0)

# odds of a literal being the one edited, by role (others are never tuned)
_ROLE_WEIGHT = {"const": 3.0, "amp": 2.0, "phase": 2.0, "coord": 2.0, "other": 1.0}


def tunable(nums: list[Number]) -> list[Number]:
    """The literals a parameter edit may change (not ``range`` bounds or indices)."""
    return [n for n in nums if n.role in _ROLE_WEIGHT]


def _pick_num(rng: np.random.Generator, nums: list[Number]) -> Number:
    return pick(rng, nums, [_ROLE_WEIGHT[n.role] for n in nums])


def is_phase(n: Number) -> bool:
    """A phase argument, or a constant named like one (``*PHASE*``, ``*OFFSET*``, ``WAVE``)."""
    up = n.name.upper()
    return n.role == "phase" or (
        n.role == "const" and ("PHASE" in up or "OFFSET" in up or up == "WAVE")
    )


def is_amp(n: Number) -> bool:
    """An amplitude argument, or a constant named ``*AMPLITUDE*``."""
    return n.role == "amp" or (n.role == "const" and "AMPLITUDE" in n.name.upper())


def clamp(n: Number, value: float) -> float:
    """``value`` kept valid for ``n``: an amplitude within [-10, 10]."""
    if is_amp(n):
        return max(-10.0, min(10.0, value))
    return value


def values_edits(pairs: list[tuple[Number, float]]) -> Edits | None:
    """Text edits setting each literal to its new (clamped) value; ``None``: no change."""
    return number_edits([(n, clamp(n, v)) for n, v in pairs])


def _small_value(n: Number, rng: np.random.Generator) -> float:
    """A small change of ``n``: +-1 for an int, 5-25 % (or +-0.05..0.15 for a phase)."""
    v = n.value
    if n.is_int:
        return v + pick(rng, (-1, 1)) if abs(v) < 8 else v + pick(rng, (-2, -1, 1, 2))
    if is_phase(n) or v == 0:
        step = float(rng.uniform(0.05, 0.15))
        return v + step * pick(rng, (-1, 1))
    return v * (1 + float(rng.uniform(0.05, 0.25)) * pick(rng, (-1, 1)))


def tweak_number(p: Program, rng: np.random.Generator) -> Edits | None:
    nums = tunable(p.sites.nums)
    if not nums:
        return None
    n = _pick_num(rng, nums)
    return values_edits([(n, _small_value(n, rng))])


def scale_number(p: Program, rng: np.random.Generator) -> Edits | None:
    nums = [n for n in tunable(p.sites.nums) if n.value != 0]
    if not nums:
        return None
    n = _pick_num(rng, nums)
    if is_phase(n) and not n.is_int:
        return values_edits([(n, float(rng.integers(0, 20)) * 0.05)])
    return values_edits([(n, n.value * pick(rng, FACTORS))])


def flip_sign(p: Program, rng: np.random.Generator) -> Edits | None:
    nums = [n for n in tunable(p.sites.nums) if n.value != 0 and (not n.rhs or n.op_at >= 0)]
    if not nums:
        return None
    n = _pick_num(rng, nums)
    return values_edits([(n, -n.value)])


def _sweep(rng: np.random.Generator, group: list[Number], phase: bool = False) -> Edits | None:
    if not group:
        return None
    mode = int(rng.integers(2))
    if phase:
        shift = float(rng.integers(1, 20)) * 0.05
        pairs = [
            (n, (n.value + shift) % 1.0 if mode == 0 else float(rng.integers(0, 20)) * 0.05)
            for n in group
        ]
    else:
        f = float(rng.uniform(0.5, 1.6))
        pairs = [
            (n, n.value * (f if mode == 0 else float(rng.uniform(0.6, 1.5))))
            if not n.is_int
            else (n, n.value + pick(rng, (-1, 1)))
            for n in group
        ]
    return values_edits(pairs)


def sweep_amplitudes(p: Program, rng: np.random.Generator) -> Edits | None:
    return _sweep(rng, [n for n in p.sites.nums if is_amp(n) and n.value != 0])


def sweep_phases(p: Program, rng: np.random.Generator) -> Edits | None:
    return _sweep(rng, [n for n in p.sites.nums if is_phase(n)], phase=True)


def sweep_constants(p: Program, rng: np.random.Generator) -> Edits | None:
    consts = [n for n in p.sites.nums if n.role == "const" and n.value != 0]
    if len(consts) < 2:
        return None
    k = int(rng.integers(2, min(4, len(consts)) + 1))
    chosen = [consts[i] for i in sorted(rng.choice(len(consts), size=k, replace=False))]
    pairs = [
        (n, n.value + pick(rng, (-1, 1)) if n.is_int else n.value * float(rng.uniform(0.6, 1.5)))
        for n in chosen
    ]
    return values_edits(pairs)


def sweep_statement(p: Program, rng: np.random.Generator) -> Edits | None:
    by_stmt: dict[int, list[Number]] = {}
    for n in tunable(p.sites.nums):
        if not n.is_int and n.role != "const":
            by_stmt.setdefault(n.stmt, []).append(n)
    groups = [g for _, g in sorted(by_stmt.items()) if len(g) >= 2]
    if not groups:
        return None
    group = pick(rng, groups)
    return values_edits([(n, n.value * float(rng.uniform(0.7, 1.3))) for n in group])


def change_count(p: Program, rng: np.random.Generator) -> Edits | None:
    s = p.sites
    counts = [n for n in s.nums if n.role == "const" and n.is_int and n.name in s.range_names]
    if not counts:
        return None
    n = pick(rng, counts)
    new = max(1.0, n.value + pick(rng, (-2, -1, 1, 1, 2)))
    return values_edits([(n, new)])
