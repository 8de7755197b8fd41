"""Tests for jelm.programs.edits: the AST edit engine (sites, text edits, tree edits).

The programs here are small, hand-written and domain-free; every span is checked against
the text it should cover, every tree edit against ``ast.unparse``.
"""

from __future__ import annotations

import ast
import random

import pytest

from jelm.programs.edits import (
    CONST,
    INDEX,
    OTHER,
    RANGE,
    ArgumentRoles,
    ParsedProgram,
    Sites,
    Source,
    Transaction,
    format_float,
    is_docstring,
    is_number,
    literal_text,
    number_edits,
    number_node,
    number_value,
    scale_expr,
    shift_expr,
    slot,
    splice,
    unparse_statement,
)

PROGRAM = '''"""A program with a bit of everything."""
import math

N_LEGS = 4  # legs
SPEED = -0.25
SCALE = 2 * SPEED
MIXED = 3 + 4
MASK = 0x1F


def helper(x, k=2):
    """Help."""
    y = x * 1.5 + 0.25  # a line
    return y - 3


def build():
    # start
    out = []
    for i in range(N_LEGS + 1):
        out.append(helper(i) * out[0] if out else 0.5)
        if i < 2 and i >= 0:
            out[-1] += 1
    total = sum(v for v in range(1, 3))
    call(1.0, 2.0, amp=3.5, phase=0.75)
    call(i - 0.5, (2.0 + k), 7.0, 0.1)
    return out
'''


def call_roles(name: str, n: int):
    if name == "call" and n == 4:
        return ("coord", "coord", "amp", "phase")
    if name == "call":
        return ("coord",) * n
    return None


ROLES = ArgumentRoles(call_roles, {"amp": "amp", "phase": "phase"}, frozenset({"coord"}))


@pytest.fixture(scope="module")
def text_sites() -> Sites:
    return Sites.of_module(ast.parse(PROGRAM), Source(PROGRAM), ROLES)


def by_text(sites: Sites) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in sites.numbers:
        out.setdefault(PROGRAM[n.start : n.end], []).append(n)
    return out


# --------------------------------------------------------------------------- literals


def test_literals():
    tree = ast.parse("a = [1, 2.5, -3, -0.5, True, 'x', -y, +4, 1j]")
    elts = tree.body[0].value.elts
    assert [is_number(e) for e in elts] == [True] * 4 + [False] * 5
    assert [number_value(e) for e in elts[:4]] == [1, 2.5, -3, -0.5]
    assert type(number_value(elts[0])) is int
    neg = number_node(-2.0, elts[1])
    assert ast.unparse(neg) == "-2.0" and neg.lineno == elts[1].lineno
    assert number_value(neg) == -2.0
    assert ast.unparse(number_node(-0.0, elts[0])) == "0.0"  # never -0.0
    assert ast.unparse(number_node(0, elts[0])) == "0"
    assert ast.unparse(ast.BinOp(ast.Name("x"), ast.Pow(), number_node(-2, elts[0]))) == "x ** (-2)"


@pytest.mark.parametrize(
    ("value", "decimals", "keep", "want"),
    [
        (2.5, 3, 1, "2.5"),
        (3.0, 2, 1, "3.0"),
        (3.0, 2, 0, "3"),
        (-0.0001, 2, 1, "0.0"),
        (1.23456, 2, 1, "1.23"),
        (-7.25, 1, 1, "-7.2"),
    ],
)
def test_format_float(value, decimals, keep, want):
    assert format_float(value, decimals, keep) == want


# --------------------------------------------------------------------------- sites


def test_number_spans_values_and_roles(text_sites):
    nums = by_text(text_sites)
    # every span covers exactly the literal, the unary minus included
    for n in text_sites.numbers:
        assert float(PROGRAM[n.start : n.end].replace(" ", "")) == n.value
    starts = [n.start for n in text_sites.numbers]
    assert starts == sorted(starts)  # source order
    (legs,) = nums["4"][:1]
    assert legs.role == CONST and legs.name == "N_LEGS" and legs.is_int and legs.func is None
    (speed,) = nums["-0.25"]
    assert speed.role == CONST and speed.name == "SPEED" and speed.decimals == 2
    # "2 * SPEED": the only literal, at the start of the value: a constant
    assert nums["2"][0].role == CONST and nums["2"][0].name == "SCALE"
    # "3 + 4": two literals, neither is the constant
    assert nums["3"][0].role == OTHER and nums["4"][1].role == OTHER
    assert "0x1F" not in nums  # with a source, only plain decimal literals are sites
    # range() bounds, also inside arithmetic; an index; calls' own roles
    assert nums["1"][0].role == RANGE  # N_LEGS + 1
    assert [n.role for n in nums["0"]] == [INDEX, OTHER]  # out[0], then "i >= 0"
    assert nums["-1"][0].role == INDEX
    assert [n.role for n in nums["1.0"]] == ["coord"]
    assert [n.role for n in nums["3.5"]] == ["amp"] and [n.role for n in nums["0.75"]] == ["phase"]
    assert [n.role for n in nums["7.0"]] == ["amp"] and [n.role for n in nums["0.1"]] == ["phase"]
    assert nums["0.5"][1].role == "coord"  # i - 0.5: a sticky role reaches into arithmetic
    # a role does not reach into another call's arguments: helper(i) inside append(...)
    assert all(n.role != "coord" for n in nums["2"][1:])


