"""Programs, specs and limits the sandbox tests share (Sodarace programs and hostile ones)."""

from __future__ import annotations

import dataclasses

from jelm.domains.sodarace.domain import PROGRAM
from jelm.programs.sandbox import Result, Sandbox, SandboxLimits

API = PROGRAM.api_module

WALKER = f"""
from {API} import walker_creator
import math

def make_walker():
    wc = walker_creator()
    js = [wc.add_joint(3 * math.cos(i), 3 + 3 * math.sin(i)) for i in range(6)]
    for i in range(6):
        wc.add_muscle(js[i], js[(i + 1) % 6])
    return wc.get_walker()
"""

#: An endless loop (its entry never returns).
LOOP = "def make_walker():\n    while True:\n        pass"


def body(code: str, imports: str = "") -> str:
    """A program whose make_walker runs ``code`` first, then returns a valid walker."""
    indented = "\n".join("    " + line for line in code.strip().splitlines())
    head = "def make_walker():\n" + indented
    return imports + "\n" + WALKER.replace("def make_walker():", head)


#: With the guard off, allowed imports only say what the workers pre-import (children have no
#: filesystem to import from): hostile programs get every tool they could want.
HOSTILE = dataclasses.replace(
    PROGRAM,
    allowed_imports=(
        *PROGRAM.allowed_imports,
        "os",
        "sys",
        "signal",
        "socket",
        "subprocess",
        "threading",
        "ctypes",
        "time",
    ),
)


def limits(**kw: object) -> SandboxLimits:
    """Test limits: a one-second timeout unless told otherwise."""
    return SandboxLimits(**{"timeout_s": 1.0, **kw})  # type: ignore[arg-type]


def by_name(sandbox: Sandbox, programs: dict[str, str]) -> dict[str, Result]:
    """Run named programs in one batch; their results by name."""
    names = list(programs)
    return dict(zip(names, sandbox.execute([programs[n] for n in names]), strict=True))
