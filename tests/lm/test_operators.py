"""The language-model operators (jelm.lm.operators): how model text becomes children.

Completions come from two real sources: a fixed script of texts (what a model might
write, including broken diffs) served through the operators' backend interface, and the
diff model jelm ships (``jelm/lm/shipped``), sampled for real.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

import numpy as np
import pytest

from jelm.domains.sodarace.prompts import COMMIT_MESSAGES, CROSSOVER_INSTRUCTION, INSTRUCTION
from jelm.domains.sodarace.seeds import seed_source
from jelm.lm.backends import SHIPPED_DIR, Completion
from jelm.lm.operators import (
    LMCrossoverOperator,
    LMDiffOperator,
    LMPromptOperator,
    replace_entry,
)
from jelm.mutation.base import Parent, unified_diff
from jelm.programs.diff import NME, elm_prompt
from jelm.qd.ledger import CandidateRecord

SQUARE = seed_source("square")


class Script:
    """A backend that answers prompts with the given texts, in turn, recording prompts."""

    name = "script"

    def __init__(self, texts: Sequence[str | Exception]):
        self.texts = list(texts)
        self.prompts: list[str] = []
        self.kwargs: list[dict] = []

    def complete(self, prompts: Sequence[str], **kwargs) -> list[Completion]:
        self.prompts += prompts
        self.kwargs.append(kwargs)
        out = []
        for _ in prompts:
            text = self.texts.pop(0)
            if isinstance(text, Exception):
                out.append(Completion("", "error", 0, error=f"{type(text).__name__}: {text}"))
            else:
                out.append(Completion(text, "stop", len(text)))
        return out


def _edit(program: str, old: str, new: str) -> str:
    assert old in program
    return program.replace(old, new, 1)


def test_lm_diff_applies_good_diffs_and_classifies_bad_ones():
    child = _edit(SQUARE, "10", "7")
    good = unified_diff(SQUARE, child, "walker.py")
    # The same diff with line numbers off by 3 (models miscount): applied fuzzily.
    drifted = re.sub(
        r"@@ -(\d+),(\d+) \+(\d+),(\d+) @@",
        lambda m: f"@@ -{int(m[1]) + 3},{m[2]} +{int(m[3]) + 3},{m[4]} @@",
        good,
    )
    assert drifted != good
    script = Script(
        [
            good + "<|endoftext|>",
            drifted,
            "",
            "@@ -1,2 +1,2 @@\n-this line is not in the parent\n+x = 1\n",
            "--- walker.py\n+++\n@@ nonsense @@\n",
            "just some prose, no diff",
            "@@ -1,1 +1,1 @@\n",  # cut off after the hunk header
            ConnectionError("server went away"),
        ]
    )
    op = LMDiffOperator(script, COMMIT_MESSAGES, "walker.py")
    parents = [Parent(i, SQUARE) for i in range(8)]
    children = op.mutate(parents, np.random.default_rng(0))
    assert [c.parent_ids for c in children] == [(i,) for i in range(8)]
    assert children[0].ok and children[0].program == child and children[0].failure is None
    assert children[1].ok and children[1].program == child
    failures = [c.failure for c in children[2:]]
    assert failures == [
        "diff_empty",
        "diff_context_mismatch",
        "diff_malformed_header",
        "diff_no_hunk",
        "diff_no_hunk",
        "backend_error",
    ]
    assert "server went away" in children[-1].error
    # Every prompt is the paper's diff format with one of the paper's messages.
    messages = {m for m, _ in COMMIT_MESSAGES}
    for prompt, c in zip(script.prompts, children, strict=True):
        assert c.message in messages
        assert prompt == elm_prompt(SQUARE, c.message, "walker.py")
    assert set(script.kwargs[0]["stop"]) >= {NME}
    # The ledger records the failure class as the candidate's status.
    records = [CandidateRecord.from_child(c) for c in children]
    assert [r.status for r in records[2:]] == failures
    assert records[0].status == "not_evaluated"


def test_lm_diff_refuses_a_diff_that_changes_nothing():
    diff = "@@ -1,1 +1,1 @@\n-" + SQUARE.splitlines()[0] + "\n+" + SQUARE.splitlines()[0] + "\n"
    (child,) = LMDiffOperator(Script([diff]), COMMIT_MESSAGES, "walker.py").mutate(
        [Parent(1, SQUARE)], np.random.default_rng(0)
    )
    assert child.failure == "diff_unchanged" and child.program is None


def test_lm_diff_drops_the_unfinished_line_of_a_completion_cut_by_length():
    good = unified_diff(SQUARE, _edit(SQUARE, "10", "7"), "walker.py")
    cut = good + "+    wc.add_muscle(corners[0], cen"

    class Cut(Script):
        def complete(self, prompts, **kwargs):
            return [Completion(c.text, "length", c.tokens) for c in super().complete(prompts)]

    op = LMDiffOperator(Cut([cut]), COMMIT_MESSAGES, "walker.py")
    (child,) = op.mutate([Parent(1, SQUARE)], np.random.default_rng(0))
    assert child.program == _edit(SQUARE, "10", "7")
    # a completion that stopped keeps every line (its last one is then an error)
    (stopped,) = LMDiffOperator(Script([cut]), COMMIT_MESSAGES, "walker.py").mutate(
        [Parent(1, SQUARE)], np.random.default_rng(0)
    )
    assert "cen" in stopped.program


def test_lm_diff_samples_again_while_a_child_cannot_run():
    good = unified_diff(SQUARE, _edit(SQUARE, "10", "7"), "walker.py")
    other = unified_diff(SQUARE, _edit(SQUARE, "10", "8"), "walker.py")
    third = unified_diff(SQUARE, _edit(SQUARE, "10", "9"), "walker.py")
    undefined = unified_diff(SQUARE, _edit(SQUARE, "center)", "knee2)"), "walker.py")
    broken = unified_diff(SQUARE, _edit(SQUARE, "center)", "center"), "walker.py")
    mismatch = "@@ -1,2 +1,2 @@\n-this line is not in the parent\n+x = 1\n"
    script = Script(
        [
            *(good, undefined, mismatch, ConnectionError("down")),  # every parent once
            *(broken, mismatch, other, third),  # rows 1, 2, 1, 2: the two that failed
            *(mismatch, undefined, mismatch, undefined),  # row 2 four times, a last try
        ]
    )
    op = LMDiffOperator(script, COMMIT_MESSAGES, "walker.py", retries=2)
    children = op.mutate([Parent(i, SQUARE) for i in range(4)], np.random.default_rng(0))
    assert children[0].program == _edit(SQUARE, "10", "7")
    # a row keeps its first copy that passes: row 1 its second, row 2 its first in try 2
    assert children[1].program == _edit(SQUARE, "10", "8")
    assert children[2].program == _edit(SQUARE, "10", "9")
    assert children[3].failure == "backend_error"  # a new sample would not mend the server
    assert op.drawn == 8 and len(script.texts) == 4  # no third call: nothing left to mend
    seeds = [k["seed"] for k in script.kwargs]
    assert seeds == [seeds[0], seeds[0] + 1]
    # a retry call has the first call's size and keeps each row's commit message
    first = script.prompts[:4]
    assert script.prompts[4:] == [first[1], first[2], first[1], first[2]]
    assert [c.message for c in children[1:3]] == [
        p.split("<MSG> ")[1].split("\n")[0] for p in first[1:3]
    ]


def test_lm_diff_keeps_the_last_sample_of_a_child_that_never_passes():
    undefined = unified_diff(SQUARE, _edit(SQUARE, "center)", "knee2)"), "walker.py")
    broken = unified_diff(SQUARE, _edit(SQUARE, "center)", "center"), "walker.py")
    good = unified_diff(SQUARE, _edit(SQUARE, "10", "7"), "walker.py")
    script = Script([good, broken, undefined, broken, broken, undefined])
    op = LMDiffOperator(script, COMMIT_MESSAGES, "walker.py", retries=2)
    children = op.mutate([Parent(0, SQUARE), Parent(1, SQUARE)], np.random.default_rng(0))
    assert children[0].program == _edit(SQUARE, "10", "7")
    assert children[1].program == _edit(SQUARE, "center)", "knee2)")  # the last copy
    assert op.drawn == 6 and not script.texts


def test_lm_diff_without_retries_keeps_every_first_sample():
    undefined = unified_diff(SQUARE, _edit(SQUARE, "center)", "knee2)"), "walker.py")
    op = LMDiffOperator(Script([undefined, ""]), COMMIT_MESSAGES, "walker.py")
    children = op.mutate([Parent(0, SQUARE), Parent(1, SQUARE)], np.random.default_rng(0))
    assert "knee2" in children[0].program and children[1].failure == "diff_empty"
    assert op.drawn == 2


def test_lm_diff_messages_follow_configured_odds():
    n = 3000
    script = Script([""] * n)
    op = LMDiffOperator(script, [("A.", 0.9), ("B.", 0.1)], "walker.py")
    children = op.mutate([Parent(0, SQUARE)] * n, np.random.default_rng(1))
    share = np.mean([c.message == "A." for c in children])
    assert 0.87 < share < 0.93


def test_replace_entry_keeps_helpers_and_replaces_make_walker():
    program = seed_source("cppn_fixed")
    new = "def make_walker():\n    return None\n"
    out = replace_entry(program, new, "make_walker")
    tree = ast.parse(out)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    before = [n.name for n in ast.parse(program).body if isinstance(n, ast.FunctionDef)]
    assert names == before  # same functions, same order
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "make_walker")
    assert ast.unparse(fn) == "def make_walker():\n    return None"
    assert replace_entry("x = 1\n", new, "make_walker") == "x = 1\n\n" + new  # no entry: appended


def test_lm_prompt_builds_child_from_body():
    body = "    wc = walker_creator()\n    a = wc.add_joint(0, 0)\n    return wc.get_walker()\n"
    script = Script([body + "\ndef other():\n    pass\n", "   \n", RuntimeError("boom")])
    op = LMPromptOperator(script, INSTRUCTION, "make_walker", "walker.py")
    children = op.mutate([Parent(3, SQUARE)] * 3, np.random.default_rng(0))
    assert children[0].ok
    assert children[0].program.count("def make_walker():") == 1
    assert "a = wc.add_joint(0, 0)" in children[0].program
    assert "def other" not in children[0].program  # cut at the next top-level def
    assert children[0].diff.startswith("--- walker.py")
    assert script.prompts[0].startswith(SQUARE.rstrip())
    assert script.prompts[0].endswith("def make_walker():\n")
    assert [c.failure for c in children[1:]] == ["lm_empty", "backend_error"]


def test_lm_crossover_puts_several_parents_in_one_prompt():
    radial = seed_source("radial")
    script = Script(["    return None\n"] * 4)
    op = LMCrossoverOperator(script, CROSSOVER_INSTRUCTION, "make_walker", "walker.py", n_parents=3)
    parents = [Parent(1, SQUARE), Parent(2, radial)]
    children = op.mutate(parents, np.random.default_rng(0))
    for parent, child, prompt in zip(parents, children, script.prompts, strict=True):
        assert len(child.parent_ids) == 3 and child.parent_ids[0] == parent.id
        assert prompt.count("def make_walker():") == 4  # three examples and the header
        assert prompt.index(parent.program.rstrip()) < prompt.index("# Walker 2:")
    with pytest.raises(ValueError, match="at least 2"):
        LMCrossoverOperator(script, CROSSOVER_INSTRUCTION, "make_walker", "walker.py", n_parents=1)


@pytest.mark.slow
def test_shipped_model_writes_diffs_that_apply():
    """The shipped diff model, greedy, on every paper seed with every commit message: a
    trained model writes diffs some of which apply and change the parent (an untrained one
    writes none; measured for the shipped model: 7 of 12, see jelm/lm/README.md)."""
    from jelm.lm.backends import JelmBackend
    from jelm.programs.diff import EOS, DiffError, apply_diff, extract_diff

    assert (SHIPPED_DIR / "config.json").is_file(), "the package ships its diff model"
    backend = JelmBackend.shipped()
    cases = [
        (s, m)
        for s in ("square", "radial", "cppn_fixed", "cppn_mutable")
        for m, _ in COMMIT_MESSAGES
    ]
    out = backend.complete(
        [elm_prompt(seed_source(s), m, "walker.py") for s, m in cases],
        temperature=0.0,
        max_new_tokens=384,
        stop=(EOS, NME),
    )
    changed = 0
    for (seed, _), completion in zip(cases, out, strict=True):
        assert completion.error is None and completion.text.lstrip().startswith("---")
        try:
            program = apply_diff(seed_source(seed), extract_diff(completion.text)).program
        except DiffError:
            continue
        changed += program != seed_source(seed)
    assert changed >= 5
