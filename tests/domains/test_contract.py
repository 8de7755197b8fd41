"""The Domain contract, checked on every registered domain (evosax style: one test over
every entry of the registry)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from jelm.domains import DOMAINS, make_domain
from jelm.mutation import OPERATORS
from jelm.programs.sandbox import Sandbox

NAMES = DOMAINS.names()


@pytest.fixture(scope="module", params=NAMES)
def domain(request):
    return make_domain(request.param)


@pytest.fixture(scope="module")
def seeds(domain):
    """Every seed of the domain, run in the sandbox with the domain's program spec."""
    names = domain.seed_names()
    with Sandbox(program=domain.program, workers=2) as sandbox:
        results = sandbox.execute([domain.seed_program(n) for n in names])
    return dict(zip(names, results, strict=True))


def test_every_registered_domain_is_covered():
    assert {"sodarace", "image"} <= set(NAMES)


def test_declarations_are_consistent(domain):
    names = domain.descriptor_names
    assert names and all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names)
    assert len(domain.descriptor_lower) == len(domain.descriptor_upper) == len(names)
    assert all(
        lo < hi for lo, hi in zip(domain.descriptor_lower, domain.descriptor_upper, strict=True)
    )
    assert len(domain.default_grid) == len(names) and min(domain.default_grid) >= 1
    assert math.isfinite(domain.fitness_offset)
    assert set(domain.default_seeds) <= set(domain.seed_names())
    assert domain.default_operator in OPERATORS
    assert domain.name == type(domain).name and hash(domain) == hash(make_domain(domain.name))
    spec = domain.program
    assert spec.entry.isidentifier() and spec.file_name.endswith(".py")
    assert spec.invalid_status == f"invalid_{spec.phenotype}"
    prompts = domain.prompts
    assert prompts.commit_messages and sum(p for _, p in prompts.commit_messages) > 0
    assert prompts.instruction.strip() and prompts.crossover_instruction.strip()
    with pytest.raises(ValueError, match="no-such-seed"):
        domain.seed_program("no-such-seed")


def test_every_seed_runs_and_gives_a_phenotype_that_fits(domain, seeds):
    for name, result in seeds.items():
        assert result.ok, (name, result.status, result.error)
        assert domain.program.validate(result.value) == result.value  # canonical already
        assert domain.does_not_fit(result.value) is None, name


def test_pack_matches_the_template_and_evaluate_is_pure(domain, seeds):
    phenotypes = [r.value for r in seeds.values()]
    rows = len(phenotypes) + 3
    packed = domain.pack([*phenotypes, None], rows)  # a None row and two padding rows
    template = domain.genotype_template()
    assert jax.tree.structure(packed) == jax.tree.structure(template)
    for leaf, one in zip(jax.tree.leaves(packed), jax.tree.leaves(template), strict=True):
        assert np.shape(leaf) == (rows, *np.shape(one))
        assert np.asarray(leaf).dtype == np.asarray(one).dtype
    key = jax.random.key(0)
    ev = jax.jit(domain.evaluate)(packed, key)
    n, d = len(phenotypes), len(domain.descriptor_names)
    assert np.shape(ev.fitness) == (rows,) and np.shape(ev.descriptors) == (rows, d)
    valid = np.asarray(ev.valid)
    assert valid[:n].all() and not valid[n:].any()
    assert np.isfinite(np.asarray(ev.fitness)[:n]).all()
    assert np.isfinite(np.asarray(ev.descriptors)[:n]).all()
    for value in ev.extras.values():
        assert np.shape(value)[0] == rows
    again = jax.jit(domain.evaluate)(packed, key)
    np.testing.assert_array_equal(np.asarray(ev.fitness), np.asarray(again.fitness))
    # a row's result does not depend on the rest of the batch
    alone = jax.jit(domain.evaluate)(domain.pack(phenotypes[:1], 1), key)
    np.testing.assert_array_equal(np.asarray(alone.fitness)[0], np.asarray(ev.fitness)[0])
    np.testing.assert_array_equal(np.asarray(alone.descriptors)[0], np.asarray(ev.descriptors)[0])


def test_render_writes_a_picture_per_label(domain, seeds, tmp_path: Path):
    """One file named after each label (a domain may add more, e.g. a grid of them)."""
    phenotypes = [r.value for r in list(seeds.values())[:2]]
    packed = domain.pack(phenotypes, len(phenotypes))
    paths = [Path(p) for p in domain.render(packed, ["first", "second"], tmp_path / "r")]
    assert all(p.is_file() and p.stat().st_size and p.parent == tmp_path / "r" for p in paths)
    stems = {p.stem for p in paths}
    assert {"first", "second"} <= stems