def test_number_context(text_sites):
    nums = by_text(text_sites)
    one_five = nums["1.5"][0]
    assert (
        one_five.func == "helper"
        and one_five.rhs
        and one_five.stmt == PROGRAM.count("\n", 0, PROGRAM.index("y = x")) + 1
    )
    assert one_five.top == 7  # helper is the module's eighth statement
    # a literal after a binary + or -: its operator's offset (a sign flip swaps it)
    quarter = nums["0.25"][0]
    assert PROGRAM[quarter.op_at] == "+" and quarter.op == "+"
    three = nums["3"][1]  # return y - 3
    assert three.op == "-" and PROGRAM[three.op_at] == "-"
    assert nums["1.5"][0].op_at == -1  # after "*", not + or -
    assert nums["-0.25"][0].op_at == -1  # its own minus is not an operator
    # x * 1.5: the right operand of a binary operator; helper's default k=2 is not
    assert nums["2"][1].rhs is False


def test_tree_mode_has_every_literal_and_no_spans():
    tree = ast.parse(PROGRAM)
    sites = Sites.of_module(tree)
    text = Sites.of_module(tree, Source(PROGRAM))
    assert len(sites.numbers) == len(text.numbers) + 1  # the hex literal
    assert all(n.start == -1 and n.op_at == -1 for n in sites.numbers)
    assert all(c.args == [] for c in sites.calls)
    # without roles from a domain, call arguments are "other"
    assert {n.role for n in sites.numbers} == {CONST, OTHER, RANGE, INDEX}


def test_slots_point_at_the_literals(text_sites):
    for n in text_sites.numbers:
        assert slot(n.holder, n.field, n.index) is n.node


def test_operators_blocks_calls_loops(text_sites):
    s = text_sites
    symbols = []
    for op in s.operators:
        node = op.node
        if op.index is not None:
            symbols.append(type(node.ops[op.index]).__name__)
        else:
            symbols.append(type(node.op).__name__)
    assert symbols.count("Add") == 5 and symbols.count("Lt") == 1 and symbols.count("GtE") == 1
    # binary operators on one line know where their symbol is; the others do not
    for op in s.operators:
        if type(op.node) is ast.BinOp:
            assert PROGRAM[op.at : op.at + 1] in "+-*"
        else:
            assert op.at == -1
    # an operand's operators come before its operator's (postorder)
    add_mul = [op for op in s.operators if op.func == "helper"]
    assert [type(op.node.op).__name__ for op in add_mul] == ["Mult", "Add", "Sub"]
    # blocks: the functions' bodies, the loop and the if, with where they are
    owners = [(type(b.owner).__name__, b.field, b.func, b.in_def) for b in s.blocks]
    assert owners == [
        ("FunctionDef", "body", "helper", True),
        ("FunctionDef", "body", "build", True),
        ("For", "body", "build", True),
        ("If", "body", "build", True),
    ]
    assert s.blocks[2].body is s.functions["build"].body[1].body
    assert [c.name for c in s.calls][:3] == ["range", "append", "helper"]
    call = next(c for c in s.calls if c.name == "call")
    assert [PROGRAM[a:b] for a, b in call.args] == ["1.0", "2.0"]
    last = [c for c in s.calls if c.name == "call"][1]
    assert [PROGRAM[a:b] for a, b in last.args] == ["i - 0.5", "2.0 + k", "7.0", "0.1"]
    assert [ast.unparse(loop.call) for loop in s.loops] == ["range(N_LEGS + 1)", "range(1, 3)"]
    assert list(s.functions) == ["helper", "build"]
    assert {"N_LEGS", "helper", "build", "x", "k", "i", "out", "sum"} <= s.names
    assert "math" not in s.names  # imported, never used
    assert "call" in s.names and "amp" not in s.names  # keywords are not names
    kinds = [type(st.node).__name__ for st in s.statements]
    assert kinds[:4] == ["Expr", "Import", "Assign", "Assign"] and kinds.count("Return") == 2
    assert [st.pre for st in s.statements] == sorted(st.pre for st in s.statements)
    assert all(c.func == "build" for c in s.calls if c.name == "call")


