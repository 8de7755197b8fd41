"""The next token of each row: greedy, or temperature and nucleus (top-p) sampling (ELM
§3.1 samples its diffs at a temperature with a nucleus)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def nucleus_threshold(probs: jax.Array, top_p: jax.Array, iters: int = 32) -> jax.Array:
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


def sample_tokens(
    logits: jax.Array,
    row_keys: jax.Array,
    step: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    greedy: bool | jax.Array,
    use_top_p: bool | jax.Array,
) -> jax.Array:
    """Next token per row from ``logits`` [B, V]: argmax, or temperature + nucleus sampling.

    Row ``b`` draws from ``fold_in(row_keys[b], step[b])`` (``step`` a scalar or [B]), so
    a row's sample depends on its own key and step only, not on the other rows.
    ``greedy`` and ``use_top_p`` may be traced booleans (one compiled program serves every
    setting) or Python ones.
    """

    def argmax() -> jax.Array:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def draw() -> jax.Array:
        scaled = logits.astype(jnp.float32) / temperature
        probs = jax.nn.softmax(scaled, axis=-1)

        def nucleus() -> jax.Array:
            return jnp.where(probs >= nucleus_threshold(probs, top_p), probs, 0.0)

        kept = jax.lax.cond(use_top_p, nucleus, lambda: probs)
        # Inverse CDF with one uniform per row: much cheaper here than a Gumbel draw per
        # vocabulary entry, and a row's token is a function of its key, step and logits.
        keys = jax.vmap(jax.random.fold_in)(row_keys, jnp.broadcast_to(step, row_keys.shape))
        u = jax.vmap(jax.random.uniform)(keys)[:, None]
        cdf = jnp.cumsum(kept, axis=-1)
        tok = jnp.sum(cdf <= u * cdf[:, -1:], axis=-1)
        return jnp.minimum(tok, logits.shape[-1] - 1).astype(jnp.int32)

    return jax.lax.cond(greedy, argmax, draw)
