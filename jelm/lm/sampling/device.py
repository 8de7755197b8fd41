"""The sampler's device side: prefill groups of rows, decode until the host has work to do,
move groups between slots (ELM §3.1's mutation step, under ``jit``).

The state is a :class:`Slots` pytree whose every leaf has the group axis first, so that
putting new groups into free slots (:func:`insert`) and packing the live groups into
fewer slots (:func:`take`) are one indexing operation per leaf, in place (the state is
donated). :func:`decode` runs a ``lax.while_loop`` of decode steps that ends when the
host should act: a group has finished while prompts wait (``refill``), or no more than
``min_live`` groups are still sampling (time to pack them into fewer slots), or none is.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jelm.lm.kv import LayerCache, View, empty_layer
from jelm.lm.model import ModelConfig, Params, Transformer, causal_mask, positions_from_mask
from jelm.lm.sampling import copy as C
from jelm.lm.sampling.sample import sample_tokens

# Bound on the attention-score tensor of one prefill chunk (elements; 2**22 floats = 16 MB:
# measured fastest here, as the scores of one chunk stay in cache).
PREFILL_SCORE_ELEMENTS = 2**22


class Slots(NamedTuple):
    """Sampling state of ``G`` groups of ``R`` rows (``N`` new tokens at most).

    ``cache``: one :class:`jelm.lm.kv.LayerCache` per layer. ``prefix_mask`` [G, Pp] and
    ``suffix_mask`` [G, R, Ps]: real prompt slots. ``live`` [G]: the group has rows still
    sampling. Per row [G, R]: ``step`` (index of ``tok`` among the row's new tokens, and
    its row cache slot after the suffix), ``tok`` (the latest token, not yet fed to the
    model), ``pos`` (its position), ``done``, ``stopped`` (a stop token ended it),
    ``count`` (tokens emitted), ``steps`` (decode steps taken), ``keys`` (raw key data
    [G, R, 2]); ``out`` [G, R, N] the
    emitted tokens; ``hist`` [G, R, Pp + Ps + N + 1] the row's prompt and new tokens
    (-1 where unknown or padding), where drafts are looked up. ``copy``: each row's parent
    and its copy automaton before ``tok`` (:mod:`jelm.lm.sampling.copy`; the decode step
    that feeds ``tok`` reads it in), or ``None`` when no row is constrained.
    """

    cache: tuple[LayerCache, ...]
    prefix_mask: jax.Array
    suffix_mask: jax.Array
    step: jax.Array
    live: jax.Array
    tok: jax.Array
    pos: jax.Array
    done: jax.Array
    stopped: jax.Array
    count: jax.Array
    steps: jax.Array
    keys: jax.Array
    out: jax.Array
    hist: jax.Array
    copy: tuple[C.CopyText, C.CopyState] | None = None


class Sampling(NamedTuple):
    """Sampling settings traced as values (changing them does not recompile)."""

    stop_ids: jax.Array
    temperature: jax.Array
    top_p: jax.Array
    pad_id: jax.Array
    greedy: jax.Array
    use_top_p: jax.Array


def chunk_size(n: int, per_item: int) -> int:
    """Items per prefill chunk so that a chunk's attention scores (``per_item`` elements
    per item) stay under ``PREFILL_SCORE_ELEMENTS``: a power of two, so that it divides the
    power-of-two ``n``."""
    fit = max(1, PREFILL_SCORE_ELEMENTS // max(per_item, 1))
    return min(n, 1 << (fit.bit_length() - 1))


def prefill_chunks(config: ModelConfig, groups: int, rows: int, pp: int, ps: int, n: int):
    """``(prefix_chunk, rows_chunk)``: the groups per chunk of the two prefill passes."""
    h = config.n_head
    return chunk_size(groups, h * pp * pp), chunk_size(groups, rows * h * ps * (pp + ps + n))


def _map_chunks(fn, args, n: int, size: int):
    """``fn`` over ``args`` (leading axis ``n``) in chunks of ``size`` items."""
    if size >= n:
        return fn(args)
    split = lambda a: a.reshape(n // size, size, *a.shape[1:])
    out = jax.lax.map(fn, jax.tree_util.tree_map(split, args))
    return jax.tree_util.tree_map(lambda a: a.reshape(n, *a.shape[2:]), out)


@functools.partial(
    jax.jit,
    static_argnames=("config", "new_tokens", "window", "chunks"),
)
def prefill(
    params: Params,
    prefix: jax.Array,
    prefix_mask: jax.Array,
    suffix: jax.Array,
    suffix_mask: jax.Array,
    keys: jax.Array,
    sampling: Sampling,
    copy: tuple[C.CopyText, C.CopyState] | None = None,
    vocab: C.CopyVocab | None = None,
    *,
    config: ModelConfig,
    new_tokens: int,
    window: int,
    chunks: tuple[int, int],
) -> Slots:
    """Slots for new groups: prefixes ``prefix`` [G, Pp] and suffixes ``suffix`` [G, R, Ps]
    (left-padded; masks mark real tokens; a row with no real suffix token is padding and
    starts done), with each row's first token sampled (step 0). The rows' caches hold
    ``window`` generated tokens (:func:`grow` makes room for more). ``chunks``: groups per
    chunk of the prefix and row passes (:func:`prefill_chunks`). ``copy`` and ``vocab``:
    the rows' parents and first automaton states, and the tokens' bytes, for
    copy-constrained diffs (:mod:`jelm.lm.sampling.copy`)."""
    cfg = config
    model = Transformer(cfg)
    g, pp = prefix.shape
    r, ps = suffix.shape[1:]
    hkv, dh = cfg.kv_heads, cfg.head_dim

    def prefill_prefix(chunk):
        tok, mask = chunk
        _, kv = model.apply(
            {"params": params}, tok, positions_from_mask(mask), causal_mask(mask), logits=False
        )
        return kv

    kv = _map_chunks(prefill_prefix, (prefix, prefix_mask), g, chunks[0])
    prefix_len = jnp.sum(prefix_mask, axis=1).astype(jnp.int32)  # [G]
    sr = ps + window
    causal = jnp.tril(jnp.ones((ps, sr), bool), k=0)
    rows_mask = (
        causal[None, None] & jnp.pad(suffix_mask, ((0, 0), (0, 0), (0, window)))[:, :, None, :]
    )
    positions = prefix_len[:, None, None] + jnp.maximum(jnp.cumsum(suffix_mask, axis=2) - 1, 0)

    def prefill_rows(chunk):
        tok, pos, rmask, pmask, layers = chunk
        n = tok.shape[0]
        cache = tuple(
            empty_layer(n, r, hkv, pp, sr, dh)._replace(prefix_k=k, prefix_v=v) for k, v in layers
        )
        view = View(pmask, rmask, jnp.int32(0))
        logits, cache = model.apply(
            {"params": params},
            tok.reshape(n * r, ps),
            pos.reshape(n * r, ps),
            view,
            cache,
            last_only=True,
        )
        return logits[:, 0].reshape(n, r, -1), cache

    logits, cache = _map_chunks(
        prefill_rows,
        (suffix, positions, rows_mask, prefix_mask, kv),
        g,
        chunks[1],
    )
    dead = ~jnp.any(suffix_mask, axis=2)  # [G, R]
    row_keys = jax.random.wrap_key_data(keys.reshape(g * r, -1))
    if copy is not None:
        assert vocab is not None
        logits = _mask(logits, C.allowed(copy[1], copy[0], vocab, sampling.stop_ids))
    tok = sample_tokens(
        logits.reshape(g * r, -1),
        row_keys,
        jnp.int32(0),
        sampling.temperature,
        sampling.top_p,
        sampling.greedy,
        sampling.use_top_p,
    ).reshape(g, r)
    hist = jnp.concatenate(
        [
            jnp.broadcast_to(jnp.where(prefix_mask, prefix, -1)[:, None], (g, r, pp)),
            jnp.where(suffix_mask, suffix, -1),
            tok[..., None],
            jnp.full((g, r, new_tokens), -1, jnp.int32),
        ],
        axis=2,
    )
    return Slots(
        cache=cache,
        prefix_mask=prefix_mask,
        suffix_mask=suffix_mask,
        step=jnp.zeros((g, r), jnp.int32),
        live=~jnp.all(dead, axis=1),
        tok=tok,
        pos=prefix_len[:, None] + jnp.sum(suffix_mask, axis=2).astype(jnp.int32),
        done=dead,
        stopped=jnp.zeros((g, r), bool),
        count=jnp.zeros((g, r), jnp.int32),
        steps=jnp.zeros((g, r), jnp.int32),
        keys=keys,
        out=jnp.full((g, r, new_tokens), sampling.pad_id, jnp.int32),
        hist=hist,
        copy=copy,
    )


def _mask(logits: jax.Array, ok: jax.Array) -> jax.Array:
    """``logits`` with the tokens ``ok`` rules out at minus infinity (``ok`` may cover
    fewer ids than the model's vocabulary: the rest are ruled out)."""
    v = logits.shape[-1]
    ok = ok[..., :v]
    if ok.shape[-1] < v:
        ok = jnp.pad(ok, [(0, 0)] * (ok.ndim - 1) + [(0, v - ok.shape[-1])])
    return jnp.where(ok, logits, -jnp.inf)


def draft_tokens(hist: jax.Array, end: jax.Array, k: int, longest: int = 3) -> jax.Array:
    """Up to ``k`` guessed next tokens per row (-1: no guess), by prompt lookup.

    A diff copies most of its lines from the parent program in the prompt, so the tokens
    that followed the latest earlier occurrence of the row's last ``n`` tokens (the
    longest ``n <= longest`` that occurs) are likely to come next. ``hist`` [G, R, H]
    holds each row's known tokens (-1 elsewhere); ``end`` [G, R] is the index of its
    last one.
    """
    h = hist.shape[-1]
    idx = jnp.arange(h)
    start = jnp.full(end.shape, -1, jnp.int32)
    for n in range(longest, 0, -1):
        match = idx + n <= end[..., None]  # the occurrence ends before the last token
        for i in range(n):
            want = jnp.take_along_axis(hist, jnp.maximum(end - (n - 1 - i), 0)[..., None], -1)
            match &= (want >= 0) & (end - (n - 1 - i) >= 0)[..., None]
            shifted = jnp.pad(hist[..., i:], ((0, 0), (0, 0), (0, i)), constant_values=-2)
            match &= shifted == want
        found = jnp.max(jnp.where(match, idx + n, -1), axis=-1)
        start = jnp.where(start < 0, found, start)
    at = start[..., None] + jnp.arange(k)
    known = (start[..., None] >= 0) & (at <= end[..., None])
    return jnp.where(known, jnp.take_along_axis(hist, jnp.clip(at, 0, h - 1), -1), -1)


@functools.partial(
    jax.jit,
    static_argnames=("config", "drafts"),
    donate_argnames=("slots",),
)
def decode(
    params: Params,
    slots: Slots,
    sampling: Sampling,
    refill: jax.Array,
    min_live: jax.Array,
    max_steps: jax.Array,
    vocab: C.CopyVocab | None = None,
    *,
    config: ModelConfig,
    drafts: int = 0,
) -> Slots:
    """Decode steps until a group finishes while ``refill`` is set, or at most ``min_live``
    groups are live, or none is, or a live row's cache has no room for a step (:func:`grow`),
    or ``max_steps`` steps were taken (the host looks for new prompts).

    A step feeds each live row's ``tok`` and ``drafts`` guessed tokens
    (:func:`draft_tokens`) to the model at once, at row cache slots ``Ps + step`` on, and
    samples a token after each, the one at new-token index ``i`` from the row's key folded
    with ``i``. The row keeps its guesses up to the first that differs from the sample
    there, and that sample: exactly the tokens that one token per step would give (the
    same keys see the same context), in fewer steps when the guesses are right. A stop
    token ends the row (it is not emitted); so do ``N`` emitted tokens. A group stops
    being live when all its rows are done. Rows with a parent in ``slots.copy`` sample
    only tokens that keep their diff copying it (:mod:`jelm.lm.sampling.copy`; ``vocab``
    holds the tokens' bytes); the guessed tokens are checked under the same constraint.
    """
    model = Transformer(config)
    g, r, n = slots.out.shape
    ps = slots.suffix_mask.shape[2]
    window = window_of(slots)
    t = drafts + 1  # tokens fed per row and step
    gen0 = slots.hist.shape[2] - n - 1  # hist index of new token 0
    row_keys = jax.random.wrap_key_data(slots.keys.reshape(g * r, -1))
    live0 = jnp.sum(slots.live)
    ahead = jnp.arange(t)

    def cond(carry: tuple[Slots, jax.Array]):
        s, i = carry
        live = jnp.sum(s.live)
        active = s.live[:, None] & ~s.done
        full = jnp.any(active & (s.step + t > window))  # no cache room for a step
        more = (live > min_live) & ~(refill & (live < live0)) & (i < max_steps)
        return (live > 0) & more & ~full

    def body(carry: tuple[Slots, jax.Array]) -> tuple[Slots, jax.Array]:
        s, i = carry
        active = s.live[:, None] & ~s.done
        if drafts:
            guess = draft_tokens(s.hist, gen0 + s.step, drafts)
            seq = jnp.concatenate([s.tok[..., None], guess], axis=2)  # [G, R, T]
        else:
            guess, seq = None, s.tok[..., None]
        slot = jnp.arange(ps + window)
        rows_mask = jnp.where(
            slot < ps,
            jnp.pad(s.suffix_mask, ((0, 0), (0, 0), (0, window)))[:, :, None, :],
            (slot - ps) <= (s.step[..., None, None] + ahead[:, None]),
        )  # [G, R, T, Ps + W]
        view = View(s.prefix_mask, rows_mask, ps + jnp.minimum(s.step, window - t))
        logits, cache = model.apply(
            {"params": params},
            jnp.where(seq >= 0, seq, sampling.pad_id).reshape(g * r, t),
            (s.pos[..., None] + ahead).reshape(g * r, t),
            view,
            s.cache,
        )
        if s.copy is not None:
            assert vocab is not None
            data, state = s.copy

            def read(st: C.CopyState, tok: jax.Array):
                st = C.advance(st, tok, data, vocab)
                return st, st

            # the automata after each fed token (``tok`` and the guesses): one compiled
            # advance for all, the only one in the step
            _, after = jax.lax.scan(read, state, jnp.moveaxis(seq, 2, 0))
            ahead_states = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 2), after)
            ok = C.allowed(ahead_states, data, vocab, sampling.stop_ids)  # [G, R, T, V]
            logits = _mask(logits.reshape(g, r, t, -1), ok)
        x = sample_tokens(
            logits.reshape(g * r * t, -1),
            jnp.repeat(row_keys, t, axis=0),
            (s.step[..., None] + 1 + ahead).reshape(-1),
            sampling.temperature,
            sampling.top_p,
            sampling.greedy,
            sampling.use_top_p,
        ).reshape(g, r, t)
        if drafts:
            right = jnp.cumprod(x[..., :drafts] == guess, axis=2)
            kept = jnp.sum(right, axis=2)  # guesses kept [G, R]
        else:
            kept = jnp.zeros((g, r), jnp.int32)
        is_stop = jnp.any(seq[..., None] == sampling.stop_ids, axis=-1)  # [G, R, T]
        within = (ahead <= kept[..., None]) & (s.step[..., None] + ahead < n)
        stop_here = within & is_stop
        before = (jnp.cumsum(stop_here, axis=2) - stop_here) > 0
        emit = active[..., None] & within & ~is_stop & ~before  # [G, R, T]
        hit_stop = active & jnp.any(stop_here, axis=2)

        def place(buf, base, values, ok):
            """``values[j]`` into ``buf`` at ``base + j`` where ``ok[j]``."""
            at = jnp.arange(buf.shape[2]) - base[..., None]
            inside = (at >= 0) & (at < values.shape[2])
            at = jnp.clip(at, 0, values.shape[2] - 1)
            put = inside & jnp.take_along_axis(ok, at, axis=2)
            return jnp.where(put, jnp.take_along_axis(values, at, axis=2), buf)

        nxt = jnp.take_along_axis(x, kept[..., None], axis=2)[..., 0]
        step = jnp.where(active, s.step + kept + 1, s.step)
        known = jnp.concatenate([seq, jnp.zeros((g, r, 1), jnp.int32)], axis=2)
        known = jnp.where(jnp.arange(t + 1) == kept[..., None] + 1, nxt[..., None], known)
        keep = active[..., None] & (jnp.arange(t + 1) <= kept[..., None] + 1)
        done = s.done | (active & (hit_stop | (step >= n)))
        copy = s.copy
        if copy is not None:  # the automaton before ``nxt``: after the tokens kept
            kept_state = C.CopyState(
                *(jnp.take_along_axis(x, kept[..., None], axis=2)[..., 0] for x in ahead_states)
            )
            copy = (
                data,
                C.CopyState(
                    *(jnp.where(active, b, a) for a, b in zip(state, kept_state, strict=True))
                ),
            )
        return s._replace(
            copy=copy,
            cache=cache,
            step=step,
            live=s.live & ~jnp.all(done, axis=1),
            tok=jnp.where(active, nxt, s.tok),
            pos=jnp.where(active, s.pos + kept + 1, s.pos),
            done=done,
            stopped=s.stopped | hit_stop,
            count=s.count + jnp.sum(emit, axis=2),
            steps=s.steps + active,
            out=place(s.out, s.step, seq, emit),
            hist=place(s.hist, gen0 + s.step, known, keep),
        ), i + 1

    return jax.lax.while_loop(cond, body, (slots, jnp.int32(0)))[0]


