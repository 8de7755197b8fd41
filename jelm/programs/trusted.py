"""Run jelm's own, trusted programs in this process (ELM arXiv 2206.08896v1, §3.1, §4).

Seed programs and the children of the diff model's synthetic corpus are written by jelm,
so they run here instead of in the sandbox's processes: compiled, executed in a fresh
namespace and the domain's entry function called (:class:`TrustedRunner`). Programs from
a language model or GP are untrusted and go through :mod:`jelm.programs.sandbox`.

A run may be bounded in wall-clock time (``SIGALRM``, in the main thread only), and may
see some names of the domain's API module replaced (``api``): a program's
``from <api module> import name`` (or from one of its aliases) then gets the replacement,
so a caller can, e.g., cap or record what a program builds.
"""

from __future__ import annotations

import builtins
import importlib
import signal
import threading
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jelm.programs.spec import ProgramSpec

__all__ = ["NoEntry", "ProgramTimeout", "TrustedRunner", "run_trusted"]


class NoEntry(TypeError):
    """The program defines no callable entry function."""


class ProgramTimeout(TimeoutError):
    """The program ran past the runner's ``timeout_s``."""


class _Expired(BaseException):
    """Raised inside the program by the timer (a BaseException, so that the program's own
    ``except Exception`` cannot swallow it)."""


class _Alarm:
    """A one-shot ``SIGALRM`` timer around one run; no timer outside the main thread or
    for ``seconds <= 0``."""

    __slots__ = ("active", "armed", "old", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.active = False  # the handler is installed
        self.armed = False  # the handler may raise
        self.old: Any = None

    def _fire(self, signum: int, frame: Any) -> None:
        if self.armed:
            raise _Expired

    def __enter__(self) -> _Alarm:
        if self.seconds > 0 and threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGALRM, self._fire)
            self.active = self.armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if self.active:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            # None: the old handler was not installed from Python
            signal.signal(signal.SIGALRM, signal.SIG_DFL if self.old is None else self.old)
            self.active = False
        if kind is _Expired:
            raise ProgramTimeout(f"the program ran longer than {self.seconds} s") from None
        return False


class TrustedRunner:
    """Runs programs of one domain in this process and returns what their entry returns.

    Args:
        spec: the domain's :class:`~jelm.programs.spec.ProgramSpec` (``entry``,
            ``api_module``, ``module_aliases``, ``file_name``).
        api: names replaced in the API module for these runs (``from <api module> import
            name`` gets them; every other name is the module's own).
        timeout_s: wall-clock limit of one run (main thread only; ``<= 0``: none).
        module_name: the programs' ``__name__``.

    The program's own exceptions propagate; a program without its entry function raises
    :class:`NoEntry`, one that runs too long :class:`ProgramTimeout`.
    """

    def __init__(
        self,
        spec: ProgramSpec,
        *,
        api: Mapping[str, Any] | None = None,
        timeout_s: float = 0.0,
        module_name: str = "jelm_trusted_program",
    ) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self.module_name = module_name
        self._builtins: dict[str, Any] = dict(builtins.__dict__)
        modules: dict[str, types.ModuleType] = {}
        if spec.api_module is not None:
            real = importlib.import_module(spec.api_module)
            module = real
            if api:
                module = types.ModuleType(real.__name__, real.__doc__)
                module.__dict__.update(real.__dict__)
                module.__dict__.update(api)
            modules[spec.api_module] = module
            for alias, target in spec.module_aliases.items():
                if target == spec.api_module:
                    modules[alias] = module
        elif api:
            raise ValueError("api replacements need a ProgramSpec with an api_module")
        self._modules = modules
        if modules:
            self._builtins["__import__"] = self._import

    def _import(
        self,
        name: str,
        globals_: Any = None,
        locals_: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        if fromlist and not level:
            module = self._modules.get(name)
            if module is not None:
                return module
        return builtins.__import__(name, globals_, locals_, fromlist, level)

    def compile(self, program: str, file_name: str | None = None) -> types.CodeType:
        """``program`` compiled (raises ``SyntaxError``, ``ValueError`` for NUL bytes)."""
        return compile(program, file_name or self.spec.file_name, "exec")

    def run(self, program: str | types.CodeType, file_name: str | None = None) -> Any:
        """Execute ``program`` (text or :meth:`compile`'s code) in a fresh namespace and
        return what its entry function returns."""
        code = program if isinstance(program, types.CodeType) else self.compile(program, file_name)
        namespace: dict[str, Any] = {"__name__": self.module_name, "__builtins__": self._builtins}
        entry = self.spec.entry
        with _Alarm(self.timeout_s):
            exec(code, namespace)
            fn = namespace.get(entry)
            if not callable(fn):
                raise NoEntry(f"{code.co_filename} defines no {entry}()")
            return fn()


def run_trusted(
    program: str,
    spec: ProgramSpec,
    *,
    file_name: str | None = None,
    timeout_s: float = 0.0,
    module_name: str = "jelm_trusted_program",
) -> Any:
    """Run one trusted ``program`` of the domain ``spec`` describes (see
    :class:`TrustedRunner`) and return what its entry function returns."""
    runner = TrustedRunner(spec, timeout_s=timeout_s, module_name=module_name)
    return runner.run(program, file_name)
