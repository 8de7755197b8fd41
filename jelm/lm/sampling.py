"""Batched sampling from the diff model under ``jit``: ELM's mutation step (§3.1).

:func:`generate` pads prompts on the left into shape buckets so that calls with similar
prompts reuse one compiled program: prompt length to the smaller of the next power of two
and the next multiple of 256 (at least 16), batch to the next power of two. The KV cache
holds ``prompt bucket + max_new_tokens`` slots. One jitted function does the prefill (the
whole prompt at once, in row chunks that bound the attention-score memory) and the decode
loop (a ``lax.while_loop`` that ends when every row has produced a stop token). Each row
samples with its own folded key (temperature, then nucleus/top-p), so a row's tokens do not
depend on the other rows.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jelm.lm.model import KVCache, ModelConfig, Params, Transformer, positions_from_mask


@dataclasses.dataclass(frozen=True)
class Generation:
    """One sampled continuation: its new tokens and why it ended.

    ``tokens`` excludes the prompt and the stop token; ``finish_reason`` is ``"stop"`` when
    a token of ``stop_token_ids`` was produced, ``"length"`` when ``max_new_tokens`` ran out.
    """

    tokens: list[int]
    finish_reason: str


STOP_SLOTS = 8  # stop ids are padded to a multiple of this (fixed shapes, fewer compiles)
# Bound on the attention-score tensor of one prefill chunk (elements; 2**26 floats = 256 MB).
PREFILL_SCORE_ELEMENTS = 2**26


def bucket_length(n: int) -> int:
    """Padded prompt length: the smaller of the next power of two and the next multiple of
    256, at least 16. Few buckets (at most 12 up to 2048) and at most 33% padding above 512
    tokens, where the prompts of ELM's diff models live."""
    n = max(n, 16)
    pow2 = 1 << (n - 1).bit_length()
    return min(pow2, -(-n // 256) * 256)


def bucket_batch(n: int) -> int:
    """Padded batch size: the next power of two."""
    return 1 << (max(n, 1) - 1).bit_length()


def _nucleus_threshold(probs: jax.Array, top_p: jax.Array, iters: int = 32) -> jax.Array:
    """Per row, the largest ``t`` with ``sum(probs[probs >= t]) >= top_p`` ([B, 1]).

    Keeping the tokens with ``probs >= t`` is nucleus (top-p) sampling: the smallest set of
    most likely tokens whose mass reaches ``top_p``. Found by bisection on ``t`` (32 halvings
    of [0, max p]: exact up to ties within ``max_p * 2**-32``) instead of sorting the
    vocabulary at every decode step (much slower on CPU; see jelm/lm/README.md).
    """
    lo = jnp.zeros((probs.shape[0], 1), probs.dtype)  # mass(lo) >= top_p always
    hi = jnp.max(probs, axis=-1, keepdims=True) * (1 + 1e-6) + 1e-30  # mass(hi) == 0

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        ok = jnp.sum(jnp.where(probs >= mid, probs, 0.0), axis=-1, keepdims=True) >= top_p
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    lo, _ = jax.lax.fori_loop(0, iters, halve, (lo, hi))
    return lo


def _sample(
    logits: jax.Array,
    row_keys: jax.Array,
    step: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    greedy: bool,
    use_top_p: bool,
) -> jax.Array:
    """Next token per row from ``logits`` [B, V]: argmax, or temperature + nucleus sampling.

    Each row draws from its own key ``fold_in(row_key, step)``, so a row's sample does not
    depend on the other rows of the batch.
    """
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if use_top_p:
        probs = jax.nn.softmax(logits, axis=-1)
        threshold = _nucleus_threshold(probs, top_p)
        logits = jnp.where(probs >= threshold, logits, -jnp.inf)
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
    return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


@functools.partial(
    jax.jit,
    static_argnames=("config", "max_new_tokens", "greedy", "use_top_p", "prefill_rows"),
)
def _generate_padded(
    params: Params,
    tokens: jax.Array,
    prompt_mask: jax.Array,
    done: jax.Array,
    key: jax.Array,
    stop_ids: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    pad_id: jax.Array,
    *,
    config: ModelConfig,
    max_new_tokens: int,
    greedy: bool,
    use_top_p: bool,
    prefill_rows: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Prefill + decode loop on left-padded ``tokens`` [B, P].

    Returns ``(out [B, N], n_tokens [B], stopped [B])``: generated tokens (stop token and
    everything after it replaced by ``pad_id``), their count, and whether a stop token ended
    the row. Rows with ``done`` set on entry (batch padding) produce nothing.
    """
    cfg = config
    b, p = tokens.shape
    n = max_new_tokens
    s = p + n
    model = Transformer(cfg)
    positions = positions_from_mask(prompt_mask)
    # Key slots: the prompt's real tokens, then the generated ones as they are written.
    slot_mask = jnp.concatenate([prompt_mask, jnp.ones((b, n), bool)], axis=1)  # [B, S]

    def empty_cache(rows: int) -> KVCache:
        shape = (rows, cfg.kv_heads, s, cfg.head_dim)
        return tuple((jnp.zeros(shape), jnp.zeros(shape)) for _ in range(cfg.n_layer))

    def prefill(chunk):
        tok, pos, smask = chunk
        mask = jnp.tril(jnp.ones((p, s), bool))[None] & smask[:, None, :]
        logits, cache = model.apply(
            {"params": params}, tok, pos, mask, empty_cache(tok.shape[0]), 0, last_only=True
        )
        return logits[:, 0], cache

    if prefill_rows >= b:
        last_logits, cache = prefill((tokens, positions, slot_mask))
    else:  # row chunks bound the [rows, H, P, S] attention scores
        split = lambda a: a.reshape(b // prefill_rows, prefill_rows, *a.shape[1:])
        last_logits, cache = jax.lax.map(
            prefill, (split(tokens), split(positions), split(slot_mask))
        )
        last_logits, cache = jax.tree_util.tree_map(
            lambda a: a.reshape(b, *a.shape[2:]), (last_logits, cache)
        )

    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(b))
    sample = functools.partial(
        _sample,
        row_keys=row_keys,
        temperature=temperature,
        top_p=top_p,
        greedy=greedy,
        use_top_p=use_top_p,
    )
    tok = sample(last_logits, step=jnp.int32(0))
    next_pos = jnp.sum(prompt_mask, axis=1).astype(jnp.int32)  # position of `tok`

    def cond(state):
        i, _, done, *_ = state
        return (i < n) & ~jnp.all(done)

    def body(state):
        i, tok, done, stopped, count, out, pos, cache = state
        is_stop = jnp.any(tok[:, None] == stop_ids[None, :], axis=1)
        emit = ~done & ~is_stop
        out = out.at[:, i].set(jnp.where(emit, tok, pad_id))
        count = count + emit.astype(jnp.int32)
        stopped = stopped | (~done & is_stop)
        done = done | is_stop
        valid = slot_mask & (jnp.arange(s) <= p + i)[None]
        logits, cache = model.apply(
            {"params": params}, tok[:, None], pos[:, None], valid[:, None, :], cache, p + i
        )
        tok = sample(logits[:, -1], step=i + 1)
        return i + 1, tok, done, stopped, count, out, pos + 1, cache

    state = (
        jnp.int32(0),
        tok,
        done,
        jnp.zeros((b,), bool),
        jnp.zeros((b,), jnp.int32),
        jnp.full((b, n), pad_id, jnp.int32),
        next_pos,
        cache,
    )
    _, _, _, stopped, count, out, _, _ = jax.lax.while_loop(cond, body, state)
    return out, count, stopped


def generate(
    params: Params,
    config: ModelConfig,
    prompts: Sequence[Sequence[int]],
    key: jax.Array,
    *,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_token_ids: Sequence[int] = (),
    pad_id: int = 0,
) -> list[Generation]:
    """Sample continuations of a batch of token-id prompts (ELM's mutation step, §3.1).

    Prompts are left-padded into a (batch, length) bucket (see :func:`bucket_length`,
    :func:`bucket_batch`); the compiled program is cached on (config, bucket shapes,
    ``max_new_tokens``, greedy or not, top-p or not), so a second call with other prompts of
    similar length does not recompile. ``temperature == 0`` is greedy decoding; otherwise
    logits are divided by ``temperature`` and, if ``top_p < 1``, cut to the nucleus. A row
    stops at the first token in ``stop_token_ids``; the loop ends when every row has stopped
    or ``max_new_tokens`` were produced. Deterministic for a given ``key``, and a row's
    result does not depend on the other rows (each row samples with its own folded key).

    Raises ``ValueError`` for an empty prompt or one that leaves no room for
    ``max_new_tokens`` within ``config.n_ctx`` positions.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not prompts:
        return []
    lengths = [len(p) for p in prompts]
    for i, n in enumerate(lengths):
        if n == 0:
            raise ValueError(f"prompt {i} is empty")
        if n + max_new_tokens > config.n_ctx:
            raise ValueError(
                f"prompt {i} has {n} tokens; with max_new_tokens={max_new_tokens} it needs "
                f"{n + max_new_tokens} positions but the model has n_ctx={config.n_ctx}"
            )
    b, p = bucket_batch(len(prompts)), bucket_length(max(lengths))
    tokens = np.full((b, p), pad_id, np.int32)
    mask = np.zeros((b, p), bool)
    for i, prompt in enumerate(prompts):
        tokens[i, p - len(prompt) :] = np.asarray(prompt, np.int32)
        mask[i, p - len(prompt) :] = True
    tokens[len(prompts) :, -1] = pad_id  # batch padding rows: one pad token, done at once
    mask[len(prompts) :, -1] = True
    done = np.arange(b) >= len(prompts)
    n_stop = max(STOP_SLOTS, -(-len(stop_token_ids) // STOP_SLOTS) * STOP_SLOTS)
    stop = np.full((n_stop,), -1, np.int32)
    stop[: len(stop_token_ids)] = np.asarray(list(stop_token_ids), np.int32)
    per_row = config.n_head * p * (p + max_new_tokens)
    fit = max(1, PREFILL_SCORE_ELEMENTS // per_row)
    prefill_rows = 1 << (fit.bit_length() - 1)  # a power of two, so it divides b
    out, count, stopped = _generate_padded(
        params,
        jnp.asarray(tokens),
        jnp.asarray(mask),
        jnp.asarray(done),
        key,
        jnp.asarray(stop),
        jnp.float32(max(temperature, 1e-6)),
        jnp.float32(top_p),
        jnp.int32(pad_id),
        config=config,
        max_new_tokens=max_new_tokens,
        greedy=temperature == 0,
        use_top_p=top_p < 1.0,
        prefill_rows=min(prefill_rows, b),
    )
    out, count, stopped = np.asarray(out), np.asarray(count), np.asarray(stopped)
    return [
        Generation(out[i, : count[i]].tolist(), "stop" if stopped[i] else "length")
        for i in range(len(prompts))
    ]
