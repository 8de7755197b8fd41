"""The program's side of the sandbox: compile a program, run its entry, encode the value.

In ELM (§3) a program is a genotype and what its entry function returns, encoded by the
domain (``ProgramSpec.encode``), is its phenotype. :class:`Runner` parses, guards and
compiles a program in the worker's manager process (no program code runs there), and in a
forked, already restricted child executes it, calls the entry, encodes the value and
writes one JSON record (:func:`jelm.programs.sandbox.wire.record`). Every failure the
program can cause becomes a record: the parent trusts none of it and re-validates the
value. Standard library only.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from jelm.programs.sandbox.guard import (
    STATE,
    audit_hook,
    check_tree,
    make_builtins,
    safe_str,
    type_name,
)
from jelm.programs.sandbox.seccomp import ERRNO_BASE, syscall_name
from jelm.programs.sandbox.wire import (
    EXIT_HARNESS_ERROR,
    EXIT_NO_MEMORY,
    INVALID,
    WorkerConfig,
    record,
)

__all__ = ["Runner"]

#: Per-child output state (see :data:`jelm.programs.sandbox.guard.STATE`).
_OUTPUT: dict[str, bool] = {"overflow": False}

#: Built once (in the worker, before any fork): ``json.dumps`` with options builds a new
#: encoder per call, and every object that touches is a page a child would copy.
_ENCODER = json.JSONEncoder(allow_nan=False, default=safe_str)


class _OutputTooLarge(BaseException):
    """Raised when a program prints more than the output cap (not catchable as Exception)."""


class _CappedWriter:
    """Stand-in for ``sys.stdout``/``sys.stderr`` that counts and drops, up to a cap."""

    def __init__(self, cap: int) -> None:
        self._left = cap

    def write(self, s: Any) -> int:
        n = len(s) if isinstance(s, str | bytes) else 0
        self._left -= n
        if self._left < 0:
            _OUTPUT["overflow"] = True
            raise _OutputTooLarge("program output exceeds the cap")
        return n

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


def _too_much_output() -> dict[str, Any]:
    return record("output_too_large", "program printed more than the output cap", "stdout")


def _no_memory() -> dict[str, Any]:
    return record(
        "memory_limit", "MemoryError: the program exceeded its memory limit", "MemoryError"
    )


class Runner:
    """Compiles programs (in the manager) and runs them (in the children) for one worker.

    Args:
        cfg: the worker's configuration (entry, imports, limits, guards).
        modules: the pre-imported module of every importable name and parent package.
        encode: the spec's encoder, ``encode(value, cfg.encode_options)``.
    """

    def __init__(
        self, cfg: WorkerConfig, modules: Mapping[str, Any], encode: Callable[[Any, Any], Any]
    ) -> None:
        self.cfg = cfg
        self.importable = frozenset(cfg.importable)
        self.encode = encode
        self.builtins = make_builtins(self.importable, modules) if cfg.guard else None

    # -- in the manager -------------------------------------------------------------------

    def prepare(self, source: Any) -> tuple[Any, dict[str, Any] | None]:
        """Parse, guard and compile; return ``(code, None)`` or ``(None, record)``."""
        cfg = self.cfg
        if not isinstance(source, str):
            return None, record("wrong_type", "program is not a str", "source")
        if len(source) > cfg.max_source_chars:
            return None, record(
                "forbidden",
                f"program has {len(source)} characters (max {cfg.max_source_chars})",
                "source_too_large",
            )
        try:
            tree = ast.parse(source, "<program>")
            if cfg.guard:
                reason = check_tree(tree, self.importable)
                if reason:
                    return None, record("forbidden", f"static guard: {reason}", reason)
            return compile(tree, "<program>", "exec"), None
        except SyntaxError as exc:
            msg = f"{type(exc).__name__}: {exc.msg} (line {exc.lineno})"
            return None, record("syntax_error", msg, type(exc).__name__)
        except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
            return None, record(
                "syntax_error", f"{type(exc).__name__}: {safe_str(exc)}", type(exc).__name__
            )

    # -- in the child ---------------------------------------------------------------------

    def run(self, code: Any) -> dict[str, Any] | bytes:
        """Run one compiled program's entry in the (restricted) child; return its record.

        A value the encoder accepts comes back as the finished JSON bytes; everything else
        as a record dict. ``TypeError`` from the encoder is ``wrong_type``, ``ValueError``
        (with an optional ``code``) an invalid phenotype.
        """
        cfg = self.cfg
        sys.stdout = sys.stderr = _CappedWriter(cfg.max_output_bytes)  # type: ignore[assignment]
        g: dict[str, Any] = {"__builtins__": self.builtins or builtins, "__name__": "__program__"}
        entry = cfg.entry
        try:
            if cfg.audit_hook:
                sys.addaudithook(audit_hook)
            exec(code, g)
            fn = g.get(entry)
            if not callable(fn):
                return record(
                    "exception",
                    f"NameError: the program defines no callable {entry!r}",
                    "NameError",
                )
            value = fn()
            late = self._late_failure()
            if late is not None:
                return late
            try:
                plain = self.encode(value, cfg.encode_options)
            except TypeError as exc:
                return record("wrong_type", safe_str(exc), type_name(value))
            except ValueError as exc:
                return record(INVALID, safe_str(exc), safe_str(getattr(exc, "code", "invalid"), 80))
            try:
                return _ENCODER.encode(record("ok", value=plain)).encode()
            except ValueError as exc:  # a non-finite number, a circular reference
                return record(INVALID, f"not plain data: {safe_str(exc)}", "not_json")
        except _OutputTooLarge:
            return _too_much_output()
        except MemoryError:
            return _no_memory()
        except BaseException as exc:  # untrusted code: classify everything
            return self._classify_exception(exc)

    @staticmethod
    def _late_failure() -> dict[str, Any] | None:
        """An output overflow or a refusal the program swallowed, if any."""
        if _OUTPUT["overflow"]:
            return _too_much_output()
        if STATE["refused"]:
            first = STATE["refused"][0]
            return record("forbidden", f"operation refused: {first}", first)
        return None

    def _classify_exception(self, exc: BaseException) -> dict[str, Any]:
        late = self._late_failure()
        if late is not None:
            return late
        err = exc.errno if isinstance(exc, OSError) else None
        if isinstance(err, int) and ERRNO_BASE <= err < ERRNO_BASE + 1024:
            name = syscall_name(err - ERRNO_BASE)
            return record("forbidden", f"system call {name!r} refused by seccomp", name)
        if err == 27:  # EFBIG: RLIMIT_FSIZE (CPython ignores SIGXFSZ, so write() fails)
            return record(
                "output_too_large", "wrote a file larger than the file size limit", "file_size"
            )
        if isinstance(exc, MemoryError):
            return _no_memory()
        tname = type_name(exc)
        where = ""
        try:
            tb = exc.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == "<program>":
                    where = f" (line {tb.tb_lineno})"
                tb = tb.tb_next
        except BaseException:
            pass
        return record("exception", f"{tname}: {safe_str(exc)}{where}", tname)

    def finish(self, code: Any, wfd: int) -> NoReturn:
        """The rest of a child's life: run, write the record to ``wfd``, ``_exit``."""
        try:
            rec = self.run(code)
            data = rec if isinstance(rec, bytes) else _ENCODER.encode(rec).encode()
            if len(data) > self.cfg.max_output_bytes:
                msg = f"result of {len(data)} bytes exceeds the cap"
                data = json.dumps(record("output_too_large", msg, "result")).encode()
            view = memoryview(data)
            while view:
                n = os.write(wfd, view)
                view = view[n:]
        except MemoryError:
            os._exit(EXIT_NO_MEMORY)
        except BaseException:
            os._exit(EXIT_HARNESS_ERROR)
        os._exit(0)
