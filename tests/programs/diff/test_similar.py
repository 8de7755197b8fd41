"""Tests for jelm.programs.diff.similar: hunks placed by line similarity, the way a small
diff model's imperfect copies of the parent go wrong (ELM §3.1)."""

from __future__ import annotations

import difflib
from types import SimpleNamespace

import numpy as np
import pytest

from jelm.lm.operators import LMDiffOperator, LMOptions
from jelm.mutation.base import Parent
from jelm.programs.diff import DiffError, apply_diff
from tests.programs.diff.helpers import kind_of

PARENT = """\
from jelm.programs.walker_api import walker_creator

SPAN = 8.0


def make_walker():
    w = walker_creator()
    left = w.add_joint(0.0, 0.0)
    right = w.add_joint(SPAN, 0.0)
    top = w.add_joint(SPAN / 2, 6.0)
    w.add_muscle(left, right)
    w.add_muscle(left, top, False, 3.0, 0.25)
    w.add_muscle(right, top, False, 3.0, 0.75)
    return w.get_walker()
"""


def test_made_up_context_and_a_number_off_still_apply():
    """The model's hunk invents a comment line and copies the removed muscle with its
    phase off by 0.05: placed by similarity, the parent's line is the one replaced."""
    diff = """\
@@ -10,5 +10,5 @@
     top = w.add_joint(SPAN / 2, 6.0)
     # the legs swing half a cycle apart
     w.add_muscle(left, right)
-    w.add_muscle(left, top, False, 3.0, 0.2)
+    w.add_muscle(left, top, False, 5.0, 0.2)
     w.add_muscle(right, top, False, 3.0, 0.75)
"""
    assert kind_of(PARENT, diff) == "context_mismatch"
    applied = apply_diff(PARENT, diff, similar=0.9)
    assert applied.how == "similar" and not applied.exact
    assert applied.program == PARENT.replace(
        "w.add_muscle(left, top, False, 3.0, 0.25)", "w.add_muscle(left, top, False, 5.0, 0.2)"
    )
    assert applied.offsets == (0,)  # its first line, `top = ...`, is where it says


def test_lines_the_hunk_left_out_stay_and_added_lines_go_after_their_anchor():
    diff = """\
@@ -6,6 +6,8 @@
 def make_walker():
     w = walker_creator()
     left = w.add_joint(0.0, 0.0)
+    mid = w.add_joint(4.0, 1.0)
     w.add_muscle(left, right)
     w.add_muscle(left, top, False, 3.0, 0.25)
+    w.add_muscle(left, mid)
     w.add_muscle(right, top, False, 3.0, 0.75)
"""  # the hunk skips `right = ...` and `top = ...`
    assert kind_of(PARENT, diff) == "context_mismatch"
    applied = apply_diff(PARENT, diff, similar=0.9)
    assert applied.how == "similar"
    assert applied.program.splitlines()[5:] == [
        "def make_walker():",
        "    w = walker_creator()",
        "    left = w.add_joint(0.0, 0.0)",
        "    mid = w.add_joint(4.0, 1.0)",
        "    right = w.add_joint(SPAN, 0.0)",
        "    top = w.add_joint(SPAN / 2, 6.0)",
        "    w.add_muscle(left, right)",
        "    w.add_muscle(left, top, False, 3.0, 0.25)",
        "    w.add_muscle(left, mid)",
        "    w.add_muscle(right, top, False, 3.0, 0.75)",
        "    return w.get_walker()",
    ]


def test_a_removed_line_like_nothing_in_the_parent_is_refused():
    diff = """\
@@ -11,2 +11,2 @@
     w.add_muscle(left, right)
-    hub = w.add_joint(3.0, 9.0)
+    hub = w.add_joint(3.0, 8.0)
"""
    with pytest.raises(DiffError) as info:
        apply_diff(PARENT, diff, similar=0.9)
    assert info.value.kind == "context_mismatch"
    assert "hub = w.add_joint(3.0, 9.0)" in str(info.value)
    assert "similarity >= 0.9" in str(info.value)


