"""Tests for jelm.programs.diff.parse: reading a unified diff as a language model writes
it (ELM §3.1), and the failure classes of a diff that cannot be read."""

from __future__ import annotations

import re

import pytest

from jelm.mutation.base import unified_diff
from jelm.programs.diff import Applied, DiffError, apply_diff, parse_unified_diff
from tests.programs.diff.helpers import SQUARE, kind_of


def test_parse_fields():
    text = (
        "--- walker.py\n+++ walker.py\n@@ -3 +3,2 @@ def f():\n-x\n+y\n+z\n@@ -10,2 +11 @@\n p\n-q"
    )
    first, second = parse_unified_diff(text)
    assert (first.old_start, first.old_len, first.new_start, first.new_len) == (3, 1, 3, 2)
    assert first.lines == (("-", "x"), ("+", "y"), ("+", "z"))
    assert (second.old_start, second.old_len, second.new_start, second.new_len) == (10, 2, 11, 1)
    assert second.old_lines == ["p", "q"] and second.new_lines == ["p"]
    # a '---' line inside a hunk, not followed by '+++', is a removed line '--'
    (hunk,) = parse_unified_diff("@@ -1,2 +1 @@\n a\n---\n")
    assert hunk.lines == ((" ", "a"), ("-", "--"))


def test_a_header_without_body_lines_is_skipped():
    diff = "@@ -1,3 +1,3 @@\n@@ -2 +2 @@\n-b\n+B\n"
    assert len(parse_unified_diff(diff)) == 1
    assert apply_diff("a\nb\n", diff) == Applied("a\nB\n", exact=True, offsets=(0,))


# ----------------------------------------------------------------------- failure classes


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t\n"])
def test_empty(text):
    assert kind_of(SQUARE, text) == "empty"
    with pytest.raises(DiffError) as info:
        parse_unified_diff(text)
    assert info.value.kind == "empty"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "@@ -1,2 +1,2\n-a\n+b\n",  # unterminated hunk header
        "@@ -a,b +c,d @@\n-a\n+b\n",  # not numbers
        "@@ ... @@\n-a\n+b\n",
        "@@ -1 +1 @@\n-a\n+b\n@@ +1 -1 @@\n-c\n",  # a bad header after a good hunk
        "--- walker.py\n@@ -1 +1 @@\n-a\n+b\n",  # '---' without '+++'
        "---\n+++\n@@ -1 +1 @@\n-a\n+b\n",  # file headers without names
        "+++ walker.py\n@@ -1 +1 @@\n-a\n+b\n",  # '+++' without '---'
        "-a\n+b\n@@ -1 +1 @@\n-a\n+b\n",  # body lines before the first hunk header
        "--- walker.py\n+++ walker.py\n context\n@@ -1 +1 @@\n-a\n+b\n",
    ],
)
def test_malformed_header(text):
    assert kind_of(SQUARE, text) == "malformed_header"


@pytest.mark.parametrize(
    "text",
    [
        "Sorry, I cannot help with that.",
        "--- walker.py\n+++ walker.py\n",  # headers only
        "-    center = wc.add_joint(5, 5)\n+    center = wc.add_joint(5, 6)\n",  # no @@
        "diff --git a/walker.py b/walker.py\nindex 1234..5678 100644\n",
        "--- walker.py\n+++ walker.py\n@@ -21,7 +21,8 @@",  # a completion cut short
        "@@ -21,7 +21,8 @@\n\n\n",
    ],
)
def test_no_hunk(text):
    assert kind_of(SQUARE, text) == "no_hunk"


# ----------------------------------------------------------------------------- tolerance


def test_hunk_header_without_new_range_is_read():
    """Small diff models write '@@ -a,b @@'; the body carries what the applier needs."""
    child = SQUARE.replace("10", "7", 1)
    diff = re.sub(r" \+\d+,\d+ @@", " @@", unified_diff(SQUARE, child, "walker.py"))
    assert "+" not in diff.split("@@")[1]
    assert apply_diff(SQUARE, diff).program == child


def test_missing_header_and_counts_are_fine():
    diff = "@@ -24 +24 @@\n-    center = wc.add_joint(5, 5)\n+    center = wc.add_joint(5, 6)"
    applied = apply_diff(SQUARE, diff)  # no '---/+++', counts omitted, no final newline
    assert applied.exact
    assert applied.program == SQUARE.replace("(5, 5)", "(5, 6)")


def test_git_headers_and_overcounted_hunk():
    child = SQUARE.replace("(5, 5)", "(5, 6)")
    diff = unified_diff(SQUARE, child, "walker.py")
    git = "diff --git a/walker.py b/walker.py\nindex 83db48f..bf269f4 100644\n" + diff.replace(
        "--- walker.py\n+++ walker.py", "--- a/walker.py\n+++ b/walker.py"
    )
    assert apply_diff(SQUARE, git).program == child
    # the header claims more lines than the body has; blank lines after the diff are not
    # taken as context beyond what the header claims
    over = re.sub(r"^@@ .* @@", "@@ -21,40 +21,40 @@", diff, flags=re.MULTILINE)
    assert apply_diff(SQUARE, over + "\n\n\n").program == child
    under = re.sub(r"^@@ .* @@", "@@ -21,2 +21,2 @@", diff, flags=re.MULTILINE)
    assert apply_diff(SQUARE, under + "\n\n\n").program == child


def test_trailing_blank_lines_after_a_diff_are_not_context():
    source = "a\nb\nc\n"
    assert apply_diff(source, "@@ -3 +3 @@\n-c\n+C\n\n\n").program == "a\nb\nC\n"
