"""Tests for jelm.mutation.gp: GP mutation of program text on the AST (ELM §4.2 baseline)."""

from __future__ import annotations

import ast
import collections
import hashlib
import re

import numpy as np
import pytest

from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.mutation.base import Child, Parent, ProgramOperator, unified_diff
from jelm.mutation.gp import KINDS, NO_SITE, GPOperator

N_PER_KIND = 12  # children per (kind, seed) in the single-kind tests


def canonical(source: str) -> str:
    return ast.unparse(ast.parse(source)) + "\n"


def only(kind: str, **kw) -> GPOperator:
    return GPOperator(weights={kind: 1.0}, max_edits=1, **kw)


def children_of(op: GPOperator, source: str, n: int, seed: int = 0) -> list[Child]:
    return op.mutate([Parent(7, source)] * n, np.random.default_rng(seed))


# --------------------------------------------------------------------------- helpers
# Independent re-statements of what each edit may do, used to check the children.

_KEEP = (
    ast.Return,
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Pass,
    ast.Global,
    ast.Nonlocal,
)
_NO_DUP = (*_KEEP, ast.Break, ast.Continue)


def is_docstring(body, i):
    s = body[i]
    return (
        i == 0
        and isinstance(s, ast.Expr)
        and isinstance(s.value, ast.Constant)
        and isinstance(s.value.value, str)
    )


def function_bodies(tree):
    """Every statement list inside a function (each once)."""
    seen, out = set(), []
    for f in ast.walk(tree):
        if isinstance(f, ast.FunctionDef):
            for node in ast.walk(f):
                for field in ("body", "orelse", "finalbody"):
                    value = getattr(node, field, None)
                    if (
                        isinstance(value, list)
                        and value
                        and isinstance(value[0], ast.stmt)
                        and id(value) not in seen
                    ):
                        seen.add(id(value))
                        out.append(value)
    return out


def body_variants(tree, edit):
    """ast.dump of the tree after each possible single statement edit ``edit(body, i)``
    (which changes ``body`` in place and returns True, or returns False for no edit)."""
    out = set()
    for body in function_bodies(tree):
        for i in range(len(body)):
            saved = body[:]
            if edit(body, i):
                out.add(ast.dump(tree))
            body[:] = saved
    return out


def _dup(body, i):
    if isinstance(body[i], _NO_DUP) or is_docstring(body, i):
        return False
    body.insert(i + 1, body[i])
    return True


def _del(body, i):
    if isinstance(body[i], _KEEP) or is_docstring(body, i):
        return False
    del body[i]
    if not body:
        body.append(ast.Pass())
    return True


def _swap(body, i):
    if i + 1 >= len(body) or is_docstring(body, i):
        return False
    if isinstance(body[i], ast.Return) or isinstance(body[i + 1], ast.Return):
        return False
    body[i], body[i + 1] = body[i + 1], body[i]
    return True


class _FoldNegatives(ast.NodeTransformer):
    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if (
            isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)
        ):
            return ast.Constant(-node.operand.value)
        return node


def numbers_and_rest(tree):
    """(the numeric literals in walk order, dump with them all masked)."""
    tree = _FoldNegatives().visit(tree)
    nums = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            nums.append(node.value)
            node.value = "<num>"
    return nums, ast.dump(tree)


def ops_and_rest(tree):
    ops = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.BinOp, ast.AugAssign)):
            ops.append(type(node.op).__name__)
            node.op = ast.MatMult()
        elif isinstance(node, ast.Compare):
            ops.extend(type(o).__name__ for o in node.ops)
            node.ops = [ast.Is() for _ in node.ops]
    return ops, ast.dump(tree)


def ranges_and_rest(tree):
    """(the argument dumps of every range(...) call, dump with those arguments masked)."""
    calls = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "range"
        ):
            calls.append([ast.dump(a) for a in node.args])
            node.args = [ast.Name("_") for _ in node.args]
    return calls, ast.dump(tree)


def check_perturb_number(parent, child, message):
    pn, prest = numbers_and_rest(parent)
    cn, crest = numbers_and_rest(child)
    assert prest == crest, "something besides a numeric literal changed"
    assert len(pn) == len(cn)
    changed = [(a, b) for a, b in zip(pn, cn, strict=True) if a != b or type(a) is not type(b)]
    assert len(changed) == 1, changed
    old, new = changed[0]
    assert type(old) is type(new), "an int must stay an int, a float a float"
    if isinstance(old, int):
        assert 1 <= abs(new - old) <= 2
        assert old < 0 or new >= 0, "a non-negative int must stay non-negative"
    assert f": {old!r} -> {new!r}" in message


