"""The copy constraint's host-side tables (:mod:`jelm.lm.sampling.copy`): a tokenizer's
tokens as bytes (:func:`copy_vocab`), each row's parent as bytes, lines, line-prefix
hashes and open brackets (:func:`copy_text`), and the automaton's modes and its table of
moves by byte. Built once per tokenizer and per parent with numpy; the device code reads
them as arrays.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jelm.lm.sampling import brackets as B

# Modes of a row's automaton: before the first hunk (at a line start, within a line: its
# lines begin with "-" or "+", the file names, or "@", its header), ...
PRE, PRE_MID = range(2)
# ... in a hunk header "@@ -a,b +c,d @@", after: "@", "@@", "@@ ", "-", the old start line
# ("a"), ",", the old count, " ", "+", the new start line, ",", the new count, " ", "@",
# and in the free text after the second "@@" ...
HDR, HDR_AT, HDR_SP, HDR_NUM0, HDR_NUM, HDR_C0, HDR_C, HDR_P = range(2, 10)
HDR_N0, HDR_N, HDR_D0, HDR_D, HDR_E1, HDR_E2, HDR_REST = range(10, 17)
# ... in a hunk before its first context or removed line (at a line start, in that first
# line, in an added line), after it (at a line start, copying, in an added line), and
# unconstrained rows and rows whose token broke the constraint.
LINE0, FIRST, PLUS0, LINE, COPY, PLUS, OFF, REJECT = range(17, 25)
#: Modes of a hunk header before its free text: a header follows the grammar above.
HEADER_MODES = tuple(range(HDR, HDR_REST))
#: Modes in which any token without a newline is allowed (in ``PRE``, any that a line
#: before the first hunk may begin with).
FREE_MODES = (PRE, PRE_MID, HDR_REST, PLUS0, PLUS)

# Token kinds.
NORMAL, NEWLINE, SPECIAL, LONG = range(4)

#: Bytes of a token compared at once (longer tokens are allowed only in free text and
#: comments).
TOKEN_BYTES = 32
#: Parent programs longer than this (bytes), with more lines, or with a longer line are
#: not constrained.
TEXT_BYTES = 8192
TEXT_LINES = 256
LINE_BYTES = 256

_NL, _SP, _MINUS, _PLUS, _AT, _BSLASH = 10, 32, 45, 43, 64, 92
_TAB, _CR, _HASH, _COLON, _COMMA = 9, 13, 35, 58, 44


class CopyVocab(NamedTuple):
    """A tokenizer's tokens as bytes: ``bytes`` [V, K] (-1 past ``length``), ``kind``
    [V] (``NORMAL``, ``NEWLINE``, ``SPECIAL`` or ``LONG``), ``newline`` [M] the ids of
    the ``NEWLINE`` tokens (padded with ``V``). ``words`` [2, V, K / 4] the bytes (and
    the bytes after the first) packed four to a word, ``masks`` which of their bits
    count: whole words compare at once (:func:`allowed`). ``lead`` [2, V] the blanks
    (spaces, tabs, carriage returns) a token begins with (and its bytes after the first
    do), ``solid`` [2, V] the first other byte (-1 for none). ``closes`` [2, 3, V] the
    brackets each token closes (:func:`jelm.lm.sampling.brackets.token_closes`).
    ``moves`` [modes, V] the mode
    each token leads to by the bytes alone (exact for a hunk header, which depends on no
    parent). ``keys`` [V'] the sorted :func:`text_hash` of the tokens of kind ``NORMAL``
    and ``key_ids`` [V'] their ids: a hunk's first line finds the tokens that spell the
    next bytes of each parent line by them. ``trie_parent`` and ``trie_byte`` [D, W] the
    ``NEWLINE`` tokens' bytes as a trie, level by level (each node's parent in the level
    above and its byte, -1 padding), and ``nl_node`` [M] each one's node (level * W +
    slot): tokens that share a prefix run it through the automaton once."""

    bytes: jax.Array
    length: jax.Array
    kind: jax.Array
    newline: jax.Array
    words: jax.Array
    masks: jax.Array
    lead: jax.Array
    solid: jax.Array
    closes: jax.Array
    moves: jax.Array
    keys: jax.Array
    key_ids: jax.Array
    trie_parent: jax.Array
    trie_byte: jax.Array
    nl_node: jax.Array


def _trie(tokens: Sequence[bytes], m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:class:`CopyVocab`'s ``trie_parent``, ``trie_byte`` and ``nl_node`` of some tokens
    (``nl_node`` padded to ``m`` entries with node 0)."""
    levels: list[list[tuple[int, int]]] = []
    node: dict[bytes, tuple[int, int]] = {}
    for tok in tokens:
        for d in range(1, len(tok) + 1):
            if tok[:d] in node:
                continue
            if len(levels) < d:
                levels.append([])
            parent = node[tok[: d - 1]][1] if d > 1 else 0
            levels[d - 1].append((parent, tok[d - 1]))
            node[tok[:d]] = (d - 1, len(levels[d - 1]) - 1)
    depth, width = max(1, len(levels)), max([1, *map(len, levels)])
    parents = np.zeros((depth, width), np.int32)
    bts = np.full((depth, width), -1, np.int32)
    for d, level in enumerate(levels):
        for j, (parent, b) in enumerate(level):
            parents[d, j], bts[d, j] = parent, b
    at = np.zeros((m,), np.int32)
    for i, tok in enumerate(tokens):
        d, j = node[tok]
        at[i] = d * width + j
    return parents, bts, at


