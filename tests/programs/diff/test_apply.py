"""Tests for jelm.programs.diff.place and .apply: a diff applied exactly or fuzzily (ELM §3.1).

The round trips use the real seed programs and the real diff writer
(``jelm.mutation.base.unified_diff``); the "language-model-like" cases are the ways a
model's diff goes wrong in practice: drifted line numbers, miscounted hunk headers, no
file header, whitespace that differs from the source, text after the diff.
"""

from __future__ import annotations

import ast
import difflib
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.mutation.base import unified_diff
from jelm.programs.diff import (
    MAX_FUZZ,
    Applied,
    DiffError,
    apply_diff,
    extract_diff,
    parse_unified_diff,
)
from tests.programs.diff.helpers import SQUARE, kind_of

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------- helpers

# New line text: printable ASCII, tabs and spaces (no characters str.splitlines would treat
# as line breaks, which the diff writer would split on).
LINE_TEXT = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\t "),
    max_size=30,
)

Edit = tuple[str, float, str]  # (kind, relative position in [0, 1), new text)
EDITS = st.lists(
    st.tuples(
        st.sampled_from(["replace", "insert", "delete"]),
        st.floats(0, 1, exclude_max=True),
        LINE_TEXT,
    ),
    min_size=1,
    max_size=6,
)


def edit_lines(lines: list[str], edits: list[Edit]) -> list[str]:
    """Apply line edits (positions relative to the current length) to a copy of ``lines``."""
    out = list(lines)
    for kind, where, text in edits:
        if kind == "insert":
            out.insert(int(where * (len(out) + 1)), text)
        elif out:
            at = int(where * len(out))
            if kind == "replace":
                out[at] = text
            else:
                del out[at]
    return out


