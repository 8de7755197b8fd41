"""Command-line options from a configuration dataclass, so each default is written once
(in the dataclass) for the commands that train and run models (ELM §3.1, §5)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Collection
from typing import Any

__all__ = ["add_options", "values_of"]


def add_options(parser: argparse.ArgumentParser, cls: type, skip: Collection[str] = ()) -> None:
    """One ``--field-name`` option per field of dataclass ``cls`` (except ``skip``), typed
    and defaulted as the field's default value is."""
    defaults = cls()
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        value = getattr(defaults, field.name)
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(value), default=value)


def values_of(cls: type, args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of ``cls`` from parsed ``args``; ``overrides`` replace some."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in overrides
    }
    return {**values, **overrides}