def test_ranks_are_postorder():
    """A node's rank is above its parts' ranks, and later siblings rank higher."""
    tree = ast.parse("def f():\n    a = 1 + (2 * 3)\n    return a - 4\n")
    s = Sites.of_module(tree)
    ranks = {n.value: n.rank for n in s.numbers}
    assert ranks[2] == ranks[3]  # both held by the same "2 * 3"
    assert ranks[1] > ranks[2]  # "1 + (...)" is left after its part "2 * 3"
    assert ranks[4] > ranks[1]  # the return comes after the assignment
    ops = {type(o.node.op).__name__: o.rank for o in s.operators}
    assert ops["Mult"] < ops["Add"] < ops["Sub"]
    assert s.blocks[0].rank > max(ranks.values())  # the def holds everything


def test_unicode_and_line_breaks():
    text = 'def f():\n    s = "é—ü"; x = 1.5\r\n    # form\x0cfeed\n    return x + 2\n'
    src = Source(text)
    assert len(src.lines) == 4  # \x0c is not a line break for Python
    s = Sites.of_module(ast.parse(text), src)
    assert [text[n.start : n.end] for n in s.numbers] == ["1.5", "2"]
    assert s.numbers[1].stmt == 4


def test_whole_lines_and_statement_lines():
    text = "def f():\n    a = 1  # one\n    b = 2; c = 3\n    return (a +\n            b)\n"
    src = Source(text)
    body = ast.parse(text).body[0].body
    assert src.whole_lines(body[0])
    assert not src.whole_lines(body[1]) and not src.whole_lines(body[2])
    assert src.whole_lines(body[3])
    start, end = src.statement_lines(body[3])
    assert text[start:end] == "    return (a +\n            b)\n"


def test_removal_takes_comments_of_a_paragraph_end():
    text = (
        "def f():\n    a = 1\n    # about b\n    b = 2\n\n    # about c\n    c = 3\n    return a\n"
    )
    src = Source(text)
    body = ast.parse(text).body[0].body
    plain, wider = src.removal(body[1])  # b ends its paragraph
    assert splice(text, [plain]) == text.replace("    b = 2\n", "")
    assert splice(text, [wider]) == text.replace("    # about b\n    b = 2\n", "")
    plain, wider = src.removal(body[2])  # c does not end its paragraph
    assert wider is None and splice(text, [plain]) == text.replace("    c = 3\n", "")
    # a paragraph after a blank line: removing it does not leave two blank lines
    text2 = "def f():\n    a = 1\n\n    # b\n    b = 2\n\n    return a\n"
    body2 = ast.parse(text2).body[0].body
    _, wider = Source(text2).removal(body2[1])
    assert splice(text2, [wider]) == "def f():\n    a = 1\n\n    return a\n"


def test_insert_before_keeps_indentation_and_blank_lines():
    text = "def f():\n    a = 1\n\n    return a\n"
    src = Source(text)
    edit = src.insert_before(4, "    ", ["# more", "b = 2", "", "c = 3"])
    assert splice(text, [edit]) == (
        "def f():\n    a = 1\n\n    # more\n    b = 2\n\n    c = 3\n\n    return a\n"
    )
    edit = src.insert_before(2, "    ", ["z = 0"])
    assert splice(text, [edit]) == "def f():\n    z = 0\n    a = 1\n\n    return a\n"


def test_splice():
    text = "abcdef"
    assert splice(text, [(4, 5, "E"), (0, 1, "A"), (2, 2, "+")]) == "Ab+cdEf"
    assert splice(text, []) == text
    assert splice(text, [(0, 3, "x"), (2, 4, "y")]) is None  # overlapping


def test_literal_text_keeps_the_style(text_sites):
    nums = by_text(text_sites)
    legs, speed, half = nums["4"][0], nums["-0.25"][0], nums["0.5"][0]
    assert literal_text(legs, 5.4) == "5" and literal_text(legs, 4.2) is None
    assert literal_text(speed, -0.3) == "-0.3" and literal_text(speed, -0.251) == "-0.251"
    assert literal_text(speed, -0.25) is None
    assert literal_text(half, 0.25) == "0.2"  # one decimal, as written
    assert literal_text(half, 0.52) == "0.52"  # one more when one is not enough
    # a right operand keeps its sign: no "x * -1.5"
    assert literal_text(nums["1.5"][0], -2.0) == "2.0"


