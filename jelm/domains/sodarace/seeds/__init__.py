"""Seed programs for Sodarace: the walkers ELM starts from.

Each seed is a plain Python source file in this package defining ``make_walker()``,
which builds a walker with the paper's API (``jelm.domains.sodarace.api.walker_creator``)
and returns ``wc.get_walker()``. Seeds import only the walker API and ``math``, are
deterministic, and are written after the ELM paper's descriptions of its seeds
(Lehman et al., 2022, arXiv 2206.08896): square, radial, wheel, galloper, a CPPN with
fixed structure and a CPPN whose parts are separate, editable functions; ``runner`` is a
jelm addition (a multi-legged walker).

The sources are package data (read with ``importlib.resources``), because what evolution
mutates is the program text: ``seed_source`` returns it, ``seed_walker`` runs it.
"""

from __future__ import annotations

from importlib import resources

from jelm.domains.sodarace.api import DEFAULT_LIMITS, Walker, WalkerLimits
from jelm.domains.sodarace.program import PROGRAM
from jelm.programs.trusted import run_trusted

__all__ = ["SEED_NAMES", "seed_source", "seed_walker"]

#: Every seed, in the order of the paper's list (runner last).
SEED_NAMES: tuple[str, ...] = (
    "square",
    "radial",
    "wheel",
    "galloper",
    "cppn_fixed",
    "cppn_mutable",
    "runner",
)


def seed_source(name: str) -> str:
    """The source text of seed ``name`` (one of ``SEED_NAMES``)."""
    if name not in SEED_NAMES:
        raise ValueError(f"unknown seed {name!r}; valid seeds: {', '.join(SEED_NAMES)}")
    return resources.files(__name__).joinpath(f"{name}.py").read_text(encoding="utf-8")


def seed_walker(name: str, limits: WalkerLimits = DEFAULT_LIMITS) -> Walker:
    """Run seed ``name``'s ``make_walker()`` in this process and return the validated walker.

    Seeds are trusted code shipped with jelm (run by :mod:`jelm.programs.trusted`);
    untrusted programs go through ``jelm.programs.sandbox`` instead.
    """
    walker = run_trusted(
        seed_source(name), PROGRAM, file_name=f"<seed {name}>", module_name=f"jelm_seed_{name}"
    )
    if not isinstance(walker, Walker):
        raise TypeError(f"seed {name!r}: make_walker() returned {type(walker).__name__}")
    return walker.validate(limits)
