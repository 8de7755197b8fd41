"""The sampler's KV cache: one shared prompt prefix per group of rows, and each row's own
slots (ELM §3.1: many children of one parent are sampled from prompts that share the
parent's text).

Rows are laid out as ``G`` groups of ``R`` rows (``B = G * R``). The rows of a group share
a prompt prefix, whose keys and values are computed once and kept once per group
(``prefix_k``/``prefix_v``); the rest of each row's prompt (its suffix) and the tokens it
samples go to its own slots (``rows_k``/``rows_v``). A decode step then reads each
prefix once for the ``R`` rows of its group: the attention of a step costs
``G * Pp + B * Sr`` key/value slots instead of ``B * (Pp + Sr)``. With ``R == 1`` this is
the plain per-row cache.

The new keys and values of a call are written in place (``dynamic_update_slice`` at one
slot for every row, or one slot per group during decoding), and attention takes a single
softmax over the prefix and row slots together, so that the result equals attention over
the concatenated cache up to the order of float additions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class LayerCache(NamedTuple):
    """One layer's cache. ``prefix_k``/``prefix_v`` ``[G, Hkv, Pp, Dh]``;
    ``rows_k``/``rows_v`` ``[G, R, Hkv, Sr, Dh]``."""

    prefix_k: jax.Array
    prefix_v: jax.Array
    rows_k: jax.Array
    rows_v: jax.Array


class View(NamedTuple):
    """What the ``T`` new tokens of each row may see, shared by every layer of one call.

    ``prefix_mask`` ``[G, Pp]``: the group's real prefix slots (every query sees all of
    them). ``rows_mask`` ``[G, R, T, Sr]``: the row slots query ``t`` sees, its own slot
    included. ``write``: the row slot where the call's first new token goes, a scalar
    (the same for every row), ``[G]`` (one per group) or ``[G, R]`` (one per row).
    """

    prefix_mask: jax.Array
    rows_mask: jax.Array
    write: jax.Array


def empty_layer(
    groups: int, rows: int, kv_heads: int, prefix_len: int, row_len: int, head_dim: int
) -> LayerCache:
    """A zero cache of the given shape (float32)."""
    prefix = (groups, kv_heads, prefix_len, head_dim)
    rows = (groups, rows, kv_heads, row_len, head_dim)
    return LayerCache(*(jnp.zeros(shape, jnp.float32) for shape in (prefix, prefix, rows, rows)))


def _write(cache: jax.Array, new: jax.Array, write: jax.Array) -> jax.Array:
    """``new`` ``[G, R, Hkv, T, Dh]`` into ``cache`` ``[G, R, Hkv, Sr, Dh]`` at ``write``."""
    new = new.astype(cache.dtype)
    if write.ndim == 0:
        return jax.lax.dynamic_update_slice(cache, new, (0, 0, 0, write, 0))
    if write.ndim == 2:  # one slot per row
        row = lambda c, x, w: jax.lax.dynamic_update_slice(c, x, (0, w, 0))
        return jax.vmap(jax.vmap(row))(cache, new, write)
    return jax.vmap(lambda c, x, w: jax.lax.dynamic_update_slice(c, x, (0, 0, w, 0)))(
        cache, new, write
    )


def attend(
    q: jax.Array, k: jax.Array, v: jax.Array, layer: LayerCache, view: View
) -> tuple[jax.Array, LayerCache]:
    """Attention of new tokens over the cache, after writing their keys and values.

    ``q`` ``[B, T, H, Dh]``, ``k``/``v`` ``[B, T, Hkv, Dh]`` (``H`` a multiple of ``Hkv``:
    grouped-query attention). Returns the attention output ``[B, T, H, Dh]`` and the
    updated cache.
    """
    g, r, _, sr, _ = layer.rows_k.shape
    pp = layer.prefix_k.shape[2]
    b, t, h, d = q.shape
    hkv = k.shape[2]
    rep = h // hkv
    rows_k = _write(layer.rows_k, k.reshape(g, r, t, hkv, d).transpose(0, 1, 3, 2, 4), view.write)
    rows_v = _write(layer.rows_v, v.reshape(g, r, t, hkv, d).transpose(0, 1, 3, 2, 4), view.write)
    # Every product is a plain batched matmul over the cache in its stored layout (XLA's
    # CPU backend copies the cache for anything else), with the cache as the left operand
    # of the scores ("bsd,bmd->bsm"): with a few queries per row XLA's CPU matmul is
    # several times faster that way round than "bmd,bsd->bms". The softmax runs in that
    # [..., slots, queries] layout (transposing the scores back would let XLA fold the
    # transpose into the product and undo the choice).
    q6 = q.reshape(g, r, t, hkv, rep, d) / math.sqrt(d)
    qp = q6.transpose(0, 3, 1, 2, 4, 5).reshape(g * hkv, r * t * rep, d)
    qr = q6.transpose(0, 1, 3, 2, 4, 5).reshape(g * r * hkv, t * rep, d)
    sp = jnp.einsum("bsd,bmd->bsm", layer.prefix_k.reshape(g * hkv, pp, d), qp)
    sr_ = jnp.einsum("bsd,bmd->bsm", rows_k.reshape(g * r * hkv, sr, d), qr)
    low = jnp.finfo(sp.dtype).min
    sp = jnp.where(
        view.prefix_mask[:, None, :, None, None, None], sp.reshape(g, hkv, pp, r, t, rep), low
    )
    rows_mask = view.rows_mask.transpose(0, 1, 3, 2)[:, :, None, :, :, None]
    sr_ = jnp.where(rows_mask, sr_.reshape(g, r, hkv, sr, t, rep), low)
    to_rows = (0, 2, 1, 3, 4)  # [g, hkv, r, t, rep] <-> [g, r, hkv, t, rep]
    top = jnp.maximum(jnp.max(sp, axis=2).transpose(to_rows), jnp.max(sr_, axis=3))
    ep = jnp.exp(sp - top.transpose(to_rows)[:, :, None])
    er = jnp.exp(sr_ - top[:, :, :, None])
    total = jnp.sum(ep, axis=2).transpose(to_rows) + jnp.sum(er, axis=3)
    pp_probs = (ep / total.transpose(to_rows)[:, :, None]).reshape(g * hkv, pp, r * t * rep)
    rows_probs = (er / total[:, :, :, None]).reshape(g * r * hkv, sr, t * rep)
    # ... and the weighted sum wants the probabilities as [..., queries, slots], which the
    # barrier keeps XLA from folding back into the product as a transposed operand.
    pp_probs, rows_probs = jax.lax.optimization_barrier(
        (pp_probs.transpose(0, 2, 1), rows_probs.transpose(0, 2, 1))
    )
    out_p = jnp.einsum("bms,bsd->bmd", pp_probs, layer.prefix_v.reshape(g * hkv, pp, d))
    out_r = jnp.einsum("bms,bsd->bmd", rows_probs, rows_v.reshape(g * r * hkv, sr, d))
    out = out_p.reshape(g, hkv, r, t, rep, d).transpose(0, 2, 3, 1, 4, 5) + out_r.reshape(
        g, r, hkv, t, rep, d
    ).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(b, t, h, d), LayerCache(layer.prefix_k, layer.prefix_v, rows_k, rows_v)
