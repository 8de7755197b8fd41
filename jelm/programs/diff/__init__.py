"""ELM's diff mutation (ELM, arXiv 2206.08896v1, §3.1): the prompt format, a tolerant
unified-diff parser and the applier that makes the child program.

The diff model completes a prompt in the format it was trained on (commits from GitHub)::

    <NME> {file name}
    <BEF> {parent}
    <MSG> {message}
    <DFF> {diff}

:mod:`.format` writes prompts and cuts the diff out of a completion, :mod:`.parse` reads
the diff into hunks, :mod:`.place` finds where each hunk goes (exactly, else fuzzily, like
GNU patch with fuzz) and :mod:`.apply` builds the child. A failure raises
:class:`DiffError`, whose ``kind`` the loop records. Pure Python; no JAX.
"""

from jelm.programs.diff.apply import Applied, apply_diff
from jelm.programs.diff.format import (
    BEF,
    DFF,
    EOS,
    MSG,
    NME,
    elm_example,
    elm_prompt,
    extract_diff,
    sample_message,
)
from jelm.programs.diff.parse import DiffError, Hunk, parse_unified_diff
from jelm.programs.diff.place import MAX_FUZZ

__all__ = [
    "BEF",
    "DFF",
    "EOS",
    "MAX_FUZZ",
    "MSG",
    "NME",
    "Applied",
    "DiffError",
    "Hunk",
    "apply_diff",
    "elm_example",
    "elm_prompt",
    "extract_diff",
    "parse_unified_diff",
    "sample_message",
]
