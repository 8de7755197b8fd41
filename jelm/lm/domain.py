"""The ELM domain a diff-model command works on (§3.1): its seeds, commit messages, file
name and training corpus come from :class:`jelm.domains.base.Domain`, chosen by name."""

from __future__ import annotations

import argparse

from jelm.domains import DOMAINS, Domain, make_domain

__all__ = ["DEFAULT_DOMAIN", "add_domain_option", "resolve_domain"]

#: The domain the commands use without ``--domain``: the first one registered.
DEFAULT_DOMAIN: str = DOMAINS.names()[0]


def resolve_domain(domain: Domain | str | None = None) -> Domain:
    """``domain`` itself, the registered domain of that name (default options), or the
    default domain for ``None``."""
    if isinstance(domain, Domain):
        return domain
    return make_domain(domain or DEFAULT_DOMAIN)


def add_domain_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--domain NAME`` (a registered domain; default :data:`DEFAULT_DOMAIN`)."""
    parser.add_argument(
        "--domain",
        default=DEFAULT_DOMAIN,
        choices=DOMAINS.names(),
        help="the domain whose programs and prompts to use (default: %(default)s)",
    )