FAMILIES = [{"Add", "Sub"}, {"Mult", "Div", "FloorDiv"}, {"Lt", "LtE"}, {"Gt", "GtE"}]


def check_swap_operator(parent, child, message):
    po, prest = ops_and_rest(parent)
    co, crest = ops_and_rest(child)
    assert prest == crest
    changed = [(a, b) for a, b in zip(po, co, strict=True) if a != b]
    assert len(changed) == 1, changed
    assert any(set(changed[0]) <= fam for fam in FAMILIES), changed


def check_duplicate_statement(parent, child, message):
    assert ast.dump(child) in body_variants(parent, _dup)


def check_delete_statement(parent, child, message):
    assert ast.dump(child) in body_variants(parent, _del)


def check_reorder_statements(parent, child, message):
    assert ast.dump(child) in body_variants(parent, _swap)


def check_change_loop_bound(parent, child, message):
    pc, prest = ranges_and_rest(parent)
    cc, crest = ranges_and_rest(child)
    assert prest == crest, "something besides a range() argument changed"
    changed = [(a, b) for a, b in zip(pc, cc, strict=True) if a != b]
    assert len(changed) == 1, changed
    a, b = changed[0]
    assert len(a) == len(b)
    which = [j for j in range(len(a)) if a[j] != b[j]]
    assert len(which) == 1 and which[0] < 2, "exactly one bound changes, never the step"


CHECKS = {
    "perturb_number": check_perturb_number,
    "swap_operator": check_swap_operator,
    "duplicate_statement": check_duplicate_statement,
    "delete_statement": check_delete_statement,
    "reorder_statements": check_reorder_statements,
    "change_loop_bound": check_change_loop_bound,
}


# --------------------------------------------------------------------------- tests


def test_operator_interface():
    op = GPOperator()
    assert isinstance(op, ProgramOperator)
    assert op.name == "gp" and GPOperator("gp2").name == "gp2"
    assert set(CHECKS) == set(KINDS)