@functools.partial(jax.jit, static_argnames=("window",))
def grow(slots: Slots, window: int) -> Slots:
    """``slots`` with room for ``window`` generated tokens in every row's cache.

    Caches start small and grow when a row needs more: a decode step reads every slot of
    its rows' caches, and most completions end long before ``max_new_tokens``."""
    ps = slots.suffix_mask.shape[2]
    more = ps + window - slots.cache[0].rows_k.shape[3]
    pad = ((0, 0), (0, 0), (0, 0), (0, more), (0, 0))
    cache = tuple(
        c._replace(rows_k=jnp.pad(c.rows_k, pad), rows_v=jnp.pad(c.rows_v, pad))
        for c in slots.cache
    )
    return slots._replace(cache=cache)


def window_of(slots: Slots) -> int:
    """Generated tokens the rows' caches of ``slots`` hold."""
    return slots.cache[0].rows_k.shape[3] - slots.suffix_mask.shape[2]


@functools.partial(jax.jit, donate_argnames=("slots",))
def insert(slots: Slots, new: Slots, at: jax.Array) -> Slots:
    """``slots`` with the groups of ``new`` in slots ``at`` (entries ``>= G`` are dropped)."""
    return jax.tree_util.tree_map(lambda a, b: a.at[at].set(b, mode="drop"), slots, new)


