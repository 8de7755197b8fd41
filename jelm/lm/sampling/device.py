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
from jelm.lm.sampling.sample import sample_tokens

# Bound on the attention-score tensor of one prefill chunk (elements; 2**22 floats = 16 MB:
# measured fastest here, as the scores of one chunk stay in cache).
PREFILL_SCORE_ELEMENTS = 2**22


class Slots(NamedTuple):
    """Sampling state of ``G`` groups of ``R`` rows (``N`` new tokens at most).

    ``cache``: one :class:`jelm.lm.kv.LayerCache` per layer. ``prefix_mask`` [G, Pp] and
    ``suffix_mask`` [G, R, Ps]: real prompt slots. ``step`` [G]: index of ``tok`` among
    the rows' new tokens. ``live`` [G]: the group has rows still sampling. Per row [G, R]:
    ``tok`` (the latest token, not yet fed to the model), ``pos`` (its position), ``done``,
    ``stopped`` (a stop token ended it), ``count`` (tokens emitted), ``keys`` (raw key
    data [G, R, 2]); ``out`` [G, R, N] the emitted tokens.
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
    keys: jax.Array
    out: jax.Array


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
    chunk of the prefix and row passes (:func:`prefill_chunks`)."""
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
    tok = sample_tokens(
        logits.reshape(g * r, -1),
        row_keys,
        jnp.int32(0),
        sampling.temperature,
        sampling.top_p,
        sampling.greedy,
        sampling.use_top_p,
    ).reshape(g, r)
    return Slots(
        cache=cache,
        prefix_mask=prefix_mask,
        suffix_mask=suffix_mask,
        step=jnp.zeros((g,), jnp.int32),
        live=~jnp.all(dead, axis=1),
        tok=tok,
        pos=prefix_len[:, None] + jnp.sum(suffix_mask, axis=2).astype(jnp.int32),
        done=dead,
        stopped=jnp.zeros((g, r), bool),
        count=jnp.zeros((g, r), jnp.int32),
        keys=keys,
        out=jnp.full((g, r, new_tokens), sampling.pad_id, jnp.int32),
    )


@functools.partial(
    jax.jit,
    static_argnames=("config",),
    donate_argnames=("slots",),
)
def decode(
    params: Params,
    slots: Slots,
    sampling: Sampling,
    refill: jax.Array,
    min_live: jax.Array,
    *,
    config: ModelConfig,
) -> Slots:
    """Decode steps until a group finishes while ``refill`` is set, or at most ``min_live``
    groups are live, or none is, or a live row's cache is full (:func:`grow`).

    A step emits each live row's ``tok`` (unless it is a stop token, which ends the row),
    feeds it to the model at row slot ``Ps + step`` and samples the next token at
    ``step + 1`` from the row's key. A group stops being live when all its rows are done or
    ``N`` tokens were emitted.
    """
    model = Transformer(config)
    g, r, n = slots.out.shape
    ps = slots.suffix_mask.shape[2]
    window = slots.cache[0].rows_k.shape[3] - ps  # generated tokens the rows' caches hold
    row_keys = jax.random.wrap_key_data(slots.keys.reshape(g * r, -1))
    live0 = jnp.sum(slots.live)
    new_slots = jnp.arange(n)

    def cond(s: Slots):
        live = jnp.sum(s.live)
        full = jnp.any(s.live & (s.step >= window))  # a row's cache has no free slot
        return (live > 0) & (live > min_live) & ~(refill & (live < live0)) & ~full

    def body(s: Slots) -> Slots:
        is_stop = jnp.any(s.tok[..., None] == sampling.stop_ids, axis=-1)
        active = s.live[:, None] & ~s.done
        emit = active & ~is_stop
        at = jnp.minimum(s.step, n - 1)[:, None, None] == new_slots  # [G, 1, N]
        out = jnp.where(emit[..., None] & at, s.tok[..., None], s.out)
        done = s.done | is_stop
        view = View(
            s.prefix_mask,
            jnp.concatenate(
                [
                    s.suffix_mask,
                    jnp.broadcast_to(new_slots[:window] <= s.step[:, None, None], (g, r, window)),
                ],
                axis=2,
            )[:, :, None, :],
            ps + jnp.minimum(s.step, window - 1),
        )
        logits, cache = model.apply(
            {"params": params},
            s.tok.reshape(g * r, 1),
            s.pos.reshape(g * r, 1),
            view,
            s.cache,
        )
        step = s.step + s.live
        tok = sample_tokens(
            logits[:, 0],
            row_keys,
            jnp.repeat(step, r),
            sampling.temperature,
            sampling.top_p,
            sampling.greedy,
            sampling.use_top_p,
        ).reshape(g, r)
        return s._replace(
            cache=cache,
            step=step,
            live=s.live & ~jnp.all(done, axis=1) & (step < n),
            tok=jnp.where(s.live[:, None], tok, s.tok),
            pos=s.pos + s.live[:, None],
            done=done,
            stopped=s.stopped | (active & is_stop),
            count=s.count + emit,
            out=out,
        )

    return jax.lax.while_loop(cond, body, slots)


@functools.partial(jax.jit, static_argnames=("window",))
def grow(slots: Slots, window: int) -> Slots:
    """``slots`` with room for ``window`` generated tokens in every row's cache.

    Caches start small and double: a decode step reads every slot of its rows' caches, and
    most completions end long before ``max_new_tokens``."""
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
