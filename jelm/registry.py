"""Named registries: how jelm finds domains, operators and LM backends (ELM §3) by name.

A :class:`Registry` maps a name to an entry. An entry is registered as the object itself
or as a lazy ``"module:attribute"`` reference, which is imported on first use, so that
listing the names of a registry never loads JAX, transformers or a domain's simulator::

    OPERATORS = Registry("mutation operator")
    OPERATORS.register("gp", "jelm.mutation.gp:make_gp")     # lazy
    OPERATORS.get("gp")                                      # imports jelm.mutation.gp

An unknown name raises :class:`UnknownEntry` (a ``KeyError`` and a ``ValueError``) whose
message lists every registered name, so a typo in a configuration is one clear line.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "UnknownEntry", "load_reference"]


class UnknownEntry(KeyError, ValueError):
    """A name that no entry of a registry has; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def load_reference(reference: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names (imported now)."""
    module, sep, attribute = reference.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"{reference!r} is not a 'module:attribute' reference")
    value: Any = importlib.import_module(module)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


class Registry(Generic[T]):
    """Entries by name, each an object or a lazy ``"module:attribute"`` reference."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, entry: T | str | None = None) -> Any:
        """Register ``entry`` under ``name``; without ``entry``, a decorator that registers
        what it decorates. Registering a taken name with another entry raises
        ``ValueError`` (the same entry again is a no-op, so re-imports are harmless)."""
        if entry is None:

            def decorate(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorate
        old = self._entries.get(name)
        if old is not None and old is not entry and old != entry:
            raise ValueError(f"{self.kind} {name!r} is already registered ({old!r})")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (a lazy reference is imported and kept)."""
        try:
            entry = self._entries[name]
        except (KeyError, TypeError):
            raise UnknownEntry(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            ) from None
        if isinstance(entry, str):
            entry = load_reference(entry)
            self._entries[name] = entry
        return entry

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """``(name, entry)`` for every entry (lazy ones are imported)."""
        for name in self.names():
            yield name, self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
