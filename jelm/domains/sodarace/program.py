"""How Sodarace programs are written and run (ELM arXiv 2206.08896v1, §4).

:data:`PROGRAM` is the domain's :class:`~jelm.domains.base.ProgramSpec`. It lives apart
from :mod:`jelm.domains.sodarace.domain` so that the seeds and the corpus, which run
programs in this process, do not import the simulator.
"""

from __future__ import annotations

from jelm.domains.base import ProgramSpec
from jelm.domains.sodarace import LEGACY_API, api

__all__ = ["LEGACY_API", "PROGRAM"]

PROGRAM = ProgramSpec(
    entry="make_walker",
    file_name="walker.py",
    validate=api.validate_walker,
    encode="jelm.domains.sodarace.api:encode_walker",
    encode_options=api.DEFAULT_LIMITS,
    api_module="jelm.domains.sodarace.api",
    allowed_imports=("math", "random"),
    module_aliases={LEGACY_API: "jelm.domains.sodarace.api"},
    phenotype="walker",
)