@pytest.mark.parametrize("seed_name", SEED_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_alone_on_each_seed(kind, seed_name):
    """Every child of a single-kind, single-edit operator parses, differs from its parent
    and differs exactly as the kind says (checked by an independent re-statement)."""
    parent = canonical(seed_source(seed_name))
    parent_dump = ast.dump(ast.parse(parent))
    for child in children_of(only(kind), parent, N_PER_KIND, seed=KINDS.index(kind)):
        assert child.ok, child.error
        assert child.parent_ids == (7,) and child.operator == "gp"
        assert child.message.startswith(f"{kind} line ")
        assert child.diff == unified_diff(parent, child.program, "program.py") and child.diff
        tree = ast.parse(child.program)
        assert ast.dump(tree) != parent_dump
        CHECKS[kind](ast.parse(parent), tree, child.message)


@pytest.mark.parametrize("seed_name", SEED_NAMES)
def test_children_are_canonical_text_of_the_tree(seed_name):
    """The child text is ast.unparse of its tree (assembled from per-statement pieces)."""
    for parent in (seed_source(seed_name), canonical(seed_source(seed_name))):
        for child in children_of(GPOperator(), parent, 40, seed=3):
            assert child.ok
            assert canonical(child.program) == child.program


def test_message_line_numbers_are_the_parents():
    parent = canonical(seed_source("radial"))
    lines = parent.splitlines()
    for child in children_of(only("perturb_number"), parent, 30):
        m = re.fullmatch(r"perturb_number line (\d+): (\S+) -> (\S+)", child.message)
        assert m, child.message
        old = m.group(2).lstrip("-")
        assert old in lines[int(m.group(1)) - 1]


def test_multiple_edits_and_message():
    parent = canonical(seed_source("cppn_mutable"))
    counts = collections.Counter()
    for child in children_of(GPOperator(max_edits=3), parent, 200):
        notes = child.message.split("; ")
        assert 1 <= len(notes) <= 3
        assert all(n.split(" ", 1)[0] in KINDS for n in notes)
        counts[len(notes)] += 1
    assert set(counts) == {1, 2, 3}
    for child in children_of(GPOperator(max_edits=1), parent, 50):
        assert "; " not in child.message


def test_one_child_per_parent_in_order():
    parents = [Parent(i, canonical(seed_source(n))) for i, n in enumerate(SEED_NAMES)]
    children = GPOperator().mutate(parents + parents[::-1], np.random.default_rng(5))
    assert [c.parent_ids for c in children] == [(p.id,) for p in parents + parents[::-1]]
    for p, c in zip(parents + parents[::-1], children, strict=True):
        assert c.diff == unified_diff(p.program, c.program, "program.py")


def test_deterministic_given_rng_and_independent_of_cache():
    parents = [Parent(i, seed_source(n)) for i, n in enumerate(SEED_NAMES)] * 5

    def run(op, seed):
        return [
            (c.program, c.message, c.diff) for c in op.mutate(parents, np.random.default_rng(seed))
        ]

    op = GPOperator()
    first = run(op, 11)
    assert run(op, 11) == first  # same operator, warm cache (trees edited and restored)
    assert run(GPOperator(), 11) == first  # fresh operator
    assert run(GPOperator(cache_size=0), 11) == first  # no cache at all
    assert run(GPOperator(cache_size=2), 11) == first  # cache thrashing
    other = run(op, 12)
    assert other != first
    assert sum(a != b for a, b in zip(first, other, strict=True)) > len(first) // 2


#: sha256 of the children in test_children_are_the_recorded_ones (their programs and
#: messages are what GP wrote before it moved onto jelm.programs.edits).
GOLDEN_CHILDREN = "25c4291a939de2d6b7f1fc4be60e20ce223a45a0bb6422a0bee4499c09237afa"


def test_children_are_the_recorded_ones():
    """20 children of every seed from one generator: program, message and diff, byte for
    byte. A change here changes every GP run's results; update the digest only for a
    change of GP's behaviour that is meant."""
    h = hashlib.sha256()
    rng = np.random.default_rng(2024)
    op = GPOperator(max_edits=3)
    for i, name in enumerate(SEED_NAMES):
        for child in op.mutate([Parent(i, seed_source(name))] * 20, rng):
            h.update("\0".join((child.program, child.message, child.diff)).encode())
    assert h.hexdigest() == GOLDEN_CHILDREN


def test_no_global_random_state():
    import random

    parent = [Parent(0, seed_source("wheel"))] * 20
    np.random.seed(0)
    random.seed(0)
    a = GPOperator().mutate(parent, np.random.default_rng(1))
    np.random.seed(99)
    random.seed(99)
    b = GPOperator().mutate(parent, np.random.default_rng(1))
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"weights": {"perturb_numbers": 1.0}}, "unknown GP edit kind.*perturb_numbers"),
        ({"weights": {"bogus": 1.0, "perturb_number": 1.0}}, "valid kinds: " + ", ".join(KINDS)),
        ({"weights": {"perturb_number": -1.0}}, "finite number >= 0"),
        ({"weights": {"perturb_number": float("nan")}}, "finite number >= 0"),
        ({"weights": {"perturb_number": 0.0}}, "at least one positive"),
        ({"weights": {}}, "at least one positive"),
        ({"max_edits": 0}, "max_edits"),
        ({"sigma": 0.0}, "sigma"),
        ({"loop_scale_prob": 1.5}, "loop_scale_prob"),
    ],
)
def test_bad_settings_are_refused(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        GPOperator(**kwargs)


def test_weights_are_respected():
    op = GPOperator(weights={"swap_operator": 3.0, "delete_statement": 1.0}, max_edits=1)
    assert op.weights["perturb_number"] == 0.0
    kinds = collections.Counter(
        c.message.split(" ", 1)[0] for c in children_of(op, seed_source("galloper"), 400)
    )
    assert set(kinds) == {"swap_operator", "delete_statement"}
    assert 2.2 < kinds["swap_operator"] / kinds["delete_statement"] < 4.2


def structure(tree):
    return (
        sum(isinstance(n, ast.Return) for n in ast.walk(tree)),
        sorted(n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)),
        sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)),
    )


@pytest.mark.parametrize("seed_name", SEED_NAMES)
def test_delete_keeps_returns_defs_imports_and_nonempty_bodies(seed_name):
    parent = seed_source(seed_name)
    want = structure(ast.parse(parent))
    assert "make_walker" in want[1]
    for child in children_of(GPOperator(weights={"delete_statement": 1}), parent, 100, 2):
        tree = ast.parse(child.program)  # an empty body would not parse
        assert structure(tree) == want
        for body in function_bodies(tree):
            assert body


def test_delete_fills_an_emptied_body_with_pass():
    src = "def make_walker():\n    for k in range(3):\n        x = k\n    return 1\n"
    seen = set()
    for child in children_of(only("delete_statement"), src, 40):
        seen.add(child.program)
    assert seen == {
        "def make_walker():\n    for k in range(3):\n        pass\n    return 1\n",
        "def make_walker():\n    return 1\n",
    }