def _pack(b: Any) -> Any:
    """Bytes [..., K] (``K`` a multiple of 4; -1 for none) as words [..., K / 4] with
    none as 0, and the masks of their real bytes (numpy or jax arrays alike)."""
    xp = jnp if isinstance(b, jax.Array) else np
    k = b.shape[-1]
    parts = b.reshape(*b.shape[:-1], k // 4, 4)
    shift = xp.asarray([0, 8, 16, 24], dtype=xp.uint32)
    real = parts >= 0
    word = xp.sum(xp.where(real, parts, 0).astype(xp.uint32) << shift, axis=-1, dtype=xp.uint32)
    mask = xp.sum(xp.where(real, 0xFF, 0).astype(xp.uint32) << shift, axis=-1, dtype=xp.uint32)
    return word, mask


class CopyText(NamedTuple):
    """Each row's parent: ``text`` [..., L] bytes (-1 padding), ``lines`` [..., NL] the
    offset of each line's first byte (``length`` past the last line), ``prefix`` [..., NL,
    LINE_BYTES] the :func:`text_hash` of each line's first ``j`` bytes, ``length``
    [...], ``stack`` and ``depth`` [..., L] the brackets open at the start of the line
    of each byte (:func:`jelm.lm.sampling.brackets.parent_stacks`)."""

    text: jax.Array
    lines: jax.Array
    prefix: jax.Array
    length: jax.Array
    stack: jax.Array
    depth: jax.Array


def _mix(h: Any, b: Any) -> Any:
    """One byte into a :func:`text_hash`."""
    return h * 16777619 + b + 1


def prefix_hashes(text: bytes) -> list[int]:
    """The hashes of ``text``'s prefixes (empty first), int32 as the device computes them
    (by :func:`_mix`, from 0)."""
    out, h = [0], 0
    for b in text:
        h = _mix(h, b) & 0xFFFFFFFF
        out.append(h - (1 << 32) if h >= 1 << 31 else h)
    return out


def text_hash(text: bytes) -> int:
    """The hash of some bytes (:func:`prefix_hashes`' last)."""
    return prefix_hashes(text)[-1]


@functools.lru_cache(maxsize=256)
def _parent(text: str) -> tuple[np.ndarray, list[int], np.ndarray, Any] | None:
    """A parent's bytes (a newline at the end), line starts, the hashes of each line's
    prefixes and its brackets by byte, or ``None`` if it is too long to constrain (an ELM
    call asks for many children of one parent)."""
    b = text.encode("utf-8")
    if not b.endswith(b"\n"):
        b += b"\n"
    lines = b.split(b"\n")[:-1]
    starts = [0, *(j + 1 for j, c in enumerate(b[:-1]) if c == _NL)]
    if len(b) >= TEXT_BYTES or len(lines) > TEXT_LINES or max(map(len, lines)) >= LINE_BYTES:
        return None
    prefix = np.zeros((len(lines), LINE_BYTES), np.int32)
    for i, line in enumerate(lines):
        prefix[i, : len(line) + 1] = prefix_hashes(line)
    return np.frombuffer(b, np.uint8), starts, prefix, B.parent_stacks(b, TEXT_BYTES)


def _byte_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character that stands for each byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """Each token's bytes (``None`` for special tokens) of a byte-level BPE
    :class:`jelm.lm.tokenizer.Tokenizer`. Raises ``ValueError`` for other tokenizers."""
    table = _byte_table()
    backend, hf = getattr(tokenizer, "_tok", None), getattr(tokenizer, "_hf", None)
    n = int(tokenizer.vocab_size)
    if backend is not None:
        names = [backend.id_to_token(i) for i in range(n)]
        special = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}
    elif hf is not None:
        names = hf.convert_ids_to_tokens(list(range(n)))
        special = set(hf.all_special_ids) | set(getattr(hf, "added_tokens_decoder", {}))
    else:
        raise ValueError("copy-constrained sampling needs a jelm.lm.tokenizer.Tokenizer")
    out: list[bytes | None] = []
    for i, name in enumerate(names):
        if i in special or name is None:
            out.append(None)
        elif all(c in table for c in name):
            out.append(bytes(table[c] for c in name))
        else:
            raise ValueError(
                f"copy-constrained sampling needs a byte-level BPE tokenizer; token {i} "
                f"({name!r}) is not byte-level"
            )
    return out