def test_number_edits_change_only_literals_and_keep_comments(text_sites):
    nums = by_text(text_sites)
    edits = number_edits([(nums["4"][0], 6), (nums["0.25"][0], -0.5), (nums["1.5"][0], 1.5)])
    child = splice(PROGRAM, edits)
    assert child is not None
    assert "N_LEGS = 6  # legs\n" in child
    assert "y = x * 1.5 - 0.5  # a line\n" in child  # the sign moved to the operator
    before, after = PROGRAM.splitlines(), child.splitlines()
    assert len(before) == len(after)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 2
    assert number_edits([(nums["1.5"][0], 1.5)]) is None


def test_random_number_edits_touch_only_their_literal():
    """Any literal, any new value: the child differs from the parent only inside that
    literal (and the operator before it) and parses to the expected value."""
    rng = random.Random(1234)
    tree = ast.parse(PROGRAM)
    sites = Sites.of_module(tree, Source(PROGRAM), ROLES)
    for _ in range(300):
        n = rng.choice(sites.numbers)
        value = round(rng.uniform(-20, 20), rng.randint(0, 3))
        edits = number_edits([(n, value)])
        if edits is None:
            continue
        child = splice(PROGRAM, edits)
        lo = min(e[0] for e in edits)
        hi = max(e[1] for e in edits)
        assert child[:lo] == PROGRAM[:lo]
        assert child[len(child) - (len(PROGRAM) - hi) :] == PROGRAM[hi:]
        ast.parse(child)


# --------------------------------------------------------------------------- tree edits


def test_transaction_edits_and_rolls_back():
    tree = ast.parse("def f(x):\n    a = [1, 2]\n    return a\n")
    before = ast.dump(tree)
    s = Sites.of_module(tree)
    tx = Transaction()
    one = s.numbers[0]
    tx.replace(one.holder, one.field, one.index, number_node(9, one.node))
    body = s.blocks[0].body
    tx.touch_list(body)
    body.insert(0, ast.Pass())
    tx.set_attr(tree.body[0], "name", "g")
    tx.dirty.add(0)
    assert ast.unparse(tree) == "def g(x):\n    pass\n    a = [9, 2]\n    return a"
    tx.rollback()
    assert ast.dump(tree) == before and tx.undo == []


@pytest.mark.parametrize(
    ("arg", "delta", "want"),
    [("3", 1, "4"), ("-1", -1, "-2"), ("N", 1, "N + 1"), ("N + 1", -1, "N"), ("N - 2", 1, "N - 1")],
)
def test_shift_expr(arg, delta, want):
    node = ast.parse(arg, mode="eval").body
    assert ast.unparse(shift_expr(node, delta)) == want


def test_scale_expr():
    def scaled(arg, double):
        out = scale_expr(ast.parse(arg, mode="eval").body, double)
        return None if out is None else ast.unparse(out)

    assert scaled("6", True) == "12" and scaled("6", False) == "3"
    assert scaled("1", False) == "0" and scaled("0", True) is None
    assert scaled("len(x)", True) == "len(x) * 2" and scaled("n", False) == "n // 2"


@pytest.mark.parametrize(
    "program",
    [
        PROGRAM,
        "x = 1\n",
        "import math\n\nclass C:\n    '''d'''\n    a = 1\n\nasync def g():\n    pass\n",
        "@dec\ndef f():\n    return 1\nx = f()\n",
        "'''only a docstring'''\n",
    ],
)
def test_unparse_statement_joins_to_unparse(program):
    tree = ast.parse(program)
    parts = "".join(unparse_statement(s, i) for i, s in enumerate(tree.body))
    assert parts == ast.unparse(tree)


def test_is_docstring():
    body = ast.parse('def f():\n    """d"""\n    "not a docstring"\n    return 1\n').body[0].body
    assert is_docstring(body, 0) and not is_docstring(body, 1) and not is_docstring(body, 2)


def test_parsed_program_reindexes_and_unparses_only_dirty_statements():
    indexed: list[int] = []

    def index(i, stmt):
        indexed.append(i)
        return Sites([(i, stmt)])

    def join(parts):
        return [n for p in parts for n in p.numbers]

    parsed = ParsedProgram("a = 1\nb = 2\n\ndef f():\n    return 3\n", index, join)
    assert indexed == [0, 1, 2] and [n.value for n in parsed.sites] == [1, 2, 3]
    tx = Transaction()
    n = parsed.sites[1]
    tx.replace(n.holder, n.field, n.index, number_node(5, n.node))
    tx.dirty.add(n.top)
    indexed.clear()
    assert [n.value for n in parsed.sites_after(tx.dirty)] == [1, 5, 3]
    assert indexed == [1]
    assert parsed.unparse(tx.dirty) == "a = 1\nb = 5\n\ndef f():\n    return 3\n"
    tx.rollback()
    assert parsed.unparse(set()) == "a = 1\nb = 2\n\ndef f():\n    return 3\n"
    with pytest.raises(SyntaxError):
        ParsedProgram("def f(:\n", index, join)
