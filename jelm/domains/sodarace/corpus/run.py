"""Running the corpus's programs (ELM arXiv 2206.08896v1, §3.1, §4): the walker each one
builds, and the names ``make_walker`` bound when it asked for the walker.

The programs are jelm's own (seeds and their edits), so they run in this process
(:mod:`jelm.programs.trusted`) with the real walker API, behind a wall-clock timer and a
``walker_creator`` capped at the limits' joint and link counts.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from jelm.domains.sodarace.api import DEFAULT_LIMITS, Joint, Walker, WalkerLimits, walker_creator
from jelm.domains.sodarace.program import PROGRAM
from jelm.programs.trusted import NoEntry, ProgramTimeout, TrustedRunner

__all__ = ["Outcome", "execute", "make_runner", "run_program"]

#: ``(walker, make_walker's names, "")``, or ``(None, None, reason)`` for a rejected program.
Outcome = tuple[Walker | None, dict[str, Any] | None, str]


class _TooBig(Exception):
    """A program added more joints or links than any valid walker has."""


class _Capture(walker_creator):
    """The real ``walker_creator``, capped, and recording ``make_walker``'s local names when
    it calls ``get_walker`` (so edits know which expressions are joints)."""

    limits: WalkerLimits = DEFAULT_LIMITS
    scope: dict[str, Any] | None = None

    def add_joint(self, x: float, y: float) -> Joint:
        if len(self._joints) > self.limits.max_joints:
            raise _TooBig("too many joints")
        return super().add_joint(x, y)

    def add_muscle(self, j0: Any, j1: Any, *args: Any, **kwargs: Any) -> None:
        if len(self._muscles) > self.limits.max_links:
            raise _TooBig("too many links")
        super().add_muscle(j0, j1, *args, **kwargs)

    def get_walker(self) -> Walker:
        frame = sys._getframe(1)
        if frame.f_code.co_name == PROGRAM.entry:
            _Capture.scope = dict(frame.f_locals)
        return super().get_walker()


def make_runner(timeout_s: float) -> TrustedRunner:
    """A runner of walker programs whose ``walker_creator`` is the capped, recording one."""
    return TrustedRunner(
        PROGRAM,
        api={"walker_creator": _Capture},
        timeout_s=timeout_s,
        module_name="jelm_corpus_program",
    )


def execute(code: types.CodeType, limits: WalkerLimits, runner: TrustedRunner) -> Outcome:
    """Run a compiled program's ``make_walker()`` and validate the walker; a rejection's
    reason is ``timeout``, ``no_make_walker``, ``error:<exception class>``,
    ``not_a_walker`` or ``invalid:<validation code>``."""
    _Capture.limits = limits
    _Capture.scope = None
    try:
        walker = runner.run(code)
    except ProgramTimeout:
        return None, None, "timeout"
    except NoEntry:
        return None, None, "no_make_walker"
    except _TooBig:
        return None, None, "invalid:too_big"
    except Exception as exc:  # the program's own error, recorded by class
        return None, None, f"error:{type(exc).__name__}"
    if not isinstance(walker, Walker):
        return None, None, "not_a_walker"
    try:
        walker.validate(limits)
    except Exception as exc:
        return None, None, f"invalid:{getattr(exc, 'code', type(exc).__name__)}"
    return walker, _Capture.scope, ""


def run_program(
    text: str, limits: WalkerLimits = DEFAULT_LIMITS, timeout_s: float = 1.0
) -> Walker | None:
    """The validated walker ``text``'s ``make_walker()`` builds, or ``None`` (in-process,
    for trusted programs: jelm's seeds and the corpus built from them)."""
    runner = make_runner(timeout_s)
    try:
        code = runner.compile(text)
    except SyntaxError:
        return None
    return execute(code, limits, runner)[0]
