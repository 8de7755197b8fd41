"""jelm.lm.sampling.brackets: the open brackets of a parent by line, what a token closes,
and whether it may close it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jelm.lm.sampling import brackets as B

PAREN, SQUARE, CURLY = 1, 2, 3


def test_a_parents_open_brackets_by_line():
    text = b'a = f(1,\n  [2, "(",  # ([\n   3])\nb = {1: ")"}\n'
    stack, depth = B.parent_stacks(text, 64)
    starts = [0, *(i + 1 for i, c in enumerate(text) if c == 10)]
    got = [(int(stack[s]), int(depth[s])) for s in starts]
    # strings and comments do not count; the end holds what is open after the text
    assert got == [(0, 0), (PAREN, 1), (PAREN * 4 + SQUARE, 2), (0, 0), (0, 0)]
    assert np.all(depth[len(text) :] == 0)


def test_brackets_deeper_than_the_stack_are_counted():
    text = b"(" * (B.LEVELS + 2) + b"\n" + b")" * (B.LEVELS + 2) + b"\n"
    stack, depth = B.parent_stacks(text, 128)
    assert int(depth[B.LEVELS + 3]) == B.LEVELS + 2
    assert int(stack[B.LEVELS + 3]) == sum(PAREN << (2 * j) for j in range(B.LEVELS))
    assert int(depth[len(text)]) == 0


def _code(n: int, kinds: list[int], bad: bool = False) -> int:
    return n | (int(bad) << 4) | sum(k << (5 + 2 * j) for j, k in enumerate(kinds))


@pytest.mark.parametrize(
    ("token", "start", "code"),
    [
        (b")", 0, _code(1, [PAREN])),
        (b"])", 0, _code(2, [SQUARE, PAREN])),  # top first
        (b"(x)]", 0, _code(1, [SQUARE])),  # its own brackets match within it
        (b"(]", 0, _code(0, [], bad=True)),
        (b'")', 0, 0),  # in a string it opens
        (b'")', 1, _code(1, [PAREN])),  # ... or after the string it ends
        (b"')", 1, 0),  # another quote does not end a "string
        (b"# )", 0, 0),
        (b"x", 0, 0),
    ],
)
def test_what_a_token_closes(token, start, code):
    closes = B.token_closes([token, None], 32)
    assert closes.shape == (2, 3, 2)
    assert int(closes[0, start, 0]) == code
    assert int(closes[1, 0, 0]) == B._closes(token[1:], 0)
    assert not closes[..., 1].any()


def test_a_token_fits_the_brackets_open_on_top():
    stack, depth = jnp.int32(PAREN * 4 + SQUARE), jnp.int32(2)  # "([" open
    cases = [(b"]", True), (b"])", True), (b")", False), (b")]", False), (b"]))", False)]
    for token, fits in cases:
        code = jnp.int32(B._closes(token, 0))
        assert bool(B.token_fits(stack, depth, code)) == fits, token
    assert not bool(B.token_fits(jnp.int32(0), jnp.int32(0), jnp.int32(B._closes(b")", 0))))
    deep = jnp.int32(B.LEVELS + 1)  # beyond the stack: any close is taken
    assert bool(B.token_fits(jnp.int32(0), deep, jnp.int32(B._closes(b"}", 0))))