def join(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def collapse(line: str) -> str:
    return " ".join(line.split())


def unique_blocks(source: str, diff: str, key=lambda line: line) -> bool:
    """Whether every hunk's old lines occur exactly once in ``source`` (under ``key``), so
    a search that ignores the stated line numbers has exactly one right answer."""
    src = [key(line) for line in source.split("\n")[:-1]]
    for hunk in parse_unified_diff(diff):
        old = [key(line) for line in hunk.old_lines]
        hits = sum(src[i : i + len(old)] == old for i in range(len(src) - len(old) + 1))
        if hits != 1:
            return False
    return True


def shift_headers(diff: str, k: int) -> str:
    """Move every hunk header's old start by ``k`` lines (a model's drifted line numbers)."""

    def shift(m: re.Match[str]) -> str:
        return f"@@ -{int(m.group(1)) + k}{m.group(2)}"

    return re.sub(r"^@@ -(\d+)(,\d+)?", shift, diff, flags=re.MULTILINE)


# --------------------------------------------------------------------------- round trips


@PROPERTY
@given(name=st.sampled_from(SEED_NAMES), edits=EDITS)
def test_round_trip_exact(name, edits):
    a = seed_source(name)
    b = join(edit_lines(a.splitlines(), edits))
    assume(a != b)
    diff = unified_diff(a, b, "walker.py")
    applied = apply_diff(a, diff)
    assert isinstance(applied, Applied)
    assert applied.program == b
    assert applied.exact
    assert applied.offsets == (0,) * len(parse_unified_diff(diff))
    assert apply_diff(a, diff, fuzzy=False) == applied


@PROPERTY
@given(name=st.sampled_from(SEED_NAMES), edits=EDITS, k=st.integers(-6, 6).filter(bool))
def test_drifted_line_numbers_still_apply(name, edits, k):
    a = seed_source(name)
    b = join(edit_lines(a.splitlines(), edits))
    assume(a != b)
    diff = unified_diff(a, b, "walker.py")
    hunks = parse_unified_diff(diff)
    assume(min(h.old_start for h in hunks) + k >= 1)
    assume(unique_blocks(a, diff))
    applied = apply_diff(a, shift_headers(diff, k))
    assert applied.program == b
    assert not applied.exact
    assert applied.offsets == (-k,) * len(hunks)
    assert kind_of(a, shift_headers(diff, k), fuzzy=False) == "context_mismatch"


def _trailing_spaces(lines: list[str], rng: np.random.Generator) -> list[str]:
    return [line + " " * int(rng.integers(1, 4)) if rng.random() < 0.4 else line for line in lines]


def _tabs_for_spaces(lines: list[str], rng: np.random.Generator) -> list[str]:
    out = []
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        out.append("\t" * (indent // 4) + " " * (indent % 4) + line[indent:])
    return out


def _two_space_indent(lines: list[str], rng: np.random.Generator) -> list[str]:
    out = []
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        out.append(" " * (indent // 2) + line[indent:])
    return out


@PROPERTY
@given(
    name=st.sampled_from(SEED_NAMES),
    edits=EDITS,
    change=st.sampled_from([_trailing_spaces, _tabs_for_spaces, _two_space_indent]),
    seed=st.integers(0, 2**16),
)
def test_whitespace_changes_in_the_source_still_apply(name, edits, change, seed):
    """The diff is written against the clean seed; the source it is applied to has
    different whitespace. Context lines keep the source's whitespace."""
    a = seed_source(name)
    lines = a.splitlines()
    changed = change(lines, np.random.default_rng(seed))
    assume(changed != lines)
    source = join(changed)
    b_lines = edit_lines(lines, edits)
    assume(b_lines != lines)
    diff = unified_diff(a, join(b_lines), "walker.py")
    assume(unique_blocks(source, diff, key=collapse))
    applied = apply_diff(source, diff)
    hunks = parse_unified_diff(diff)
    # exact exactly when no hunk touches a line whose whitespace changed
    untouched = all(
        changed[h.old_start - 1 : h.old_start - 1 + h.old_len] == h.old_lines for h in hunks
    )
    assert applied.exact == untouched
    assert applied.offsets == (0,) * len(hunks)
    # What the result must be, restated with the matcher the diff writer uses: lines the
    # diff keeps are the source's own lines, exactly; lines it adds are the child's, as
    # written or re-indented the way the source indents.
    result = applied.program.splitlines()
    assert len(result) == len(b_lines)
    matcher = difflib.SequenceMatcher(None, lines, b_lines)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            assert result[j1:j2] == changed[i1:i2]
        else:
            for got, want in zip(result[j1:j2], b_lines[j1:j2], strict=True):
                assert got in (want, change([want], np.random.default_rng(0))[0])
    if change is _trailing_spaces:  # the same indents: the added lines are as written
        assert all(line in changed or line in b_lines for line in result)


def test_whitespace_match_reindents_added_lines_like_the_source():
    """A diff written with 4-space indents applied to a tab-indented program: the added
    lines get the source's tabs, so the child does not mix tabs and spaces."""
    a = seed_source("square")
    b = a.replace(
        "    center = wc.add_joint(5, 5)\n",
        "    center = wc.add_joint(5, 6)\n    if center:\n        center = center\n",
    )
    tabs = join(_tabs_for_spaces(a.splitlines(), np.random.default_rng(0)))
    applied = apply_diff(tabs, unified_diff(a, b, "walker.py"))
    assert not applied.exact
    assert applied.program == join(_tabs_for_spaces(b.splitlines(), np.random.default_rng(0)))
    ast.parse(applied.program)


# --------------------------------------------------------------------- mismatch and fuzz


def test_context_mismatch_names_the_hunk_and_the_line():
    diff = unified_diff(SQUARE, SQUARE.replace("add_joint(5, 5)", "add_joint(5, 6)"), "walker.py")
    bad = diff.replace(" corners = make_square(wc, 0, 0, 10)", " corners = make_circle(wc)")
    bad = bad.replace("-    center = wc.add_joint(5, 5)", "-    centre = wc.add_joint(5, 5)")
    with pytest.raises(DiffError) as info:
        apply_diff(SQUARE, bad)
    assert info.value.kind == "context_mismatch"
    message = str(info.value)
    assert "hunk 1" in message
    assert "make_circle" in message  # the first line that did not match ...
    assert "line 23" in message  # ... and where
    # a second hunk that fails is named as such
    two = unified_diff(
        SQUARE, SQUARE.replace("(5, 5)", "(5, 6)").replace("10.0, 0.0", "9.0, 0.0"), "walker.py"
    )
    assert len(parse_unified_diff(two)) == 2
    broken = two.replace("-    wc.add_muscle(corners[1], center, False, 10.0, 0.0)", "-    nope")
    with pytest.raises(DiffError) as info:
        apply_diff(SQUARE, broken)
    assert info.value.kind == "context_mismatch"
    assert "hunk 2" in str(info.value) and "'    nope'" in str(info.value)


def test_fuzz_ignores_up_to_two_context_lines_and_no_more():
    """Like GNU patch's default fuzz: the context next to a change may have been edited
    since the diff was written; up to 2 leading/trailing context lines may differ."""
    assert MAX_FUZZ == 2
    diff = unified_diff(SQUARE, SQUARE.replace("add_joint(5, 5)", "add_joint(5, 6)"), "walker.py")
    (hunk,) = parse_unified_diff(diff)
    assert [t for t, _ in hunk.lines] == [" ", " ", " ", "-", "+", " ", " ", " "]
    edited = SQUARE.replace("# The body is a 10 x 10", "# The torso is a 10 x 10").replace(
        "for k in range(len(corners)):", "for k in range(4):"
    )  # the 2nd of 3 leading and the last of 3 trailing context lines
    applied = apply_diff(edited, diff)
    assert applied.program == edited.replace("add_joint(5, 5)", "add_joint(5, 6)")
    assert not applied.exact and applied.offsets == (0,)
    # the 3rd leading context line as well: more than fuzz 2 may ignore
    worse = edited.replace("make_square(wc, 0, 0, 10)", "make_square(wc, 0, 0, 12)")
    with pytest.raises(DiffError) as info:
        apply_diff(worse, diff)
    assert info.value.kind == "context_mismatch"
    assert "# The body is a 10 x 10" in str(info.value)  # the first line that differs
    # a removed line is never fuzzed away
    assert kind_of(SQUARE.replace("add_joint(5, 5)", "add_joint(5, 4)"), diff) == (
        "context_mismatch"
    )


def test_language_model_like_completion():
    """No file header, wrong hunk counts, drifted line numbers, a context line whose space
    was stripped, whitespace damage, then chatter and another example."""
    completion = (
        "\n"
        "@@ -19,3 +19,3 @@\n"  # really line 21, 7 old lines, 8 new
        "\n"  # blank context line without its leading space
        "     # The body is a 10 x 10 square resting on the ground, with a joint in its centre.\n"
        "    corners = make_square(wc, 0, 0, 10)   \n"  # trailing spaces
        "-    center = wc.add_joint(5, 5)\n"
        "+    center = wc.add_joint(5, 7)\n"
        "+    spare = wc.add_joint(12, 3)\n"
        " \n"
        "     # The sides are passive bones.\n"
        "     for k in range(len(corners)):\n"
        "I changed the centre joint and added a spare joint.\n"
        "```\n"
        "<|endoftext|><NME> walker.py\n<BEF> junk\n"
    )
    diff = extract_diff(completion)
    assert diff.startswith("@@ -19,3")
    (hunk,) = parse_unified_diff(diff)
    assert (hunk.old_len, hunk.new_len) == (7, 8)  # counted from the body
    applied = apply_diff(SQUARE, diff)
    expected = SQUARE.replace(
        "    center = wc.add_joint(5, 5)\n",
        "    center = wc.add_joint(5, 7)\n    spare = wc.add_joint(12, 3)\n",
    )
    assert applied.program == expected
    assert not applied.exact
    assert applied.offsets == (2,)


# ------------------------------------------------------------- insertion, hunks, overlap


def test_pure_insertion():
    source = "a\nb\nc\n"
    inserted = apply_diff(source, "@@ -2,0 +3,2 @@\n+x\n+y\n")  # after line 2
    assert inserted == Applied("a\nb\nx\ny\nc\n", exact=True, offsets=(0,))
    assert apply_diff(source, "@@ -0,0 +1 @@\n+top\n").program == "top\na\nb\nc\n"
    assert apply_diff(source, "@@ -3,0 +4 @@\n+end\n").program == "a\nb\nc\nend\n"
    assert apply_diff("", "@@ -0,0 +1,2 @@\n+x = 1\n+y = 2\n").program == "x = 1\ny = 2\n"
    # past the end: clamped to the end, not exact
    clamped = apply_diff(source, "@@ -40,0 +41 @@\n+end\n")
    assert clamped.program == "a\nb\nc\nend\n"
    assert not clamped.exact and clamped.offsets == (-37,)
    assert kind_of(source, "@@ -40,0 +41 @@\n+end\n", fuzzy=False) == "context_mismatch"


def test_multiple_hunks_with_different_drifts():
    child = (
        SQUARE.replace('"""Square: a square', '"""Square: a small square')
        .replace("(5, 5)", "(5, 6)")
        .replace("10.0, 0.0)", "7.5, 0.25)")
    )
    diff = unified_diff(SQUARE, child, "walker.py")
    hunks = parse_unified_diff(diff)
    assert len(hunks) == 3
    assert apply_diff(SQUARE, diff) == Applied(child, exact=True, offsets=(0, 0, 0))
    starts = [h.old_start for h in hunks]
    drifted = diff
    for start, k in zip(starts, (0, 3, -2), strict=True):
        drifted = drifted.replace(f"@@ -{start},", f"@@ -{start + k},", 1)
    applied = apply_diff(SQUARE, drifted)
    assert applied.program == child
    assert applied.offsets == (0, -3, 2)
    assert not applied.exact


def test_overlapping_hunks_are_refused():
    source = "a\nb\nc\nd\ne\n"
    overlap = "@@ -2,2 +2,2 @@\n b\n-c\n+C\n@@ -3 +3 @@\n-c\n+X\n"
    with pytest.raises(DiffError) as info:
        apply_diff(source, overlap)
    assert info.value.kind == "context_mismatch"
    assert "hunk 2" in str(info.value) and "overlap" in str(info.value)
    # hunks out of order are refused the same way
    out_of_order = "@@ -4 +4 @@\n-d\n+D\n@@ -2 +2 @@\n-b\n+B\n"
    assert kind_of(source, out_of_order) == "context_mismatch"
    # adjacent hunks are fine
    adjacent = "@@ -2 +2 @@\n-b\n+B\n@@ -3 +3 @@\n-c\n+C\n"
    assert apply_diff(source, adjacent).program == "a\nB\nC\nd\ne\n"


# ------------------------------------------------------------------------ final newlines


def test_final_newline_state():
    change_last = "@@ -2 +2 @@\n-b\n+B\n"
    # kept as the source has it, when the diff does not say
    assert apply_diff("a\nb\n", change_last).program == "a\nB\n"
    assert apply_diff("a\nb", change_last).program == "a\nB"
    # the diff says so with '\ No newline at end of file'
    marker = "\\ No newline at end of file\n"
    assert apply_diff("a\nb", f"@@ -2 +2 @@\n-b\n{marker}+B\n").program == "a\nB\n"
    assert apply_diff("a\nb\n", f"@@ -2 +2 @@\n-b\n+B\n{marker}").program == "a\nB"
    assert apply_diff("a\nb", f"@@ -2 +2 @@\n-b\n{marker}+B\n{marker}").program == "a\nB"
    (hunk,) = parse_unified_diff(f"@@ -1,2 +1,2 @@\n a\n-b\n{marker}+B")
    assert hunk.old_no_newline and not hunk.new_no_newline
    assert [tag for tag, _ in hunk.lines] == [" ", "-", "+"]
    # a marker on a hunk that does not reach the end of the file is ignored
    assert apply_diff("a\nb\n", f"@@ -1 +1 @@\n-a\n+A\n{marker}").program == "A\nb\n"
