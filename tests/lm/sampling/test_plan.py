"""jelm.lm.sampling.plan: which prompts share a prefix, and the shapes they sample at."""

from __future__ import annotations

import dataclasses

import numpy as np

from jelm.lm.sampling.plan import (
    MIN_SHARED,
    Shapes,
    bucket_batch,
    bucket_length,
    bucket_suffix,
    make_plan,
    shared_sets,
)


def _children(parent: list[int], n: int, rng: np.random.Generator) -> list[list[int]]:
    """``n`` prompts made of ``parent`` and a short tail of their own (a commit message)."""
    return [parent + rng.integers(5, 200, int(rng.integers(2, 6))).tolist() for _ in range(n)]


def test_children_of_one_parent_share_its_text():
    rng = np.random.default_rng(0)
    a, b = rng.integers(5, 200, 60).tolist(), rng.integers(5, 200, 50).tolist()
    prompts = _children(a, 4, rng) + _children(b, 3, rng) + [rng.integers(5, 200, 40).tolist()]
    order = rng.permutation(len(prompts))
    prompts = [prompts[i] for i in order]
    sets = {tuple(sorted(ms)): shared for shared, ms in shared_sets(prompts)}
    where = {int(j): i for i, j in enumerate(order)}  # original index -> shuffled index
    assert sets[tuple(sorted(where[j] for j in range(4)))] >= 60
    assert sets[tuple(sorted(where[j] for j in range(4, 7)))] >= 50
    assert sets[(where[7],)] == 39  # alone: all but its last token
    plan = make_plan(prompts, max_new_tokens=16, max_rows=8)
    assert plan.rows > 1
    for g in plan.groups:
        for m, s in zip(g.members, g.suffixes, strict=True):
            assert list(g.prefix) + list(s) == prompts[m] and len(s) >= 1
    assert sorted(m for g in plan.groups for m in g.members) == list(range(len(prompts)))


def test_a_common_header_alone_is_not_shared():
    """Prompts that agree on a header (the file name, the imports) but not on the parent
    each keep their own prefix: sharing the header would lengthen every row's suffix."""
    rng = np.random.default_rng(1)
    header = rng.integers(5, 200, MIN_SHARED + 8).tolist()
    prompts = [header + rng.integers(5, 200, 200).tolist() for _ in range(6)]
    assert all(len(ms) == 1 for _, ms in shared_sets(prompts))
    plan = make_plan(prompts, max_new_tokens=64, max_rows=8)
    assert plan.rows == 1 and plan.suffix_len == 1
    assert plan.prefix_len == bucket_length(max(len(p) for p in prompts) - 1)


def test_no_sharing_when_asked_and_slots_bounded():
    rng = np.random.default_rng(2)
    prompts = _children(rng.integers(5, 200, 80).tolist(), 12, rng)
    plan = make_plan(prompts, max_new_tokens=32, max_rows=4, share_prefixes=False)
    assert plan.rows == 1 and len(plan.groups) == 12 and plan.slots == 4
    shared = make_plan(prompts, max_new_tokens=32, max_rows=4)
    assert shared.rows == 4 and shared.slots == 1 and len(shared.groups) == 3


def test_buckets():
    assert [bucket_length(n) for n in (1, 16, 17, 100, 300, 513, 800, 1100)] == [
        16,
        16,
        32,
        128,
        512,
        768,
        1024,
        1280,
    ]
    assert [bucket_suffix(n) for n in (1, 2, 17)] == [1, 16, 32]
    assert [bucket_batch(n) for n in (1, 3, 8, 9)] == [1, 4, 8, 16]


def test_known_shapes_are_reused_within_their_slack():
    """A call takes a shape compiled for an earlier call when its decode step costs at
    most ``slack`` times its own best; a shape that is too dear or too small is not taken,
    and the call's own shape is recorded."""
    rng = np.random.default_rng(3)
    prompts = [rng.integers(5, 200, 100).tolist() for _ in range(4)]  # prefix bucket 128
    own = make_plan(prompts, max_new_tokens=64, max_rows=8)
    assert (own.rows, own.prefix_len, own.suffix_len) == (1, 128, 1)

    near = Shapes(known=[(1, 256, 1)])  # (256 + 33) / (128 + 33) = 1.8 slots per step
    assert make_plan(prompts, 64, 8, shapes=dataclasses.replace(near, slack=2.0)).prefix_len == 256
    plan = make_plan(prompts, 64, 8, shapes=near)  # slack 1.5: too dear
    assert plan.prefix_len == 128 and near.known == [(1, 256, 1), (1, 128, 1)]
    # now both are known: the cheaper one that fits is taken and nothing is added
    assert make_plan(prompts, 64, 8, shapes=near).prefix_len == 128
    assert len(near.known) == 2

    small = Shapes(slack=10.0, known=[(1, 64, 1), (2, 512, 16)])  # too short; other rows
    plan = make_plan(prompts, 64, 8, shapes=small)
    assert plan.prefix_len == 128 and small.known[-1] == (1, 128, 1)
    assert all(len(g.prefix) <= plan.prefix_len for g in plan.groups)
