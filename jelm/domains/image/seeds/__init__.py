"""Seed programs for the image domain: the pictures ELM starts from.

Each seed is a plain Python source file in this package defining ``draw()``, which
returns a ``SIZE`` x ``SIZE`` picture as rows of ``[r, g, b]`` pixels in ``[0, 1]``.
Seeds import nothing but ``math``, are deterministic and short: ``circle`` (OpenELM's
image seed: a yellow disc on black), ``gradient`` (a dark-blue-to-orange sky),
``stripes`` and ``checkerboard``.

The sources are package data (read with ``importlib.resources``), because what evolution
mutates is the program text. Every seed sets its size on one line, ``SIZE = 32``;
:func:`seed_source` rewrites that line for another size.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["SEED_NAMES", "SEED_SIZE", "seed_source"]

#: Every seed, simplest first.
SEED_NAMES: tuple[str, ...] = ("circle", "gradient", "stripes", "checkerboard")
#: The size the seeds are written for.
SEED_SIZE = 32
_SIZE_LINE = re.compile(rf"^SIZE = {SEED_SIZE}$", re.MULTILINE)


def seed_source(name: str, size: int = SEED_SIZE) -> str:
    """The source text of seed ``name`` (one of ``SEED_NAMES``) drawing ``size`` x ``size``."""
    if name not in SEED_NAMES:
        raise ValueError(f"unknown seed {name!r}; valid seeds: {', '.join(SEED_NAMES)}")
    text = resources.files(__name__).joinpath(f"{name}.py").read_text(encoding="utf-8")
    text, n = _SIZE_LINE.subn(f"SIZE = {int(size)}", text, count=1)
    if n != 1:
        raise ValueError(f"seed {name!r} has no line 'SIZE = {SEED_SIZE}'")
    return text