def copy_vocab(tokenizer: Any, vocab_size: int | None = None) -> CopyVocab:
    """The :class:`CopyVocab` of a byte-level BPE tokenizer, padded to ``vocab_size``
    entries (the model's; ids the tokenizer lacks are never allowed)."""
    toks = token_bytes(tokenizer)
    v = max(len(toks), vocab_size or 0)
    k = TOKEN_BYTES
    table = np.full((v, k), -1, np.int32)
    length = np.zeros((v,), np.int32)
    kind = np.full((v,), SPECIAL, np.int32)
    newline = []
    for i, b in enumerate(toks):
        if b is None:
            continue
        if b"\n" in b:
            kind[i] = NEWLINE if len(b) <= k else SPECIAL  # a long newline token: never
            if len(b) <= k:
                newline.append(i)
        else:
            kind[i] = NORMAL if len(b) <= k else LONG
        if len(b) <= k:
            table[i, : len(b)] = np.frombuffer(b, np.uint8)
            length[i] = len(b)
    kind[(kind == NORMAL) & np.any(table == 0, axis=1)] = LONG  # 0 stands for no byte
    m = max(8, -(-len(newline) // 8) * 8)
    nl = np.full((m,), v, np.int32)
    nl[: len(newline)] = newline
    rest = np.concatenate([table[:, 1:], np.full((v, 1), -1, np.int32)], axis=1)
    (w0, m0), (w1, m1) = _pack(table), _pack(rest)
    words, masks = np.stack([w0, w1]), np.stack([m0, m1])
    leads, solids = [], []
    for part in (table, rest):
        blank = (part == _SP) | (part == _TAB) | (part == _CR)
        lead = np.argmin(blank, axis=1).astype(np.int32)  # the first byte not blank
        lead[np.all(blank, axis=1)] = k
        leads.append(lead)
        solids.append(np.where(lead < k, part[np.arange(v), np.minimum(lead, k - 1)], -1))
    moves = np.broadcast_to(np.arange(REJECT + 1, dtype=np.int32)[:, None], (REJECT + 1, v))
    for j in range(k):
        b = table[:, j]
        moves = np.where(b >= 0, _MOVES[moves, np.maximum(b, 0)], moves)
    ids = np.flatnonzero(kind == NORMAL)
    hashes = np.asarray([text_hash(toks[i]) for i in ids], np.int32)  # type: ignore[arg-type]
    order = np.argsort(hashes, kind="stable")
    keys, key_ids = hashes[order], ids[order]
    closes = B.token_closes(toks, k)
    closes = np.pad(closes, ((0, 0), (0, 0), (0, v - closes.shape[-1])))
    arrays = (table, length, kind, nl, words, masks, np.stack(leads), np.stack(solids), closes)
    arrays += (moves,)
    arrays += (keys, key_ids, *_trie([toks[i] for i in newline], m))  # type: ignore[misc]
    return CopyVocab(
        *(jnp.asarray(a, jnp.uint32 if a.dtype == np.uint32 else jnp.int32) for a in arrays)
    )


def copy_text(texts: Sequence[str | None], shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Host arrays of a :class:`CopyText` for ``texts`` laid out as ``shape`` (row-major;
    missing entries and ``None`` rows are unconstrained), and each row's first mode."""
    n = int(np.prod(shape))
    text = np.full((n, TEXT_BYTES), -1, np.int32)
    lines = np.zeros((n, TEXT_LINES), np.int32)
    prefix = np.zeros((n, TEXT_LINES, LINE_BYTES), np.int32)
    length = np.zeros((n,), np.int32)
    stack = np.zeros((n, TEXT_BYTES), np.int32)
    depth = np.zeros((n, TEXT_BYTES), np.int32)
    mode = np.full((n,), OFF, np.int32)
    for i, t in enumerate(texts):
        parent = None if t is None else _parent(t)
        if parent is None:
            continue
        b, starts, hashes, (stack[i], depth[i]) = parent
        text[i, : len(b)] = b
        lines[i] = len(b)
        lines[i, : len(starts)] = starts
        prefix[i, : len(hashes)] = hashes
        length[i] = len(b)
        mode[i] = PRE
    return (
        text.reshape(*shape, TEXT_BYTES),
        lines.reshape(*shape, TEXT_LINES),
        prefix.reshape(*shape, TEXT_LINES, LINE_BYTES),
        length.reshape(shape),
        stack.reshape(*shape, TEXT_BYTES),
        depth.reshape(*shape, TEXT_BYTES),
        mode.reshape(shape),
    )


def _moves() -> np.ndarray:
    """The next mode by mode and byte ([modes, 256]), but for what depends on the parent:
    a ``COPY`` byte must be the parent's next one, a ``LINE`` marker needs a line left."""
    t = np.zeros((REJECT + 1, 256), np.int32)
    nl, digits = _NL, list(range(48, 58))
    t[PRE], t[PRE, [_MINUS, _PLUS]], t[PRE, _AT], t[PRE, nl] = REJECT, PRE_MID, HDR, PRE
    t[PRE_MID], t[PRE_MID, nl] = PRE_MID, PRE
    t[list(HEADER_MODES)] = REJECT
    for mode, byte, to in (
        (HDR, _AT, HDR_AT),
        (HDR_AT, _SP, HDR_SP),
        (HDR_SP, _MINUS, HDR_NUM0),
        (HDR_NUM, _COMMA, HDR_C0),
        (HDR_NUM, _SP, HDR_P),
        (HDR_C, _SP, HDR_P),
        (HDR_P, _PLUS, HDR_N0),
        (HDR_N, _COMMA, HDR_D0),
        (HDR_N, _SP, HDR_E1),
        (HDR_D, _SP, HDR_E1),
        (HDR_E1, _AT, HDR_E2),
        (HDR_E2, _AT, HDR_REST),
    ):
        t[mode, byte] = to
    for modes, to in (
        ((HDR_NUM0, HDR_NUM), HDR_NUM),
        ((HDR_C0, HDR_C), HDR_C),
        ((HDR_N0, HDR_N), HDR_N),
        ((HDR_D0, HDR_D), HDR_D),
    ):
        for mode in modes:
            t[mode, digits] = to
    t[HDR_REST], t[HDR_REST, nl] = HDR_REST, LINE0
    for start, marked, plus in ((LINE0, FIRST, PLUS0), (LINE, COPY, PLUS)):
        t[start] = REJECT
        t[start, [_SP, _MINUS]] = marked
        t[start, [_PLUS, _BSLASH]] = plus
        t[start, _AT] = HDR
    t[FIRST], t[FIRST, nl] = FIRST, LINE
    t[PLUS0], t[PLUS0, nl] = PLUS0, LINE0
    t[PLUS], t[PLUS, nl] = PLUS, LINE
    t[COPY], t[OFF], t[REJECT] = REJECT, OFF, REJECT
    return t


_MOVES = _moves()
