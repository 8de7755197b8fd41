"""The corpus's edit kinds, grouped by ELM commit message (ELM arXiv 2206.08896v1, §3.1).

Each message class has relative odds for its kinds; :data:`KINDS` maps every kind to its
message. :func:`edit_text` applies one edit of a kind to a program's text; ``compound``
is two edits of other kinds in one commit, the second made on the first's result.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import numpy as np

from jelm.domains.sodarace.api import WalkerLimits
from jelm.domains.sodarace.corpus import numbers, structure
from jelm.domains.sodarace.corpus.base import Edits, pick
from jelm.domains.sodarace.corpus.program import Program
from jelm.domains.sodarace.prompts import MSG_PARAMS, MSG_SMALL, MSG_STRUCT
from jelm.programs.edits import splice

__all__ = ["CLASSES", "KINDS", "edit_text"]

_STRUCT_WEIGHTS = {
    "add_limb": 2.0,
    "add_link": 1.5,
    "add_loop_links": 1.0,
    "remove_muscle": 1.0,
    "remove_call": 0.5,
    "duplicate_statement": 1.0,
    "edit_helper": 1.5,
    "change_loop_bound": 1.0,
    "swap_passive": 1.0,
    "phase_expression": 0.5,
    "compound": 1.0,
}
_PARAMS_WEIGHTS = {
    "scale_number": 1.0,
    "flip_sign": 0.5,
    "sweep_amplitudes": 1.0,
    "sweep_phases": 1.0,
    "sweep_constants": 1.0,
    "sweep_statement": 1.0,
    "change_count": 0.7,
}
_SMALL_WEIGHTS = {"tweak_number": 1.0}

#: ``(commit message, {kind: relative odds})`` for each message class.
CLASSES: tuple[tuple[str, dict[str, float]], ...] = (
    (MSG_STRUCT, _STRUCT_WEIGHTS),
    (MSG_PARAMS, _PARAMS_WEIGHTS),
    (MSG_SMALL, _SMALL_WEIGHTS),
)

#: Every edit kind and the ELM commit message it is trained with.
KINDS: dict[str, str] = {k: msg for msg, weights in CLASSES for k in weights}

_EditFn = Callable[[Program, np.random.Generator, WalkerLimits], "Edits | None"]


def _any_limits(fn: Callable[[Program, np.random.Generator], Edits | None]) -> _EditFn:
    return lambda p, rng, limits: fn(p, rng)


# every kind but compound
_FNS: dict[str, _EditFn] = {
    "tweak_number": _any_limits(numbers.tweak_number),
    "scale_number": _any_limits(numbers.scale_number),
    "flip_sign": _any_limits(numbers.flip_sign),
    "sweep_amplitudes": _any_limits(numbers.sweep_amplitudes),
    "sweep_phases": _any_limits(numbers.sweep_phases),
    "sweep_constants": _any_limits(numbers.sweep_constants),
    "sweep_statement": _any_limits(numbers.sweep_statement),
    "change_count": _any_limits(numbers.change_count),
    "add_limb": structure.add_limb,
    "add_link": structure.add_link,
    "add_loop_links": _any_limits(structure.add_loop_links),
    "remove_muscle": _any_limits(structure.remove_muscle),
    "remove_call": _any_limits(structure.remove_call),
    "duplicate_statement": _any_limits(structure.duplicate_statement),
    "edit_helper": _any_limits(structure.edit_helper),
    "change_loop_bound": _any_limits(structure.change_loop_bound),
    "swap_passive": _any_limits(structure.swap_passive),
    "phase_expression": _any_limits(structure.phase_expression),
}


def _first_edit(
    p: Program, kinds: list[str], rng: np.random.Generator, limits: WalkerLimits
) -> str | None:
    """The first of up to four random kinds from ``kinds`` that finds a site in ``p``."""
    for _ in range(4):
        text = edit_text(p, pick(rng, kinds), rng, limits)
        if text is not None and text != p.text:
            return text
    return None


def edit_text(p: Program, kind: str, rng: np.random.Generator, limits: WalkerLimits) -> str | None:
    """The text of ``p`` after one edit of ``kind``, or ``None`` (no site)."""
    if kind == "compound":  # two edits of other kinds, the second on the first's result
        simple = [k for k in KINDS if k != "compound"]
        first = _first_edit(p, simple, rng, limits)
        if first is None:
            return None
        try:
            tree = ast.parse(first)
        except SyntaxError:
            return None
        mid = Program(first, tree, p.walker, None, p.depth)
        mid.forget_joints()  # the parent's joint names may have moved: no joint edits
        return _first_edit(mid, simple, rng, limits)
    edits = _FNS[kind](p, rng, limits)
    if not edits:
        return None
    return splice(p.text, edits)
