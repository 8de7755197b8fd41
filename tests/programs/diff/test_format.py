"""Tests for jelm.programs.diff.format: ELM's diff-model prompt format (§3.1)."""

from __future__ import annotations

import numpy as np
import pytest

from jelm.mutation.base import unified_diff
from jelm.programs.diff import (
    BEF,
    DFF,
    EOS,
    MSG,
    NME,
    apply_diff,
    elm_example,
    elm_prompt,
    extract_diff,
    sample_message,
)
from tests.programs.diff.helpers import SQUARE

MESSAGES = (("structure", 0.5), ("parameters", 0.25), ("small", 0.25))


def test_sample_message_follows_the_odds():
    rng = np.random.default_rng(1234)
    n = 10_000
    draws = [sample_message(rng, MESSAGES) for _ in range(n)]
    for message, weight in MESSAGES:
        assert abs(draws.count(message) / n - weight) < 0.02, message
    # deterministic given the generator's seed; odds need not sum to 1
    again = np.random.default_rng(1234)
    assert [sample_message(again, MESSAGES) for _ in range(100)] == draws[:100]
    assert sample_message(rng, (("only", 2.0), ("never", 0.0))) == "only"
    with pytest.raises(ValueError, match="no commit messages"):
        sample_message(rng, ())
    with pytest.raises(ValueError, match="non-negative and finite"):
        sample_message(rng, (("a", -1.0), ("b", 2.0)))


def test_elm_prompt_layout_is_exact():
    parent = "def make_walker():\n    return 1\n\n\n"
    prompt = elm_prompt(parent, "Changed make_walker function.", "walker.py")
    assert prompt == (
        "<NME> walker.py\n"
        "<BEF> def make_walker():\n"
        "    return 1\n"
        "<MSG> Changed make_walker function.\n"
        "<DFF> "
    )
    assert (NME, BEF, MSG, DFF, EOS) == ("<NME>", "<BEF>", "<MSG>", "<DFF>", "<|endoftext|>")
    # the same prompt whether or not the parent ends with newlines; the name is a parameter
    assert elm_prompt(parent.rstrip("\n"), "Changed make_walker function.", "walker.py") == prompt
    assert elm_prompt("x = 1", "m", name="a.py") == "<NME> a.py\n<BEF> x = 1\n<MSG> m\n<DFF> "


def test_elm_example_is_prompt_and_diff():
    child = SQUARE.replace("add_joint(5, 5)", "add_joint(5, 6)")
    diff = unified_diff(SQUARE, child, "walker.py")
    prompt, target = elm_example(SQUARE, "Small change to make_walker function.", diff, "walker.py")
    assert prompt == elm_prompt(SQUARE, "Small change to make_walker function.", "walker.py")
    assert target == diff
    # what a perfect model would complete the prompt with, then the next example
    completion = target + EOS + NME + " other.py\n"
    assert apply_diff(SQUARE, extract_diff(completion)).program == child


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("@@ -1 +1 @@\n-a\n+b\n<|endoftext|>@@ -9 +9 @@\n", "@@ -1 +1 @@\n-a\n+b\n"),
        ("@@ -1 +1 @@\n-a\n+b\n<NME> walker.py\n<BEF> a\n", "@@ -1 +1 @@\n-a\n+b\n"),
        ("@@ -1 +1 @@\n-a\n+b\n<BEF> x", "@@ -1 +1 @@\n-a\n+b\n"),
        ("@@ -1 +1 @@\n-a\n+b\n<MSG> x", "@@ -1 +1 @@\n-a\n+b\n"),
        ("@@ -1 +1 @@\n-a\n+b\n<DFF> x", "@@ -1 +1 @@\n-a\n+b\n"),
        (
            "\n\n  --- walker.py\n+++ walker.py\n@@ -1 +1 @@\n",
            "--- walker.py\n+++ walker.py\n@@ -1 +1 @@\n",
        ),
        (" \n\t@@ -1 +1 @@\n-a\n", "@@ -1 +1 @@\n-a\n"),
        ("\ndiff --git a/w.py b/w.py\n", "diff --git a/w.py b/w.py\n"),
        ("<|endoftext|>", ""),
        ("  no diff here <MSG>", "no diff here "),
    ],
)
def test_extract_diff(completion, expected):
    assert extract_diff(completion) == expected
