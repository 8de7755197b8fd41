"""The seed walkers of the ELM paper's Sodarace (Lehman et al. 2022, §4) as data.

``seed_walkers.json`` holds what the seed programs of :mod:`jelm.domains.sodarace.seeds`
build, in the paper's dict layout, so that the benchmark and the tests of this package
have the seeds without running programs of a domain (a test keeps the file equal to what
the programs build).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

FILE_NAME = "seed_walkers.json"


def seed_walkers() -> dict[str, dict[str, Any]]:
    """Every seed walker by name, in the seeds' order (a fresh copy on every call)."""
    text = resources.files(__package__).joinpath(FILE_NAME).read_text(encoding="utf-8")
    return {entry["name"]: entry["walker"] for entry in json.loads(text)}
