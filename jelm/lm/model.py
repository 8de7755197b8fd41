"""A decoder-only transformer in Flax, with batched KV-cache sampling under ``jit``.

This is the language model of ELM's mutation operators (Lehman et al. 2022, §3.1: a "diff
model" that continues ``<NME> walker.py <BEF> {parent} <MSG> {message} <DFF>`` with a
unified diff) and of the later stages (§5-6: the model trained on the archive, and the
terrain-conditioned model tuned with PPO). Two architectures share one module, chosen by
:class:`ModelConfig`:

- **GPT-2**: learned absolute positions (``wpe``), sequential residual
  ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, LayerNorm, ``gelu_new``, biases
  everywhere, output projection tied to the token embedding.
- **CodeGen / GPT-J**: rotary position embedding on the first ``rotary_dim`` dimensions of
  every head in GPT-J's *interleaved* pairing ((0, 1), (2, 3), ...), parallel residual
  ``x + attn(ln_1(x)) + mlp(ln_1(x))`` with one shared ``ln_1``, no attention biases, an
  untied ``lm_head`` with a bias.

Everything is functional: ``params`` is a plain pytree (the inner ``"params"`` collection of
the Flax module), every function takes it as an argument, the KV cache is an explicit
value passed in and returned (no mutable Flax collections), randomness comes from explicit
PRNG keys.

Parameter tree (named so that Hugging Face checkpoints map onto it one tensor at a time,
see ``jelm/lm/hf.py``)::

    wte/embedding [V, D]            wpe/embedding [n_ctx, D]  (rotary_dim == 0 only)
    h_{i}/ln_1/{scale, bias}        h_{i}/ln_2/{scale, bias}  (sequential residual only)
    h_{i}/attn/qkv/{kernel [D, 3D], bias [3D]}   columns: q | k | v, each head-major
    h_{i}/attn/out/{kernel [D, D], bias [D]}     (biases only when ``qkv_bias``)
    h_{i}/mlp/fc_in/{kernel [D, F], bias}   h_{i}/mlp/fc_out/{kernel [F, D], bias}
    ln_f/{scale, bias}
    lm_head/{kernel [D, V], bias [V]}   (untied)   or   lm_head_bias [V]  (tied with bias)

Sampling (:func:`generate`) pads prompts on the left into shape buckets so that repeated
calls with similar prompts reuse one compiled program: prompt length to the smaller of the
next power of two and the next multiple of 256 (at least 16), batch to the next power of
two. The KV cache holds ``prompt bucket + max_new_tokens`` slots. One jitted function does
the prefill (the whole prompt in one call, in row chunks that bound the attention-score
memory) and the decode loop (``lax.while_loop`` that stops as soon as every row has
produced a stop token).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jelm.lm.tokenizer import Tokenizer

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


class ModelLoadError(RuntimeError):
    """A model directory cannot be loaded; the message names the path and what is wrong."""


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


@dataclasses.dataclass(frozen=True)
class Generation:
    """One sampled continuation: its new tokens and why it ended.

    ``tokens`` excludes the prompt and the stop token; ``finish_reason`` is ``"stop"`` when
    a token of ``stop_token_ids`` was produced, ``"length"`` when ``max_new_tokens`` ran out.
    """

    tokens: list[int]
    finish_reason: str


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


# --------------------------------------------------------------------------- sampling

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
    of [0, max p]: exact up to ties within ``max_p * 2**-32``), which on CPU is ~25x faster
    than sorting the vocabulary at every decode step (0.7 vs 20 ms for 32 x 4096).
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
        shape = (rows, cfg.n_head, s, cfg.head_dim)
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


# --------------------------------------------------------------------------- save / load


def save_model(
    directory: str | Path, params: Params, config: ModelConfig, tokenizer: Tokenizer
) -> None:
    """Write a jelm model directory: ``config.json``, ``tokenizer.json``, ``params/`` (orbax).

    An existing directory is overwritten file by file (the params checkpoint is replaced).
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    tokenizer.save(directory / "tokenizer.json")
    params = jax.tree_util.tree_map(np.asarray, params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "params", params, force=True)
        ckptr.wait_until_finished()


def load_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a jelm model directory (raises :class:`ModelLoadError`)."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise ModelLoadError(f"model directory {directory} does not exist or is not a directory")
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: {directory} is not a jelm model directory")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    if "model_type" in raw:
        raise ModelLoadError(
            f"{path} is a Hugging Face config (model_type {raw['model_type']!r}), not a jelm "
            "ModelConfig; load it with jelm.lm.hf.load_hf"
        )
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not a valid jelm ModelConfig: {exc}") from exc


