"""``python -m jelm.domains.sodarace.corpus`` (see :mod:`jelm.domains.sodarace.corpus.cli`)."""

from jelm.domains.sodarace.corpus.cli import main

main()
