"""The operator registry's contract, checked on every registered operator and every
domain it works on: one child per parent, named and replayable."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from jelm.domains import DOMAINS, load_domains, make_domain
from jelm.mutation import OPERATORS, make_operator, operator_entry, options_class
from jelm.mutation.base import Parent, on_device
from jelm.registry import UnknownEntry
from tests.lm_fixtures import make_tiny_model

load_domains()  # a domain registers its own operators when it loads

PAIRS = [
    (op, dom)
    for op, entry in OPERATORS.items()
    for dom in DOMAINS.names()
    if entry.domains is None or dom in entry.domains
]
# Each LM operator's sampling compiles anew per domain: the default pass checks every
# operator on some domain, the slow pass the rest.
SLOW = {("lm_prompt", "sodarace"), ("lm_crossover", "sodarace")}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny", n_ctx=256)


def _operator(name: str, domain, tiny_model: Path):
    options = options_class(OPERATORS.get(name))()
    if OPERATORS.get(name).section == "lm":  # a tiny local model instead of the shipped one
        options = type(options)(backend={"kind": "jelm", "path": str(tiny_model)}, max_new_tokens=8)
    return make_operator(name, domain, options)


def test_every_operator_is_covered():
    assert {"gp", "lm_diff", "lm_prompt", "lm_crossover", "direct"} <= set(OPERATORS.names())
    assert {op for op, _ in PAIRS} == set(OPERATORS.names())


@pytest.mark.parametrize(
    ("name", "domain_name"),
    [pytest.param(*pair, marks=pytest.mark.slow) if pair in SLOW else pair for pair in PAIRS],
)
def test_operator_contract(name: str, domain_name: str, tiny_model: Path):
    domain = make_domain(domain_name)
    operator = _operator(name, domain, tiny_model)
    assert operator.name == name
    seeds = [domain.seed_program(s) for s in domain.default_seeds]
    if on_device(operator):
        from jelm.programs.sandbox import Sandbox

        with Sandbox(program=domain.program, workers=1) as sandbox:
            values = [r.value for r in sandbox.execute(seeds)]
        genotypes = domain.pack(values, len(values))
        mutate = jax.jit(operator.mutate)
        children = mutate(jax.random.key(0), genotypes)
        assert jax.tree.structure(children) == jax.tree.structure(genotypes)
        for a, b in zip(jax.tree.leaves(children), jax.tree.leaves(genotypes), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
        again = mutate(jax.random.key(0), genotypes)
        for a, b in zip(jax.tree.leaves(children), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(a, b)
        return
    parents = [Parent(k + 1, text) for k, text in enumerate(seeds)]
    children = operator.mutate(parents, np.random.default_rng(0))
    assert len(children) == len(parents)
    for parent, child in zip(parents, children, strict=True):
        assert child.operator == name and parent.id == child.parent_ids[0]
        assert (child.program is None) == (child.error is not None or child.failure is not None)
    replay = operator.mutate(parents, np.random.default_rng(0))
    assert [c.program for c in replay] == [c.program for c in children]


def test_a_domain_operator_refuses_other_domains():
    with pytest.raises(UnknownEntry, match="works on sodarace, not on 'image'"):
        operator_entry("direct", "image")
    with pytest.raises(UnknownEntry, match="unknown mutation operator 'nope'"):
        OPERATORS.get("nope")
