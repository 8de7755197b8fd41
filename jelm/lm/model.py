"""A decoder-only transformer in Flax: the diff model of ELM's mutation operators (§3.1).

The model continues ``<NME> {file} <BEF> {parent} <MSG> {message} <DFF>`` with a unified
diff; the later stages (§6-7) train and tune the same model. Two layouts share one module,
chosen by :class:`ModelConfig`: GPT-2 (learned positions, sequential residual, biases
everywhere, tied output head) and CodeGen / GPT-J (rotary embedding in GPT-J's interleaved
pairing on the first ``rotary_dim`` dims of each head, parallel residual with one shared
``ln_1``, no attention biases, an untied ``lm_head`` with a bias).

Functional: ``params`` is a plain pytree (the Flax ``"params"`` collection), passed to
every function; the KV cache is an explicit value; randomness comes from explicit keys.
Sampling is :mod:`jelm.lm.sampling`, saving and loading :mod:`jelm.lm.checkpoint`.

Parameter tree (named so Hugging Face checkpoints map onto it tensor by tensor,
:mod:`jelm.lm.hf`)::

    wte/embedding [V, D]            wpe/embedding [n_ctx, D]  (rotary_dim == 0 only)
    h_{i}/ln_1/{scale, bias}        h_{i}/ln_2/{scale, bias}  (sequential residual only)
    h_{i}/attn/qkv/{kernel [D, 3D], bias [3D]}   columns: q | k | v, each head-major
    h_{i}/attn/out/{kernel [D, D], bias [D]}     (biases only when ``qkv_bias``)
    h_{i}/mlp/fc_in/{kernel [D, F], bias}   h_{i}/mlp/fc_out/{kernel [F, D], bias}
    ln_f/{scale, bias}
    lm_head/{kernel [D, V], bias [V]}   (untied)   or   lm_head_bias [V]  (tied with bias)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Params = Any  # nested dict of arrays
# Per layer: (keys, values), each [batch, heads, cache_len, head_dim].
KVCache = tuple[tuple[jax.Array, jax.Array], ...]

ACTIVATIONS = {
    # GPT-2's and CodeGen's "gelu_new" is the tanh approximation.
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and architecture of a decoder-only transformer (hashable: a ``jit`` static).

    ``rotary_dim == 0`` selects learned absolute positions (GPT-2); ``rotary_dim > 0``
    rotary embeddings on that many leading dimensions of each head (CodeGen, GPT-J).
    ``qkv_bias`` switches the biases of both attention projections (qkv and output), which
    GPT-2 has and CodeGen has not. ``d_ff`` defaults to ``4 * d_model``.
    """

    vocab_size: int
    n_ctx: int = 2048
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    d_ff: int | None = None
    rotary_dim: int = 0
    parallel_residual: bool = False
    tie_embeddings: bool = True
    lm_head_bias: bool = False
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_new"

    def __post_init__(self) -> None:
        if self.vocab_size <= 0 or self.n_ctx <= 0 or self.n_layer <= 0 or self.n_head <= 0:
            raise ValueError(f"ModelConfig sizes must be positive: {self}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.rotary_dim < 0 or self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise ValueError(
                f"rotary_dim must be even and in [0, head_dim={self.head_dim}], "
                f"got {self.rotary_dim}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; known: {sorted(ACTIVATIONS)}"
            )

    @property
    def head_dim(self) -> int:
        """Dimension of one attention head."""
        return self.d_model // self.n_head

    @property
    def ff_dim(self) -> int:
        """Hidden width of the MLP."""
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (the ``config.json`` of a jelm model directory)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (typos must not vanish)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known: {sorted(names)}")
        return cls(**d)


# --------------------------------------------------------------------------- the module


def _rotary(x: jax.Array, positions: jax.Array, rotary_dim: int) -> jax.Array:
    """GPT-J/CodeGen rotary embedding of ``x`` [B, T, H, Dh] on its first ``rotary_dim`` dims.

    Pairs are interleaved: dims (2j, 2j+1) rotate by angle ``position / 10000^(2j/rotary_dim)``
    (HF ``rotate_every_two`` + ``apply_rotary_pos_emb`` in modeling_codegen.py).
    """
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, rotary_dim, 2, dtype=np.float32) / rotary_dim))
    angle = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, R/2]
    sin = jnp.sin(angle)[:, :, None, :]
    cos = jnp.cos(angle)[:, :, None, :]
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    even, odd = rot[..., 0::2], rot[..., 1::2]
    rotated = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
    rotated = rotated.reshape(rot.shape).astype(x.dtype)
    return jnp.concatenate([rotated, rest], axis=-1)


def _dense_init(config: ModelConfig, residual_out: bool = False):
    """GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2L)."""
    std = 0.02 / math.sqrt(2 * config.n_layer) if residual_out else 0.02
    return nn.initializers.normal(stddev=std)


