"""jelm.lm.domain and the Domain's corpus hook: the diff-model commands reach seeds,
prompts and the training corpus (ELM §3.1) through the domain registry only."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from jelm.domains import DOMAINS, make_domain
from jelm.domains.base import CorpusExample, Domain
from jelm.lm.domain import DEFAULT_DOMAIN, add_domain_option, resolve_domain
from jelm.programs.diff import apply_diff

LM = Path(__file__).resolve().parents[2] / "jelm" / "lm"


def test_default_domain_is_the_first_registered():
    assert DEFAULT_DOMAIN == DOMAINS.names()[0] == "sodarace"
    domain = resolve_domain()
    assert domain.name == DEFAULT_DOMAIN and resolve_domain(domain) is domain
    assert resolve_domain("sodarace") == make_domain("sodarace")
    with pytest.raises(ValueError, match="unknown domain 'nope'"):
        resolve_domain("nope")
    parser = argparse.ArgumentParser()
    add_domain_option(parser)
    assert parser.parse_args([]).domain == DEFAULT_DOMAIN
    with pytest.raises(SystemExit):
        parser.parse_args(["--domain", "nope"])


def test_sodarace_corpus_hook_gives_diff_examples():
    """Sodarace's corpus: each example's diff turns its parent into its child, under one of
    the domain's commit messages (the hook maps make_corpus's examples field by field)."""
    domain = make_domain("sodarace")
    examples = domain.corpus(6, 3)
    messages = {m for m, _ in domain.prompts.commit_messages}
    assert len(examples) == 6 and all(isinstance(e, CorpusExample) for e in examples)
    for e in examples:
        assert apply_diff(e.parent, e.diff).program == e.child != e.parent
        assert e.message in messages


def test_a_domain_without_a_corpus_says_so():
    """The hook's default (a domain that does not override it) names the domain."""
    with pytest.raises(NotImplementedError, match=r"domain 'sodarace' has no training corpus"):
        Domain.corpus(make_domain("sodarace"), 4, 0)


def test_jelm_lm_names_no_domain():
    """Outside its README, jelm.lm reaches domains through the registry only."""
    naming = [p.relative_to(LM) for p in LM.rglob("*.py") if "sodarace" in p.read_text().lower()]
    assert naming == []