def test_no_site_gives_an_error_child():
    src = "def make_walker():\n    return walker_creator().get_walker()\n"
    (child,) = children_of(only("perturb_number"), src, 1)
    assert child.program is None and child.error == NO_SITE and not child.ok
    assert child.parent_ids == (7,)
    # another kind is tried when the drawn one has no site
    op = GPOperator(weights={"perturb_number": 1.0, "swap_operator": 1.0}, max_edits=1)
    for child in children_of(op, "def f():\n    return 2 * x\n", 20):
        assert child.ok
        assert child.message.startswith(("perturb_number", "swap_operator"))
    (child,) = children_of(only("swap_operator"), "x = 2 ** 3\n", 1)
    assert child.error == NO_SITE


def test_unparsable_parent_gives_an_error_child():
    (child,) = children_of(GPOperator(), "def make_walker(:\n", 1)
    assert child.program is None and "does not parse" in child.error
    (child,) = children_of(GPOperator(), "x = 1\0\n", 1)
    assert child.program is None and "does not parse" in child.error


def test_sites_in_methods_and_try_blocks():
    """Statement edits reach every statement list inside a function (methods, try and
    except bodies), never module-level or class-level statements."""
    src = (
        "class C:\n"
        "    X = 1\n"
        "    def m(self):\n"
        "        try:\n"
        "            a = 1\n"
        "        except ValueError:\n"
        "            a = 2\n"
        "        return a\n"
        "Y = 3\n"
    )
    seen = set()
    for child in children_of(only("delete_statement"), src, 40):
        seen.add(child.program)
    assert all("X = 1" in p and "Y = 3" in p and "return a" in p for p in seen)
    assert any("a = 1" not in p for p in seen) and any("a = 2" not in p for p in seen)
    assert any("try:" not in p for p in seen)  # the whole try statement is one statement


def test_cli_prints_children_of_a_domain_seed(capsys):
    from jelm.mutation.gp import main

    main(["square", "-n", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert out.count("=== child ") == 2 and "--- walker.py\n+++ walker.py\n" in out
    main(["--domain", "sodarace", "-n", "1"])  # the domain's first seed
    assert "=== child 0: " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["no_such_seed"])
    assert "unknown seed 'no_such_seed' of sodarace" in capsys.readouterr().err


def test_negative_literals_and_loop_bounds():
    src = "def f():\n    for k in range(-2, N + 1, 3):\n        y = -0.5 * k\n    return y\n"
    for child in children_of(only("perturb_number"), src, 40):
        check_perturb_number(ast.parse(src), ast.parse(child.program), child.message)
        assert "--" not in child.program
    bounds = set()
    for child in children_of(only("change_loop_bound", loop_scale_prob=0.0), src, 60):
        bounds.add(child.program.splitlines()[1].strip())
    assert bounds == {
        "for k in range(-1, N + 1, 3):",
        "for k in range(-3, N + 1, 3):",
        "for k in range(-2, N + 2, 3):",
        "for k in range(-2, N, 3):",
    }


def test_ints_stay_non_negative():
    src = "A = 0\nB = 1\n"
    for child in children_of(only("perturb_number"), src, 200):
        a, b = (int(line.split(" = ")[1]) for line in child.program.splitlines())
        assert a >= 0 and b >= 0 and (a, b) != (0, 1)


@pytest.mark.slow
def test_children_run_in_the_real_sandbox():
    """GP children of every seed through the real sandbox: a substantial fraction are valid
    walkers. Measured here (400 children per seed, seed 1): with 1-3 edits (``max_edits=3``)
    28-54 % per seed, with one edit per child 50-76 %."""
    from jelm.domains.sodarace.domain import PROGRAM
    from jelm.programs.sandbox import Sandbox

    n = 200
    rates, single = {}, {}
    with Sandbox(program=PROGRAM, workers=2) as sb:
        for name in SEED_NAMES:
            parent = seed_source(name)
            kids = children_of(GPOperator(max_edits=3), parent, n, seed=1)
            progs = [c.program for c in kids if c.ok]
            assert len(progs) == n
            res = sb.execute(progs)
            rates[name] = sum(r.ok for r in res) / n
            kids = children_of(GPOperator(max_edits=1), parent, n // 2, seed=2)
            res = sb.execute([c.program for c in kids])
            single[name] = sum(r.ok for r in res) / (n // 2)
    print("\nvalid walker rate, 1-3 edits:", rates)
    print("valid walker rate, 1 edit:   ", single)
    assert min(rates.values()) >= 0.15
    assert np.mean(list(rates.values())) >= 0.30
    assert min(single.values()) >= 0.35
    assert np.mean(list(single.values())) >= 0.50