class Attention(nn.Module):
    """Causal multi-head self-attention with an optional explicit KV cache."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        mask: jax.Array,
        cache: tuple[jax.Array, jax.Array] | None = None,
        index: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """``x`` [B, T, D]; ``mask`` [B, T, S] bool (query t may see key s).

        Without a cache S == T. With one (``cache`` = (k, v) [B, H, S, Dh]) the new keys
        and values are written at slot ``index`` and the queries attend to all S slots.
        """
        cfg = self.config
        b, t, _ = x.shape
        qkv = nn.Dense(
            3 * cfg.d_model, use_bias=cfg.qkv_bias, kernel_init=_dense_init(cfg), name="qkv"
        )(x)
        qkv = qkv.reshape(b, t, 3, cfg.n_head, cfg.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if cfg.rotary_dim:
            q = _rotary(q, positions, cfg.rotary_dim)
            k = _rotary(k, positions, cfg.rotary_dim)
        q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, H, T, Dh]
        new_cache = None
        if cache is not None:
            ck = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, 0, index, 0))
            cv = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, 0, index, 0))
            k, v = ck, cv
            new_cache = (ck, cv)
        scores = jnp.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(cfg.head_dim)
        scores = jnp.where(mask[:, None], scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhts,bhsd->bhtd", probs, v)
        out = out.transpose(0, 2, 1, 3).reshape(b, t, cfg.d_model)
        out = nn.Dense(
            cfg.d_model,
            use_bias=cfg.qkv_bias,
            kernel_init=_dense_init(cfg, residual_out=True),
            name="out",
        )(out)
        return out, new_cache


class MLP(nn.Module):
    """Position-wise feed-forward: fc_in, activation, fc_out."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        h = nn.Dense(cfg.ff_dim, kernel_init=_dense_init(cfg), name="fc_in")(x)
        h = ACTIVATIONS[cfg.activation](h)
        return nn.Dense(
            cfg.d_model, kernel_init=_dense_init(cfg, residual_out=True), name="fc_out"
        )(h)


class Block(nn.Module):
    """One transformer layer, sequential (GPT-2) or parallel (CodeGen) residual."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, mask, cache=None, index=None):
        cfg = self.config
        h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="ln_1")(x)
        a, new_cache = Attention(cfg, name="attn")(h, positions, mask, cache, index)
        if cfg.parallel_residual:
            return x + a + MLP(cfg, name="mlp")(h), new_cache
        x = x + a
        h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="ln_2")(x)
        return x + MLP(cfg, name="mlp")(h), new_cache


class Transformer(nn.Module):
    """The decoder. ``logits=False`` returns the final hidden states (after ``ln_f``)."""

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        mask: jax.Array,
        cache: KVCache | None = None,
        index: jax.Array | None = None,
        logits: bool = True,
        last_only: bool = False,
    ) -> tuple[jax.Array, KVCache | None]:
        cfg = self.config
        wte = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=_dense_init(cfg), name="wte")
        x = wte(tokens)
        if not cfg.rotary_dim:
            wpe = nn.Embed(
                cfg.n_ctx, cfg.d_model, embedding_init=nn.initializers.normal(0.01), name="wpe"
            )
            x = x + wpe(positions)
        new_cache = []
        for i in range(cfg.n_layer):
            x, c = Block(cfg, name=f"h_{i}")(
                x, positions, mask, None if cache is None else cache[i], index
            )
            new_cache.append(c)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="ln_f")(x)
        out_cache = None if cache is None else tuple(new_cache)
        if last_only:
            x = x[:, -1:]
        if not logits:
            return x, out_cache
        if cfg.tie_embeddings:
            y = wte.attend(x)
            if cfg.lm_head_bias:
                y = y + self.param("lm_head_bias", nn.initializers.zeros, (cfg.vocab_size,))
        else:
            y = nn.Dense(
                cfg.vocab_size,
                use_bias=cfg.lm_head_bias,
                kernel_init=_dense_init(cfg),
                name="lm_head",
            )(x)
        return y, out_cache


# --------------------------------------------------------------------------- training API


def init_params(config: ModelConfig, key: jax.Array) -> Params:
    """Random parameters (GPT-2 initialisation) as a plain pytree (see the module docstring)."""
    return _init_params(config, key)


@functools.partial(jax.jit, static_argnums=0)
def _init_params(config: ModelConfig, key: jax.Array) -> Params:
    t = min(config.n_ctx, 8)
    tokens = jnp.zeros((1, t), jnp.int32)
    positions = jnp.arange(t, dtype=jnp.int32)[None]
    mask = jnp.tril(jnp.ones((t, t), bool))[None]
    variables = Transformer(config).init(key, tokens, positions, mask)
    return variables["params"]


def causal_mask(attention_mask: jax.Array) -> jax.Array:
    """[B, T] padding mask -> [B, T, T] mask: query t sees key s iff s <= t and s is real."""
    t = attention_mask.shape[1]
    return jnp.tril(jnp.ones((t, t), bool))[None] & attention_mask[:, None, :].astype(bool)


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Positions 0, 1, ... counted over real tokens only (left padding gets position 0)."""
    m = attention_mask.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0)


def hidden_states(
    params: Params,
    config: ModelConfig,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array,
) -> jax.Array:
    """Final hidden states [B, T, D] (after ``ln_f``), e.g. for a value head (stage 3 PPO)."""
    out, _ = Transformer(config).apply(
        {"params": params}, tokens, positions, causal_mask(attention_mask), logits=False
    )
    return out


def forward(
    params: Params,
    config: ModelConfig,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array,
) -> jax.Array:
    """Logits [B, T, V] of a full causal forward pass (training, scoring).

    ``tokens``/``positions`` int32 [B, T]; ``attention_mask`` bool [B, T] marks real tokens
    (padding on either side is fine; padded positions produce finite, meaningless logits).
    Not jitted here: callers jit it with ``config`` static (a frozen, hashable dataclass).
    """
    logits, _ = Transformer(config).apply(
        {"params": params}, tokens, positions, causal_mask(attention_mask)
    )
    return logits


def masked_xent(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy over the positions where ``loss_mask`` is true.

    ``logits`` [B, T, V] predict ``targets`` [B, T] (already shifted by the caller:
    ``targets[:, t]`` is the token after ``tokens[:, t]``). ELM's diff models take the
    loss on the diff tokens only (§3.1), so the mask is the trainer's to build. Computed in
    float32; an all-false mask gives 0, not NaN.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    m = loss_mask.astype(jnp.float32)
    return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def param_count(params: Params) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