def test_a_hunk_of_made_up_lines_only_is_refused():
    diff = "@@ -3,2 +3,3 @@\n # a comment nobody wrote\n+EXTRA = 1\n # another one\n"
    assert kind_of(PARENT, diff, similar=0.9) == "context_mismatch"


def test_threshold_decides_and_none_turns_it_off():
    diff = "@@ -12,1 +12,1 @@\n-    w.add_muscle(left, top, False, 3.5, 0.5)\n+    pass\n"
    # `w.add_muscle(left, top, False, 3.0, 0.25)` against the removed line: 0.96
    assert apply_diff(PARENT, diff, similar=0.9).how == "similar"
    assert kind_of(PARENT, diff, similar=0.97) == "context_mismatch"
    assert kind_of(PARENT, diff) == "context_mismatch"  # similar=None by default
    assert kind_of(PARENT, diff, fuzzy=False, similar=0.9) == "context_mismatch"
    with pytest.raises(ValueError, match="threshold"):
        apply_diff(PARENT, diff, similar=0.0)


def test_two_hunks_in_order_and_tabs_in_the_parent():
    """Hunks are placed in order after one another; a parent indented with tabs gets its
    added lines in tabs."""
    tabbed = PARENT.replace("    ", "\t")
    diff = """\
@@ -8,2 +8,2 @@
     left = w.add_joint(0.0, 0.0)
-    right = w.add_joint(SPAN, 0.5)
+    right = w.add_joint(SPAN, 2.0)
@@ -13,2 +13,3 @@
     w.add_muscle(right, top, False, 3.0, 0.75)
+    w.add_muscle(left, top)
     return w.get_walker()
"""
    applied = apply_diff(tabbed, diff, similar=0.9)
    assert applied.how == "similar"
    want = tabbed.replace("w.add_joint(SPAN, 0.0)", "w.add_joint(SPAN, 2.0)").replace(
        "\treturn w.get_walker()", "\tw.add_muscle(left, top)\n\treturn w.get_walker()"
    )
    assert applied.program == want


def test_exact_and_fuzzy_diffs_are_placed_as_before():
    child = PARENT.replace("3.0, 0.75", "4.0, 0.75")
    diff = "".join(
        difflib.unified_diff(
            PARENT.splitlines(True), child.splitlines(True), "walker.py", "walker.py"
        )
    )
    assert apply_diff(PARENT, diff, similar=0.9).how == "exact"
    shifted = diff.replace("@@ -10,5 +10,5 @@", "@@ -12,5 +12,5 @@")
    assert shifted != diff
    got = apply_diff(PARENT, shifted, similar=0.9)
    assert got.how == "fuzzy" and got.program == child


class _Completions:
    """A backend that answers every prompt with one fixed completion."""

    name = "fixed"

    def __init__(self, text: str):
        self.text = text

    def complete(self, prompts, **_):
        return [SimpleNamespace(text=self.text, error=None, tokens=1) for _ in prompts]


def test_lm_diff_uses_similar_placement_by_default_and_the_option_turns_it_off():
    diff = "@@ -12,1 +12,1 @@\n-    w.add_muscle(left, top, False, 3.0, 0.2)\n+    pass\n"
    messages = [("Changed make_walker function.", 1.0)]
    rng = np.random.default_rng(0)
    (child,) = LMDiffOperator(_Completions(diff), messages, "walker.py").mutate(
        [Parent(0, PARENT)], rng
    )
    assert child.ok and "    pass\n" in child.program
    off = LMDiffOperator(_Completions(diff), messages, "walker.py", similar=None)
    (failed,) = off.mutate([Parent(0, PARENT)], rng)
    assert failed.failure == "diff_context_mismatch"
    assert LMOptions(similar=0.3).problems()[0].startswith("lm.similar must be null or in")
    assert LMOptions(similar=None).problems() == []
