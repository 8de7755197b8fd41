"""Brackets in copy-constrained diffs: an added line closes only the bracket that is open.

Most diffs a small model writes that do not compile close a bracket nobody opened, close
``[`` with ``)``, or stop with a bracket left open (ELM §3.1 counts such children as
failed mutations). The copy automaton (:mod:`jelm.lm.sampling.copy`) keeps the new
file's open brackets as a stack packed two bits a level (``(``: 1, ``[``: 2, ``{``: 3;
the top in the lowest bits; the bottom :data:`LEVELS` levels are kept, deeper ones only
counted). At a hunk's first line it takes the parent's stack at that line, so it knows
what a hunk's lines are nested in; from then on an added line may close only the top
bracket, and a diff may end or begin its next hunk only where the new file's stack is
the parent's at the same place (what the rest of the file closes).

Bytes are read as the automaton reads them: a ``#`` outside a string begins a comment,
a quote begins a string that the same quote on that line ends; escapes and triple
quotes are not followed. The parent's stacks are read with the same rule, so copied
lines keep the two in step whatever the rule misses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

#: Open brackets kept on a stack (two bits each, in an int32); deeper ones are counted.
LEVELS = 15
#: A token's closing brackets checked at once (a token that closes more is refused; its
#: code must fit an int32).
MAX_POPS = 13

_KIND = np.zeros(256, np.int32)
_KIND[[40, 91, 123]] = [1, 2, 3]  # ( [ {
_KIND[[41, 93, 125]] = [-1, -2, -3]  # ) ] }
_BLANK = (32, 9, 13)
_HASH = 35
_QUOTES = (34, 39)
#: The places a token may begin in: code, a "string, a 'string (a comment ignores it).
CONTEXTS = (0, 34, 39)


def push(stack: int, depth: int, kind: int) -> tuple[int, int]:
    """The stack and depth after opening a bracket of ``kind`` (1-3)."""
    return (stack * 4 + kind if depth < LEVELS else stack), depth + 1


def pop(stack: int, depth: int) -> tuple[int, int]:
    """The stack and depth after closing the top bracket (none open: unchanged)."""
    if depth == 0:
        return stack, 0
    return (stack >> 2 if depth <= LEVELS else stack), depth - 1


def _kinds(bts: bytes, context: int = 0) -> Iterator[int]:
    """The brackets of some bytes' code, in order (a kind, negative for a close), read as
    the automaton reads them, begun in ``context`` (0 code, 1 a comment, a quote byte: a
    string)."""
    for b in bts:
        if b in _BLANK:
            continue
        if context == 0:
            if b == _HASH or b in _QUOTES:
                context = b if b != _HASH else 1
            elif _KIND[b]:
                yield int(_KIND[b])
        elif context != 1 and b == context:
            context = 0


def parent_stacks(text: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The open brackets at the start of each line of ``text`` (whole lines, each ending
    in a newline), by byte: ``stack`` and ``depth`` [size], every byte of a line holding
    its line's start, and the bytes past the text the end's (a closing bracket with none
    open is ignored, as the automaton does on copied lines)."""
    stack_at = np.zeros(size, np.int32)
    depth_at = np.zeros(size, np.int32)
    stack = depth = 0
    start = 0
    for line in text.split(b"\n")[:-1]:
        stack_at[start : start + len(line) + 1] = stack
        depth_at[start : start + len(line) + 1] = depth
        for kind in _kinds(line):
            stack, depth = push(stack, depth, kind) if kind > 0 else pop(stack, depth)
        start += len(line) + 1
    stack_at[start:] = stack
    depth_at[start:] = depth
    return stack_at, depth_at


def token_closes(tokens: Sequence[bytes | None], width: int) -> np.ndarray:
    """What each token closes of the brackets open before it: [2, 3, V] codes, for its
    bytes (0) and its bytes after the first (1, after a line's marker), begun in code, a
    ``"`` string or a ``'`` string. A code is the count of brackets it closes that were
    open before it (bits 0-3), their kinds top first (two bits each from bit 5), and bit
    4 set if it can never be right (it closes one it opened with another kind, or more
    than :data:`MAX_POPS`). Tokens longer than ``width`` bytes: 0."""
    out = np.zeros((2, len(CONTEXTS), len(tokens)), np.int64)
    for i, tok in enumerate(tokens):
        if tok is None or len(tok) > width:
            continue
        for part, bts in enumerate((tok, tok[1:])):
            for c, start in enumerate(CONTEXTS):
                out[part, c, i] = _closes(bts, start)
    return out.astype(np.int32)


def _closes(bts: bytes, context: int) -> int:
    """:func:`token_closes`' code of some bytes begun in ``context``."""
    own: list[int] = []
    pops: list[int] = []
    bad = False
    for kind in _kinds(bts, context):
        if kind > 0:
            own.append(kind)
        elif own:
            bad |= own.pop() != -kind
        else:
            pops.append(-kind)
    bad |= len(pops) > MAX_POPS
    pops = pops[:MAX_POPS]
    code = len(pops) | (int(bad) << 4)
    for j, kind in enumerate(pops):
        code |= kind << (5 + 2 * j)
    return code


def push_pop(
    stack: jax.Array, depth: jax.Array, kind: jax.Array, opened: jax.Array, closed: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`push` where ``opened`` and :func:`pop` where ``closed``, on device."""
    pushed = jnp.where(depth < LEVELS, stack * 4 + kind, stack)
    popped = jnp.where((depth > 0) & (depth <= LEVELS), stack >> 2, stack)
    stack = jnp.where(opened, pushed, jnp.where(closed, popped, stack))
    depth = jnp.maximum(depth + opened - closed.astype(jnp.int32), 0)
    return stack, depth


def signed_kind(b: jax.Array) -> jax.Array:
    """A byte's bracket kind (1-3 open, -1 to -3 closing; 0 for other bytes), on device."""
    return jnp.asarray(_KIND)[jnp.clip(b, 0, 255)]


def wrong_close(stack: jax.Array, depth: jax.Array, kind: jax.Array) -> jax.Array:
    """Whether closing a bracket of ``kind`` is wrong: none is open, or the top one is of
    another kind (beyond :data:`LEVELS` open brackets, any close is taken)."""
    return (depth == 0) | ((depth <= LEVELS) & ((stack & 3) != kind))


def token_fits(stack: jax.Array, depth: jax.Array, code: jax.Array) -> jax.Array:
    """Whether tokens with :func:`token_closes` ``code`` may follow brackets open as
    ``stack``/``depth`` (broadcast together)."""
    n = code & 15
    bad = (code >> 4) & 1
    kinds = code >> 5  # top first, as the stack holds them
    top = stack & ((1 << (2 * n)) - 1)
    fits = (n <= depth) & ((depth > LEVELS) | (top == kinds))
    return (bad == 0) & fits


def balanced(
    stack: jax.Array, depth: jax.Array, parent_stack: jax.Array, parent_depth: jax.Array
) -> jax.Array:
    """Whether the new file's open brackets are the parent's at the same place."""
    return (depth == parent_depth) & ((depth > LEVELS) | (stack == parent_stack))
