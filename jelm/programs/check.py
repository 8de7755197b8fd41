"""What reading a program, without running it, says it will fail on.

An operator that samples children (``lm_diff``) can ask again for a child that cannot run
before it spends an evaluation on it (ELM, arXiv 2206.08896v1, §3.1: every child is run
in the sandbox; a check costs microseconds, a sandbox run tens of milliseconds and a
simulation a slot of the batch). :func:`static_problem` finds the two failures a reader
can be sure of: the program does not parse, or it uses a name that nothing defines
(pyflakes' undefined names: a helper the model made up, a variable of another program).
Everything else (wrong arguments, a walker that breaks the domain's rules) is left to the
sandbox and the domain. The check never runs the program: ``ast`` parses it and pyflakes
walks the tree.
"""

from __future__ import annotations

import ast
import warnings

from pyflakes import checker, messages

__all__ = ["static_problem"]

_UNDEFINED = (messages.UndefinedName, messages.UndefinedLocal)


def static_problem(program: str, file_name: str = "program.py") -> str | None:
    """Why ``program`` cannot run, as far as reading it tells (``"SyntaxError: ... (line
    n)"`` or ``"undefined name 'x' (line n)"``), or ``None`` when reading finds nothing.

    A name counts as undefined when no binding of the program or of Python's builtins can
    give it a value (``from m import *`` makes every name possibly defined). The program
    is parsed, never executed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(program, filename=file_name)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        return f"{type(exc).__name__}: {getattr(exc, 'msg', exc)}{where}"
    for message in checker.Checker(tree, filename=file_name).messages:
        if isinstance(message, _UNDEFINED):
            return f"undefined name {message.message_args[0]!r} (line {message.lineno})"
    return None
