"""Tests for the seed programs in jelm.domains.sodarace.seeds."""

from __future__ import annotations

import ast
import importlib
import json
import math
from collections import Counter

import pytest

from jelm.domains.sodarace.api import DEFAULT_LIMITS, Walker, WalkerLimits, walker_creator
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source, seed_walker

#: Stricter than validation: what the seeds promise (see the seeds' brief).
SEED_MAX_ABS_COORDINATE = 20.0
SEED_MIN_JOINT_DISTANCE = 0.5


def test_seed_names_in_order():
    assert SEED_NAMES == (
        "square",
        "radial",
        "wheel",
        "galloper",
        "cppn_fixed",
        "cppn_mutable",
        "runner",
    )


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_yields_a_valid_walker_within_caps(name):
    w = seed_walker(name)
    assert isinstance(w, Walker)
    Walker.from_dict(json.loads(json.dumps(w.to_dict())))  # survives the sandbox's trip
    d = w.to_dict()
    joints, links = d["joints"], d["muscles"]
    assert 5 <= len(joints) <= 40
    assert len(joints) <= DEFAULT_LIMITS.max_joints and len(links) <= DEFAULT_LIMITS.max_links
    degree = Counter()
    for i, j, _ in links:
        degree[i] += 1
        degree[j] += 1
    assert max(degree.values()) <= DEFAULT_LIMITS.max_links_per_joint
    assert len(degree) == len(joints), "every joint is linked to something"
    assert all(abs(c) <= SEED_MAX_ABS_COORDINATE for p in joints for c in p)
    closest = min(math.dist(p, q) for k, p in enumerate(joints) for q in joints[k + 1 :])
    assert closest >= SEED_MIN_JOINT_DISTANCE
    assert min(y for _, y in joints) == pytest.approx(0.0, abs=1e-9), "stands on y = 0"
    # the stricter seed promises, as validation limits
    w.validate(
        WalkerLimits(
            max_abs_coordinate=SEED_MAX_ABS_COORDINATE, min_joint_distance=SEED_MIN_JOINT_DISTANCE
        )
    )


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_has_muscles_that_move(name):
    """Every seed actuates: muscles with visible amplitude and more than one phase (a
    walker whose muscles all fire together, or all have amplitude 0, goes nowhere --
    OpenELM's square, whose amplitude and phase were swapped, never moved)."""
    links = seed_walker(name).to_dict()["muscles"]
    muscles = [p for _, _, p in links if p["type"] == "muscle"]
    assert len(muscles) >= 3
    assert all(2.0 <= abs(p["amplitude"]) <= 10.0 for p in muscles)
    assert all(0.0 <= p["phase"] < 1.0 for p in muscles)
    assert len({round(p["phase"], 6) for p in muscles}) >= 2
    assert any(p["type"] == "distance" for _, _, p in links), "some passive bones"


def test_seed_sizes_vary():
    sizes = sorted(seed_walker(name).n_joints for name in SEED_NAMES)
    assert sizes[0] <= 8 and sizes[-1] >= 25
    assert len(set(sizes)) == len(SEED_NAMES)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_is_deterministic(name):
    assert seed_walker(name) == seed_walker(name)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_source_matches_module_and_walker(name):
    source = seed_source(name)
    assert "def make_walker():" in source
    module = importlib.import_module(f"jelm.domains.sodarace.seeds.{name}")
    assert module.make_walker() == seed_walker(name)
    tree = ast.parse(source)
    assert ast.get_docstring(tree), "each seed explains itself"
    assert source.count("#") >= 2, "commented code"


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_imports_only_walker_api_and_math(name):
    tree = ast.parse(seed_source(name))
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imports += [(node.module, alias.name) for alias in node.names]
    assert ("jelm.programs.walker_api", "walker_creator") in imports
    for module, name_ in imports:
        assert (module, name_) in {("math", None), ("jelm.programs.walker_api", "walker_creator")}
    # no dunder or private names: the sandbox's guard would refuse them
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert not node.attr.startswith("_"), node.attr
        if isinstance(node, ast.Name):
            assert not node.id.startswith("__"), node.id


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_defines_make_walker_returning_get_walker(name):
    tree = ast.parse(seed_source(name))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "make_walker" in funcs
    ret = funcs["make_walker"].body[-1]
    assert isinstance(ret, ast.Return)
    assert ast.unparse(ret.value) == "wc.get_walker()"


def test_unknown_seed_lists_valid_names():
    with pytest.raises(ValueError, match="unknown seed 'hexapod'") as info:
        seed_source("hexapod")
    for name in SEED_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown seed"):
        seed_walker("../walker_api")
    with pytest.raises(ValueError, match="unknown seed"):
        seed_source("__init__")


def test_seed_walker_validates_with_given_limits():
    from jelm.domains.sodarace.api import TooManyJoints

    with pytest.raises(TooManyJoints):
        seed_walker("runner", WalkerLimits(max_joints=10))


def test_seeds_ship_as_package_data():
    from importlib import resources

    files = {p.name for p in resources.files("jelm.domains.sodarace.seeds").iterdir()}
    assert {f"{name}.py" for name in SEED_NAMES} <= files


def test_seed_source_uses_this_walker_api():
    """Executed on its own, a seed binds the very walker_creator of jelm's API."""
    wc = walker_creator()
    namespace: dict = {}
    exec(compile(seed_source("square"), "<square>", "exec"), namespace)
    assert namespace["walker_creator"] is type(wc)


def test_the_seed_walkers_shipped_with_the_simulator_are_what_the_programs_build():
    """jelm/sim/seed_walkers.json, which the simulator's benchmark and tests read instead
    of running this domain's programs, holds exactly what the seed programs build, in
    their order (to regenerate it, see jelm/sim/README.md)."""
    from jelm.sim.seed_walkers import seed_walkers

    shipped = seed_walkers()
    assert tuple(shipped) == SEED_NAMES
    for name in SEED_NAMES:
        assert shipped[name] == seed_walker(name).to_dict(), name


def test_seeds_run_with_the_domains_program_spec():
    """seed_walker runs a seed the way the domain says its programs run (entry, API
    module): the same spec the sandbox and the corpus use."""
    from jelm.domains import make_domain
    from jelm.domains.sodarace.program import PROGRAM
    from jelm.programs.trusted import run_trusted

    assert make_domain("sodarace").program is PROGRAM
    for name in SEED_NAMES:
        assert run_trusted(seed_source(name), PROGRAM) == seed_walker(name)
