"""ELM's domains behind one seam (ELM, arXiv 2206.08896v1, §3-4): a registry by name.

A domain (:class:`jelm.domains.base.Domain`) is a frozen dataclass of its options;
:func:`make_domain` builds one by name::

    from jelm.domains import make_domain
    domain = make_domain("sodarace", steps=600, terrain="flat")

Registering a new domain is one line, here or in the user's own code:
``DOMAINS.register("mine", "mypackage.mine:MyDomain")``.
"""

from __future__ import annotations

from typing import Any

from jelm.domains.base import Domain, Evaluation, PhenotypeError, ProgramSpec, Prompts
from jelm.registry import Registry

__all__ = [
    "DOMAINS",
    "Domain",
    "Evaluation",
    "PhenotypeError",
    "ProgramSpec",
    "Prompts",
    "load_domains",
    "make_domain",
]

#: Domain classes by name (lazy: importing this module loads no domain).
DOMAINS: Registry[type[Domain]] = Registry("domain")
DOMAINS.register("sodarace", "jelm.domains.sodarace.domain:SodaraceDomain")
DOMAINS.register("image", "jelm.domains.image.domain:ImageDomain")


def load_domains() -> tuple[str, ...]:
    """Import every registered domain (a domain registers its own operators when it
    loads, e.g. Sodarace's ``direct``); returns their names."""
    for name in DOMAINS.names():
        DOMAINS.get(name)
    return DOMAINS.names()


def make_domain(name: str, **options: Any) -> Domain:
    """The domain registered as ``name``, built from ``options`` (its dataclass fields)."""
    return DOMAINS.get(name)(**options)
