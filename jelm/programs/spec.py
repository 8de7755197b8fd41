"""How a domain's programs are written and run (ELM, arXiv 2206.08896v1, §3: the
genotype is a program; running it gives the phenotype).

A :class:`ProgramSpec` is all the program machinery needs of a domain: the sandbox
(:mod:`jelm.programs.sandbox`), the trusted runner (:mod:`jelm.programs.trusted`) and the
language-model prompts read it. Standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PhenotypeError", "ProgramSpec"]


class PhenotypeError(ValueError):
    """A program's result is not a valid phenotype of its domain.

    ``code`` is a short machine-friendly reason (``too_many_joints``, ``wrong_shape``);
    the message is one readable line. Domains may raise subclasses or any ``ValueError``
    with a ``code`` attribute.
    """

    code = "invalid"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """How a domain's programs are written and run.

    Attributes:
        entry: the function every program defines; running a program calls ``entry()``.
        file_name: the program's file name in prompts (ELM's ``<NME>`` line, §3.1).
        validate: parent-side check of what a program returned, as plain data (lists,
            dicts, numbers): returns the canonical phenotype (plain, JSON-able) or raises
            ``ValueError`` (:class:`PhenotypeError`). Runs on untrusted data.
        encode: ``"module:function"`` run inside the sandbox on the value ``entry()``
            returned, with ``encode_options``: turns it into plain data, raising
            ``TypeError`` for a value of the wrong type and ``ValueError`` for one that is
            clearly invalid (e.g. far too large to send back). The module must import
            nothing beyond the standard library and ``api_module``.
        encode_options: picklable second argument of ``encode``.
        api_module: the module programs import their API from (pre-imported by the
            sandbox), or ``None``.
        allowed_imports: other modules a program may import.
        module_aliases: other names programs may import ``api_module`` under (e.g. an
            earlier path of the module), mapped to the module they stand for.
        phenotype: the domain's word for a phenotype (``"walker"``): an invalid one is
            reported as ``invalid_<phenotype>``.
    """

    entry: str
    file_name: str
    validate: Callable[[Any], Any]
    encode: str
    encode_options: Any = None
    api_module: str | None = None
    allowed_imports: tuple[str, ...] = ("math", "random")
    module_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    phenotype: str = "phenotype"

    @property
    def invalid_status(self) -> str:
        """The status of a program whose result its domain refuses."""
        return f"invalid_{self.phenotype}"

    @property
    def imports(self) -> tuple[str, ...]:
        """Every module a program may import (aliases excluded)."""
        api = () if self.api_module is None else (self.api_module,)
        return tuple(dict.fromkeys((*self.allowed_imports, *api)))
