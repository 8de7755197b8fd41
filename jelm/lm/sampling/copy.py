"""Copy-constrained diffs: the context and removed lines a row writes are its parent's.

A diff model (ELM §3.1) must copy the lines it keeps and removes from the parent in its
prompt; a small model often writes a plausible line that the parent does not have, and
the diff cannot be applied. Under this constraint a row's tokens are masked so that,
after a hunk's first context or removed line, every further one is the next line of the
parent: the diff applies by construction, and the model's added lines (``"+"``) follow
the parent's real lines. The model still chooses where a hunk starts (its first line may
be any line of the parent at or after the previous hunk; one that appears several times
is taken nearest to the line the hunk header names), which lines it keeps, removes and
adds, and when it stops, once it has changed something: a
row may not stop before it has begun a removed or an added line (a diff of context
alone leaves the parent as it was). Added lines also keep Python's indentation: after a
line that opens a block (ends with ``:``) an added line is indented deeper, after any
other line not deeper (comments, blank lines and lines inside brackets are free).

The constraint is a byte automaton per row (:class:`CopyState`), advanced by every
emitted token (:func:`advance`); :func:`allowed` gives the tokens that keep it valid.
Tokens without a newline are checked against the parent's next bytes at once; the few
that hold a newline run through the automaton. It needs a byte-level BPE tokenizer
(:func:`copy_vocab`). Rows without a parent are unconstrained (mode ``OFF``), and their
tokens are exactly those of unconstrained sampling.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jelm.lm.sampling import brackets as B
from jelm.lm.sampling.copy_tables import (  # noqa: F401  (the constraint's names, in one place)
    _AT,
    _BSLASH,
    _COLON,
    _CR,
    _HASH,
    _MINUS,
    _MOVES,
    _NL,
    _PLUS,
    _SP,
    _TAB,
    COPY,
    FIRST,
    FREE_MODES,
    HDR,
    HDR_AT,
    HDR_C,
    HDR_C0,
    HDR_D,
    HDR_D0,
    HDR_E1,
    HDR_E2,
    HDR_N,
    HDR_N0,
    HDR_NUM,
    HDR_NUM0,
    HDR_P,
    HDR_REST,
    HDR_SP,
    HEADER_MODES,
    LINE,
    LINE0,
    LINE_BYTES,
    LONG,
    NEWLINE,
    NORMAL,
    OFF,
    PLUS,
    PLUS0,
    PRE,
    PRE_MID,
    REJECT,
    SPECIAL,
    TEXT_BYTES,
    TEXT_LINES,
    TOKEN_BYTES,
    CopyText,
    CopyVocab,
    _mix,
    _pack,
    copy_text,
    copy_vocab,
    prefix_hashes,
    text_hash,
    token_bytes,
)

#: A hunk's first line is sampled as one of this many parent lines (those nearest the
#: line its header names, of the lines that begin with what it holds so far).
FIRST_LINES = 16


class CopyState(NamedTuple):
    """Each row's automaton: ``mode``, ``cursor`` (the parent byte the next context or
    removed byte must equal; in a hunk's first line, the earliest place the hunk may
    start), ``num`` (the old start line of the latest hunk header), ``hash`` and ``pos``
    (the :func:`text_hash` of a hunk's first line so far, and its bytes), ``changed`` (1
    once a removed or added line has begun).

    The new file's indentation, read from its context and added lines as they are
    written: ``indent`` (of the latest line that began a statement, -1 unknown),
    ``colon`` (whether the latest code line ended with ``:``), ``depth`` (brackets open
    after it); and the line being written: ``lead`` (its spaces so far), ``solid`` (its
    first other byte, 0 none yet), ``last`` (its latest byte outside a comment that is
    not a space), ``comment`` (1 once its comment has begun), ``removed`` (1: a removed
    line, not in the new file), ``cont`` (1: it began inside brackets); ``stack`` (the new
    file's open brackets, :mod:`jelm.lm.sampling.brackets`; ``depth`` counts them) and
    ``known`` (1 once a hunk's first line told where in the parent the hunk is: its
    brackets are then known)."""

    mode: jax.Array
    cursor: jax.Array
    num: jax.Array
    hash: jax.Array
    pos: jax.Array
    changed: jax.Array
    indent: jax.Array
    colon: jax.Array
    depth: jax.Array
    lead: jax.Array
    solid: jax.Array
    last: jax.Array
    comment: jax.Array
    removed: jax.Array
    cont: jax.Array
    stack: jax.Array
    known: jax.Array


def initial_state(mode: Any) -> CopyState:
    """Rows' automata before their first token, in modes ``mode`` (:func:`copy_text`)."""
    mode = jnp.asarray(mode, jnp.int32)
    zero = jnp.zeros_like(mode)
    return CopyState(mode, zero, zero, zero, zero, zero, zero - 1, *([zero] * 10))


def _at(table: jax.Array, idx: jax.Array) -> jax.Array:
    """``table[..., idx]`` per row: ``table`` [G, R, L], ``idx`` [G, R, *E]; -1 out of range."""
    g, r, size = table.shape
    flat = idx.reshape(g, r, -1)
    out = jnp.take_along_axis(table, jnp.clip(flat, 0, size - 1), axis=2).reshape(idx.shape)
    return jnp.where((idx >= 0) & (idx < size), out, -1)


def _expand(x: jax.Array, ndim: int) -> jax.Array:
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def _first_lines(state: CopyState, data: CopyText) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The parent lines a hunk's first line may still be, by what it holds so far: [G, R,
    *E, NL] booleans (at or past the cursor, beginning with the bytes written); the byte
    each goes on with ([G, R, *E, NL], a newline when it is complete); and each line's
    distance from the line the hunk header names."""
    g, r, nl = data.lines.shape
    p = data.prefix.shape[-1]
    shape = (*state.cursor.shape, nl)
    pos = state.pos.reshape(g, r, -1, 1)
    starts = data.lines[:, :, None, :]
    ends = jnp.concatenate([data.lines[..., 1:], data.length[..., None]], axis=-1) - 1
    ends = ends[:, :, None, :]  # each line's newline
    at = _at(data.prefix.reshape(g, r, nl * p), jnp.arange(nl) * p + jnp.minimum(pos, p - 1))
    cand = (
        (at == state.hash.reshape(g, r, -1, 1))
        & (pos <= ends - starts)
        & (starts >= state.cursor.reshape(g, r, -1, 1))
        & (starts < data.length[:, :, None, None])
    )
    nxt = _at(data.text, starts + pos)
    dist = jnp.abs(jnp.arange(nl) - (state.num.reshape(g, r, -1, 1) - 1))
    return cand.reshape(shape), nxt.reshape(shape), dist.reshape(shape)


def _after_line(
    cand: jax.Array, nxt: jax.Array, dist: jax.Array, data: CopyText
) -> tuple[jax.Array, jax.Array]:
    """Where the copy goes on after a hunk's first line (:func:`_first_lines`' candidates):
    after the parent line it is (the nearest to the header's line if several are), or -1
    if it is none; and where that line begins."""
    whole = cand & (nxt == _NL)
    nl = whole.shape[-1]
    j = jnp.argmin(jnp.where(whole, dist, 2 * nl + 2**20), axis=-1)
    g, r = data.lines.shape[:2]
    after = _at(data.lines, (j + 1).reshape(g, r, -1)).reshape(j.shape)
    after = jnp.where(j + 1 < nl, after, _expand(data.length, j.ndim))
    start = _at(data.lines, j.reshape(g, r, -1)).reshape(j.shape)
    return jnp.where(jnp.any(whole, axis=-1), after, -1), start


def advance_byte(state: CopyState, b: jax.Array, data: CopyText) -> CopyState:
    """The automaton after byte ``b`` (-1: no byte, unchanged); every array broadcasts
    against ``state``'s [G, R, *E] (``data`` is per row)."""
    mode, cur, num, h = state[:4]
    length = _expand(data.length, cur.ndim)
    nl = b == _NL
    digit = (b >= 48) & (b <= 57)
    here = _at(data.text, cur)
    marker = (b == _SP) | (b == _MINUS)
    new_mode = jnp.asarray(_MOVES)[mode, jnp.clip(b, 0, 255)]
    new_mode = jnp.where(
        mode == COPY, jnp.where(b == here, jnp.where(nl, LINE, COPY), REJECT), new_mode
    )
    new_mode = jnp.where((mode == LINE) & marker & (cur >= length), REJECT, new_mode)
    # the next hunk begins where the brackets open are the parent's
    unbalanced = ~brackets_balanced(state, data)
    new_mode = jnp.where((mode == LINE) & (b == _AT) & unbalanced, REJECT, new_mode)
    first = mode == FIRST

    def in_first_line() -> tuple[jax.Array, jax.Array, jax.Array]:
        cand, nxt, dist = _first_lines(state, data)
        resolved, line_start = _after_line(cand, nxt, dist, data)
        # whether one of the lines it may still be goes on with b
        goes_on = jnp.any(cand & (nxt == jnp.asarray(b)[..., None]), axis=-1)
        return resolved, line_start, goes_on

    # the parent's lines matter in a hunk's first line only
    shape = jnp.broadcast_shapes(cur.shape, jnp.shape(b))
    resolved, line_start, goes_on = jax.lax.cond(
        jnp.any(first),
        in_first_line,
        lambda: (jnp.full(shape, -1), jnp.zeros(shape, jnp.int32), jnp.zeros(shape, bool)),
    )
    new_mode = jnp.where(first & ~jnp.where(nl, resolved >= 0, goes_on), REJECT, new_mode)
    new_cur = jnp.where(
        (mode == COPY) & (b == here),
        cur + 1,
        jnp.where(first & nl, resolved, cur),
    )
    reading = ((mode == HDR_NUM0) | (mode == HDR_NUM)) & digit
    new_num = jnp.where(
        (mode == HDR_SP) & (b == _MINUS),
        0,
        jnp.where(reading, jnp.minimum(num * 10 + (b - 48), 10**6), num),
    )
    new_h = jnp.where(mode == LINE0, 0, jnp.where(first & ~nl, _mix(h, b), h))
    new_pos = jnp.where(mode == LINE0, 0, state.pos + (first & ~nl))
    at_start = (mode == LINE0) | (mode == LINE)
    edit = at_start & ((b == _MINUS) | (b == _PLUS))
    layout, breaks = _layout(state, b)
    new_mode = jnp.where(breaks, REJECT, new_mode)
    # a first line tells where the hunk is: the new file's brackets are then the
    # parent's, before the line if it is removed, after it if it is kept
    settle = first & nl & (resolved >= 0)
    at = jnp.where(state.removed > 0, line_start, resolved)
    layout["stack"] = jnp.where(settle, _at(data.stack, at), layout["stack"])
    layout["depth"] = jnp.where(settle, _at(data.depth, at), layout["depth"])
    layout["known"] = jnp.where(settle, 1, layout["known"])
    skip = b < 0
    return CopyState(
        mode=jnp.where(skip, mode, new_mode),
        cursor=jnp.where(skip, cur, new_cur),
        num=jnp.where(skip, num, new_num),
        hash=jnp.where(skip, h, new_h),
        pos=jnp.where(skip, state.pos, new_pos),
        changed=jnp.where(edit & ~skip, 1, state.changed),
        **{k: jnp.where(skip, getattr(state, k), v).astype(jnp.int32) for k, v in layout.items()},
    )


def _layout(s: CopyState, b: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    """The new file's indentation fields of :class:`CopyState` after byte ``b``, and
    whether ``b`` breaks the indentation rule: it begins an added line that, after a
    line ending with ``:``, is not indented deeper, or after another line, deeper.
    Comments, blank lines and lines that begin inside brackets are free. Strings are
    told from code by their quotes on one line (escapes and triple quotes are not
    followed: a docstring's lines count as code)."""
    mode = s.mode
    nl = b == _NL
    blank = (b == _SP) | (b == _TAB) | (b == _CR)
    at_start = (mode == LINE0) | (mode == LINE)
    header = (mode >= HDR) & (mode <= HDR_REST)
    new_line = at_start | header
    body = (mode == FIRST) | (mode == COPY) | (mode == PLUS0) | (mode == PLUS)
    track = body & (s.removed == 0) & ~nl
    first = track & (s.solid == 0) & ~blank  # the line's first byte that is not blank
    # where the byte is: code (0), a comment (1) or a string (its quote byte)
    quote = (b == 34) | (b == 39)
    after = jnp.where(
        s.comment == 0,
        jnp.where(b == _HASH, 1, jnp.where(quote, b, 0)),
        jnp.where((s.comment != 1) & (b == s.comment), 0, s.comment),
    )
    after = jnp.where(track, after, s.comment)
    code = track & ~blank & (s.comment == 0) & (after == 0)
    signed = B.signed_kind(b)
    opened, closed, kind = code & (signed > 0), code & (signed < 0), jnp.abs(signed)
    stack, depth = B.push_pop(s.stack, s.depth, kind, opened, closed)
    seen = track & ~blank & (after != 1) & ~((s.comment > 1) & (after > 1))
    # the rule, checked at an added line's first byte
    added = (mode == PLUS0) | (mode == PLUS)
    free = (s.indent < 0) | (s.depth > 0) | (b == _HASH)
    deeper = jnp.where(s.colon > 0, s.lead > s.indent, s.lead <= s.indent)
    breaks = first & added & ~free & ~deeper
    # an added line closes only the bracket open on top (once the hunk's place is known)
    breaks = breaks | (added & closed & (s.known > 0) & B.wrong_close(s.stack, s.depth, kind))
    # a code line ends: the next one is read against it
    ends = body & (s.removed == 0) & nl & (s.solid != 0) & (s.solid != _HASH)
    layout = {
        "indent": jnp.where(header, -1, jnp.where(ends & (s.cont == 0), s.lead, s.indent)),
        "colon": jnp.where(ends, s.last == _COLON, s.colon),
        "depth": jnp.where(header, 0, depth),
        "lead": jnp.where(new_line, 0, s.lead + (track & (s.solid == 0) & blank)),
        "solid": jnp.where(new_line, 0, jnp.where(first, b, s.solid)),
        "last": jnp.where(new_line, 0, jnp.where(seen, b, s.last)),
        "comment": jnp.where(new_line, 0, after),
        "removed": jnp.where(at_start, (b == _MINUS) | (b == _BSLASH), s.removed),
        "cont": jnp.where(new_line, 0, jnp.where(first, s.depth > 0, s.cont)),
        "stack": jnp.where(header, 0, stack),
        "known": jnp.where(header, 0, s.known),
    }
    return layout, breaks


def brackets_balanced(state: CopyState, data: CopyText) -> jax.Array:
    """Whether a row may end its hunk here: the brackets open in the new file are the
    parent's at its cursor (or the hunk's place is not known)."""
    cur = state.cursor
    here = B.balanced(state.stack, state.depth, _at(data.stack, cur), _at(data.depth, cur))
    return (state.known == 0) | here


def advance_bytes(state: CopyState, bts: jax.Array, data: CopyText) -> CopyState:
    """The automaton after the bytes ``bts`` [..., K] (-1 padding; its leading axes
    broadcast against the state's)."""
    shape = jnp.broadcast_shapes(state.mode.shape, bts.shape[:-1])
    state = CopyState(*(jnp.broadcast_to(x, shape) for x in state))
    longest = jnp.max(jnp.sum(bts >= 0, axis=-1))  # bytes are left-aligned

    def body(carry):
        k, s = carry
        return k + 1, advance_byte(s, jnp.take(bts, k, axis=-1), data)

    return jax.lax.while_loop(lambda c: c[0] < longest, body, (jnp.int32(0), state))[1]


def _newline_modes(state: CopyState, data: CopyText, vocab: CopyVocab) -> jax.Array:
    """The automaton's mode after each ``NEWLINE`` token: [..., M], each shared prefix
    of the tokens read once (level by level down ``vocab``'s trie)."""
    depth, width = vocab.trie_byte.shape
    root = CopyState(*(jnp.broadcast_to(x[..., None], (*x.shape, width)) for x in state))

    def level(above: CopyState, node: tuple[jax.Array, jax.Array]):
        parent, b = node
        here = advance_byte(CopyState(*(jnp.take(x, parent, axis=-1) for x in above)), b, data)
        return here, here.mode

    _, modes = jax.lax.scan(level, root, (vocab.trie_parent, vocab.trie_byte))  # [D, ..., W]
    modes = jnp.moveaxis(modes, 0, -2).reshape(*state.mode.shape, depth * width)
    return jnp.take(modes, vocab.nl_node, axis=-1)


def advance(state: CopyState, tokens: jax.Array, data: CopyText, vocab: CopyVocab) -> CopyState:
    """The automaton after ``tokens`` (one per row, shaped like ``state``'s arrays; -1:
    none); a row whose token broke the constraint (possible only when it had no allowed
    token) becomes unconstrained."""
    bts = jnp.where(tokens[..., None] >= 0, vocab.bytes[jnp.maximum(tokens, 0)], -1)
    new = advance_bytes(state, bts, data)
    return new._replace(mode=jnp.where(new.mode == REJECT, OFF, new.mode))


def _nearest(cand: jax.Array, center: jax.Array, near: int) -> tuple[jax.Array, jax.Array]:
    """The ``near`` lines of ``cand`` [..., NL] (booleans) nearest to line ``center`` [...]
    (of two as near, the earlier first), nearest first: their indices [..., near], and
    whether each is one (fewer than ``near``: the rest are not). Ranks by counting, not
    sorting: the candidates nearer than a line are those strictly inside its distance."""
    nl = cand.shape[-1]
    j = jnp.arange(nl)
    c = center[..., None]
    d = jnp.abs(j - c)
    q = jnp.concatenate([jnp.zeros_like(cand[..., :1], jnp.int32), jnp.cumsum(cand, -1)], -1)

    def count(a: jax.Array, b: jax.Array) -> jax.Array:  # candidates in lines [a, b]
        hi = jnp.take_along_axis(q, jnp.clip(b + 1, 0, nl), axis=-1)
        lo = jnp.take_along_axis(q, jnp.clip(a, 0, nl), axis=-1)
        return jnp.maximum(hi - lo, 0)

    mirror = c - d  # the line as near on the other side, earlier when ``j`` is after ``c``
    tie = (j > c) & (mirror >= 0) & jnp.take_along_axis(cand, jnp.clip(mirror, 0, nl - 1), -1)
    rank = count(c - d + 1, c + d - 1) + tie
    slot = cand[..., None, :] & (rank[..., None, :] == jnp.arange(near)[:, None])  # [..., C, NL]
    return jnp.sum(jnp.where(slot, j, 0), axis=-1), jnp.any(slot, axis=-1)


def _first_line_tokens(
    state: CopyState, data: CopyText, vocab: CopyVocab, lead: jax.Array
) -> jax.Array:
    """The tokens of kind ``NORMAL`` that a hunk's first line may go on with: [G, R, *E,
    V], those that spell the next bytes of one of the ``FIRST_LINES`` parent lines
    nearest the header's line that it may still be. With ``lead`` (a marker byte per
    state, -1 for none) the line begins in the token, after that byte. Each such line's
    next bytes are hashed prefix by prefix and looked up in ``vocab.keys``."""
    v, k = vocab.bytes.shape
    lead = jnp.broadcast_to(lead, state.mode.shape)
    fresh = lead >= 0
    state = state._replace(pos=jnp.where(fresh, 0, state.pos), hash=jnp.where(fresh, 0, state.hash))
    cand, _, _ = _first_lines(state, data)  # [..., NL]
    g, r, nl = data.lines.shape
    near = min(FIRST_LINES, nl)
    line, cand = _nearest(cand, _expand(state.num, cand.ndim - 1) - 1, near)  # [..., C]
    line = line.reshape(g, r, -1, near)
    starts = _at(data.lines, line) + state.pos.reshape(g, r, -1, 1)
    ahead = _at(data.text, starts[..., None] + jnp.arange(k)).reshape(*cand.shape, k)
    spell = jnp.cumprod((ahead >= 0) & (ahead != _NL), axis=-1) > 0
    h = jnp.broadcast_to(jnp.where(fresh, _mix(0, lead), 0)[..., None], cand.shape)
    _, hashes = jax.lax.scan(lambda h, b: (_mix(h, b), _mix(h, b)), h, jnp.moveaxis(ahead, -1, 0))
    keys = jnp.concatenate([h[..., None], jnp.moveaxis(hashes, 0, -1)], axis=-1)  # [..., C, K + 1]
    size = jnp.arange(k + 1) + fresh[..., None, None]  # the tokens' lengths
    whole = jnp.concatenate([jnp.ones_like(spell[..., :1]), spell], axis=-1)
    at = jnp.clip(jnp.searchsorted(vocab.keys, keys), 0, vocab.keys.shape[0] - 1)
    tok = vocab.key_ids[at]
    hit = (vocab.keys[at] == keys) & (vocab.length[tok] == size) & (size >= 1)
    tok = jnp.where(hit & whole & cand[..., None], tok, v)  # v: none
    flat = tok.reshape(-1, near * (k + 1))
    n = flat.shape[0]
    ok = jnp.zeros((n, v + 1), bool).at[jnp.arange(n)[:, None], flat].set(True)
    return ok[:, :v].reshape(*cand.shape[:-1], v)


def allowed(state: CopyState, data: CopyText, vocab: CopyVocab, stop_ids: jax.Array) -> jax.Array:
    """Which tokens keep each row's diff copying its parent, and refuse its stop tokens
    until it has changed something: [G, R, *E, V] booleans (all true for an
    unconstrained row, and for a row with none allowed)."""
    mode, cur = state.mode, state.cursor
    v, k = vocab.bytes.shape
    ndim = mode.ndim
    window, _ = _pack(_at(data.text, cur[..., None] + jnp.arange(k)))  # [..., K / 4]
    copy_ok, rest_ok = (
        jnp.all(((window[..., None, :] ^ vocab.words[i]) & vocab.masks[i]) == 0, axis=-1)
        for i in (0, 1)
    )
    first = vocab.bytes[:, 0]
    length = _expand(data.length, ndim)
    marker = (first == _SP) | (first == _MINUS)
    other = (first == _PLUS) | (first == _AT) | (first == _BSLASH)
    line_ok = (marker & rest_ok & (cur < length)[..., None]) | other
    m = mode[..., None]
    free = jnp.isin(m, jnp.asarray(FREE_MODES))
    # an added line's first byte that is not blank, in the token or after its "+" marker:
    # the indentation rule (:func:`_layout`)
    x = lambda a: a[..., None]
    at_start = (m == LINE) | (m == LINE0)
    in_line = ((m == PLUS0) | (m == PLUS)) & x(state.solid == 0)
    # the token's bytes after its marker (at a line start), or all of them
    blanks = jnp.where(at_start, vocab.lead[1], x(state.lead) + vocab.lead[0])
    solid = jnp.where(at_start, vocab.solid[1], vocab.solid[0])
    begins = jnp.where(at_start, first == _PLUS, in_line) & (solid >= 0)
    indent = x(state.indent)
    indented = jnp.where(x(state.colon > 0), blanks > indent, blanks <= indent)
    exempt = x((state.indent < 0) | (state.depth > 0)) | (solid == _HASH)
    breaks = begins & ~exempt & ~indented
    # brackets an added line closes must be open (from its marker on, at a line start)
    comment = state.comment
    ctx = jnp.where(comment == 0, 0, jnp.where(comment == 34, 1, jnp.where(comment == 39, 2, -1)))
    row = jnp.where(mode == LINE, len(B.CONTEXTS), jnp.maximum(ctx, 0))
    closes = jnp.take(vocab.closes.reshape(-1, v), row, axis=0)
    fits = B.token_fits(x(state.stack), x(state.depth), closes)
    adding = ((m == PLUS0) | (m == PLUS)) & x((state.removed == 0) & (ctx >= 0))
    adding = adding | ((m == LINE) & (first == _PLUS))
    breaks = breaks | (x(state.known > 0) & adding & ~fits)
    free = free & ~breaks
    balanced = x(brackets_balanced(state, data))
    # a hunk header follows its grammar (from its "@" on)
    in_header = (m >= HDR) & (m < HDR_REST)
    by_bytes = jnp.take(vocab.moves, mode, axis=0) != REJECT  # exact in headers and PRE
    header_ok = by_bytes | (~in_header & (first != _AT))
    # a hunk's first line spells a line of the parent (from its marker on, in LINE0)
    both = CopyState(*(jnp.stack([x, x], axis=2) for x in state))  # [G, R, 2, *E]
    markers = jnp.stack([jnp.where(mode == LINE0, _SP, -1), jnp.full_like(mode, _MINUS)], axis=2)
    spelled, removed = jax.lax.cond(  # rows in a hunk's first line, or about to begin one
        jnp.any((mode == LINE0) | (mode == FIRST)),
        lambda: jnp.moveaxis(_first_line_tokens(both, data, vocab, markers), 2, 0),
        lambda: jnp.zeros((2, *mode.shape, v), bool),
    )
    normal = jnp.select(
        [m == COPY, m == LINE, m == LINE0, in_header, m == FIRST],
        [
            copy_ok,
            line_ok & ~breaks & header_ok & (balanced | (first != _AT)),
            (other & ~breaks & header_ok) | spelled | removed,
            header_ok,
            spelled,
        ],
        free & ((m != PRE) | by_bytes),
    )
    is_stop = jnp.any(jnp.arange(v)[:, None] == stop_ids[None, :], axis=1)  # [V]
    special = is_stop & (m != COPY) & (m != FIRST) & ~in_header & x(state.changed > 0)
    special = special & balanced
    # tokens too long for the automaton: in free text and comments only
    prose = (m == PRE_MID) | (m == HDR_REST)
    prose = prose | (((m == PLUS0) | (m == PLUS)) & x((comment == 1) | (state.removed > 0)))
    ok = jnp.select(
        [vocab.kind == NORMAL, vocab.kind == LONG, vocab.kind == SPECIAL],
        [normal, prose, special],
        False,
    )
    # newline tokens: through the automaton
    nl = vocab.newline  # [M]
    nl_ok = (_newline_modes(state, data, vocab) != REJECT) & (nl < v)
    ok = ok.at[..., nl].set(nl_ok, mode="drop")
    ok = ok | (m == OFF) | (m == REJECT)
    return ok | ~jnp.any(ok, axis=-1, keepdims=True)
