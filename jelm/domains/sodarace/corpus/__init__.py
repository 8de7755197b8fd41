"""A synthetic training corpus for jelm's diff model (ELM arXiv 2206.08896v1, §3.1, §4).

ELM trains its diff models on commits written as ``<NME> file / <BEF> parent / <MSG>
commit message / <DFF> unified diff``. jelm writes its own: parent/child pairs of
Sodarace walker programs where the child is the parent after one named edit made on the
text (comments and formatting survive), runs and builds a valid walker that differs from
the parent's, and the message is the ELM commit message of the edit's class. The recipe
and its measured rates are in ``jelm/domains/sodarace/CORPUS.md``.

Modules: :mod:`.base` (examples, statistics), :mod:`.run` (running programs),
:mod:`.program` (a program's sites and joints), :mod:`.numbers` and :mod:`.structure`
(the edit kinds), :mod:`.kinds` (kinds by message), :mod:`.lineage` (making a corpus),
:mod:`.styles`, :mod:`.plans` and :mod:`.writer` (fresh programs for lineages to start
from), :mod:`.cli`.
"""

from jelm.domains.sodarace.corpus.base import CorpusStats, Example, training_text
from jelm.domains.sodarace.corpus.kinds import KINDS
from jelm.domains.sodarace.corpus.lineage import generate_corpus, make_corpus
from jelm.domains.sodarace.corpus.run import run_program
from jelm.domains.sodarace.prompts import MSG_PARAMS, MSG_SMALL, MSG_STRUCT

__all__ = [
    "KINDS",
    "MSG_PARAMS",
    "MSG_SMALL",
    "MSG_STRUCT",
    "CorpusStats",
    "Example",
    "generate_corpus",
    "make_corpus",
    "run_program",
    "training_text",
]