def load_model(directory: str | Path) -> tuple[Params, ModelConfig, Tokenizer]:
    """Read a directory written by :func:`save_model`: ``(params, config, tokenizer)``.

    Every problem (missing directory or file, bad JSON, unreadable tokenizer, a params
    checkpoint that is damaged or does not match the config's shapes) raises
    :class:`ModelLoadError` naming the path and what is wrong.
    """
    import orbax.checkpoint as ocp

    from jelm.lm.tokenizer import Tokenizer

    directory = Path(directory).absolute()
    config = load_config(directory)
    tok_path = directory / "tokenizer.json"
    if not tok_path.is_file():
        raise ModelLoadError(f"{tok_path} is missing")
    try:
        tokenizer = Tokenizer.from_file(tok_path)
    except Exception as exc:  # the tokenizers library raises its own exception types
        raise ModelLoadError(f"{tok_path} is not a readable tokenizer: {exc}") from exc
    params_path = directory / "params"
    if not params_path.is_dir():
        raise ModelLoadError(f"{params_path} (the orbax params checkpoint) is missing")
    abstract = jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(params_path, abstract)
    except Exception as exc:  # orbax raises many kinds; the caller needs one
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise ModelLoadError(
            f"{params_path} does not restore for the model in {directory / 'config.json'} "
            f"({type(exc).__name__}: {first}); the checkpoint is damaged or was written for "
            "another configuration"
        ) from exc
    want = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), abstract)
    got = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), params)
    if want != got:  # orbax restores the saved shapes whatever the template says
        raise ModelLoadError(
            f"{params_path}: the saved parameters do not match {directory / 'config.json'} "
            f"({_first_difference(want, got)}); the checkpoint was written for another "
            "configuration"
        )
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(
            f"{tok_path} has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}"
        )
    return jax.tree_util.tree_map(jnp.asarray, params), config, tokenizer


def _first_difference(want: Any, got: Any) -> str:
    """The first leaf path whose (shape, dtype) differs between two described trees."""
    is_leaf = lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)
    flat_w = dict(
        (jax.tree_util.keystr(k), v)
        for k, v in jax.tree_util.tree_flatten_with_path(want, is_leaf=is_leaf)[0]
    )
    flat_g = dict(
        (jax.tree_util.keystr(k), v)
        for k, v in jax.tree_util.tree_flatten_with_path(got, is_leaf=is_leaf)[0]
    )
    for key in sorted(set(flat_w) | set(flat_g)):
        w, g = flat_w.get(key), flat_g.get(key)
        if w != g:
            show = lambda x: "missing" if x is None else f"{x[0]} {x[1]}"
            return f"{key}: expected {show(w)}, found {show(g)}"
    return "structure differs"


# --------------------------------------------------------------------------- benchmark


def benchmark(
    config: ModelConfig | None = None,
    *,
    batches: Sequence[int] = (1, 8, 32),
    prompt_len: int = 800,
    new_tokens: int = 200,
    train_shape: tuple[int, int] = (8, 1024),
    parts: Sequence[str] = ("generate", "train"),
) -> dict[str, Any]:
    """Throughput of :func:`generate` (tokens/s at each batch size; temperature 0.8, top-p
    0.95, no stop tokens, second call timed) and of a training step (``jax.grad`` of
    :func:`masked_xent` through :func:`forward`; tokens/s, best of 3 after compiling).

    Default: the ~4.7M-parameter GPT-2 (vocab 4096, d 256, 4 layers, 4 heads, ctx 2048).
    ``python -m jelm.lm.model [generate] [train]`` prints the result as one JSON line.
    """
    import os
    import time

    cfg = config or ModelConfig(vocab_size=4096, n_ctx=2048, d_model=256, n_layer=4, n_head=4)
    params = init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    res: dict[str, Any] = {
        "config": cfg.to_dict(),
        "params": param_count(params),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpus": os.cpu_count(),
    }

    def prompts(b: int) -> list[list[int]]:
        lens = prompt_len + rng.integers(-prompt_len // 40, prompt_len // 40 + 1, b)
        return [rng.integers(5, cfg.vocab_size, n).tolist() for n in lens]

    kw = dict(max_new_tokens=new_tokens, temperature=0.8, top_p=0.95)
    for b in batches if "generate" in parts else ():
        t0 = time.perf_counter()
        generate(params, cfg, prompts(b), jax.random.key(0), **kw)
        t1 = time.perf_counter()
        out = generate(params, cfg, prompts(b), jax.random.key(1), **kw)
        t2 = time.perf_counter()
        n = sum(len(g.tokens) for g in out)
        res[f"generate_b{b}"] = {
            "first_call_s": round(t1 - t0, 2),
            "s": round(t2 - t1, 2),
            "new_tokens": n,
            "tokens_per_s": round(n / (t2 - t1), 1),
        }
    if "train" in parts:
        b, t = train_shape
        toks = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t + 1)), jnp.int32)
        pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        mask = jnp.ones((b, t), bool)

        def loss(p: Params) -> jax.Array:
            return masked_xent(forward(p, cfg, toks[:, :-1], pos, mask), toks[:, 1:], mask)

        step = jax.jit(jax.value_and_grad(loss))
        t0 = time.perf_counter()
        jax.block_until_ready(step(params))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(step(params))
            times.append(time.perf_counter() - t0)
        res[f"train_b{b}x{t}"] = {
            "first_call_s": round(compile_s, 2),
            "step_s": [round(x, 2) for x in times],
            "tokens_per_s": round(b * t / min(times), 1),
        }
    return res


if __name__ == "__main__":
    import sys

    print(json.dumps(benchmark(parts=sys.argv[1:] or ("generate", "train"))))