@jax.jit
def take(slots: Slots, at: jax.Array) -> Slots:
    """The groups of ``slots`` in slots ``at``, in that order (fewer slots)."""
    return jax.tree_util.tree_map(lambda a: a[at], slots)


@functools.partial(jax.jit, static_argnames=("groups",))
def widen(slots: Slots, groups: int) -> Slots:
    """``slots`` with ``groups`` slots, the new ones empty (not live)."""
    more = groups - slots.live.shape[0]
    return jax.tree_util.tree_map(
        lambda a: jnp.pad(a, [(0, more)] + [(0, 0)] * (a.ndim - 1)), slots
    )


@functools.partial(jax.jit, static_argnames=("prefix_len", "suffix_len"))
def fit(slots: Slots, prefix_len: int, suffix_len: int) -> Slots:
    """``slots`` with room for prefixes of ``prefix_len`` and suffixes of ``suffix_len``
    tokens (prompts are left-padded, so the new slots go in front and are masked out)."""
    dp = prefix_len - slots.prefix_mask.shape[1]
    ds = suffix_len - slots.suffix_mask.shape[2]
    front = lambda a, axis, n, value=0: jnp.pad(
        a, [(n, 0) if k == axis else (0, 0) for k in range(a.ndim)], constant_values=value
    )
    cache = tuple(
        LayerCache(
            front(c.prefix_k, 2, dp),
            front(c.prefix_v, 2, dp),
            front(c.rows_k, 3, ds),
            front(c.rows_v, 3, ds),
        )
        for c in slots.cache
    )
    pp = slots.prefix_mask.shape[1]
    hist = jnp.concatenate(
        [front(slots.hist[..., :pp], 2, dp, -1), front(slots.hist[..., pp:], 2, ds, -1)], axis=2
    )
    return slots._replace(
        cache=cache,
        prefix_mask=front(slots.prefix_mask, 1, dp, False),
        suffix_mask=front(slots.suffix_mask, 2, ds, False),
        hist=hist,
    )
