"""Mutation operators of the ELM loop (ELM, arXiv 2206.08896v1, §3.1, §3.3, §4.2).

:data:`OPERATORS` holds every operator by name: the program operators ``gp``
(:mod:`jelm.mutation.gp`), ``lm_diff``, ``lm_prompt`` and ``lm_crossover``
(:mod:`jelm.lm.operators`) work on every domain; a domain adds its own (Sodarace
registers ``direct`` when it is loaded). :func:`make_operator` builds one
for a domain from its configuration section. This package knows nothing of ``jelm.qd``
and no domain: operators take parents (or genotypes) and return children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jelm.mutation.base import GenotypeOperator, OperatorEntry, ProgramOperator
from jelm.registry import Registry, UnknownEntry, load_reference

__all__ = ["OPERATORS", "OperatorEntry", "make_operator", "operator_entry", "options_class"]

#: Operators by name.
OPERATORS: Registry[OperatorEntry] = Registry("mutation operator")
OPERATORS.register(
    "gp", OperatorEntry("jelm.mutation.gp:make_gp", "jelm.mutation.gp:GPOptions", section="gp")
)
for _name in ("lm_diff", "lm_prompt", "lm_crossover"):
    OPERATORS.register(
        _name,
        OperatorEntry(
            f"jelm.lm.operators:make_{_name}", "jelm.lm.operators:LMOptions", section="lm"
        ),
    )


def operator_entry(name: str, domain: str) -> OperatorEntry:
    """The entry of operator ``name``, checked to work on ``domain``."""
    entry = OPERATORS.get(name)
    if entry.domains is not None and domain not in entry.domains:
        usable = [n for n, e in OPERATORS.items() if e.domains is None or domain in e.domains]
        raise UnknownEntry(
            f"mutation operator {name!r} works on {', '.join(entry.domains)}, not on "
            f"{domain!r}; choose one of {', '.join(usable)}"
        )
    return entry


def options_class(entry: OperatorEntry) -> type:
    """The options dataclass of an operator entry."""
    options = entry.options
    return load_reference(options) if isinstance(options, str) else options


def make_operator(
    name: str, domain: Any, options: Mapping[str, Any] | Any = None
) -> ProgramOperator | GenotypeOperator:
    """Operator ``name`` for ``domain`` (a :class:`jelm.domains.base.Domain`), built from
    its options: an instance of its options class, a mapping of its fields, or ``None``
    for the defaults."""
    entry = operator_entry(name, domain.name)
    cls = options_class(entry)
    if options is None:
        options = cls()
    elif isinstance(options, Mapping):
        options = cls(**options)
    factory = entry.factory
    if isinstance(factory, str):
        factory = load_reference(factory)
    return factory(domain, options)
