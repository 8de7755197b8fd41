"""A decoder-only transformer in Flax: the diff model of ELM's mutation operators (§3.1).

The model continues ``<NME> {file} <BEF> {parent} <MSG> {message} <DFF>`` with a unified
diff; the later stages (§6-7) train and tune the same model. Three layouts share one module,
chosen by :class:`ModelConfig`: GPT-2 (learned positions, sequential residual, biases
everywhere, tied output head); CodeGen / GPT-J (rotary embedding in GPT-J's interleaved
pairing on the first ``rotary_dim`` dims of each head, parallel residual with one shared
``ln_1``, no attention biases, an untied ``lm_head`` with a bias); and Llama / Qwen2, the
code models a research run samples through the ``hf`` backend (RMSNorm, a gated SwiGLU
MLP, grouped-query attention whose KV cache holds only ``n_kv_head`` heads, rotary
embedding in Llama's "rotate_half" pairing on the whole head with ``rope_theta`` and
optional :class:`RopeScaling`, sequential residual, biases as the checkpoint says).

Functional: ``params`` is a plain pytree (the Flax ``"params"`` collection), passed to
every function; the KV cache (:mod:`jelm.lm.kv`) is an explicit value; randomness comes from
explicit keys.
Sampling is :mod:`jelm.lm.sampling`, saving and loading :mod:`jelm.lm.checkpoint`.

Parameter tree (named so Hugging Face checkpoints map onto it tensor by tensor,
:mod:`jelm.lm.hf`; ``H`` heads, ``Hkv`` key/value heads, ``Dh`` head dim)::

    wte/embedding [V, D]            wpe/embedding [n_ctx, D]  (rotary_dim == 0 only)
    h_{i}/ln_1/{scale, bias}        h_{i}/ln_2/{scale, bias}  (sequential residual only)
    h_{i}/attn/qkv/{kernel [D, (H + 2 Hkv) Dh], bias}   columns: q | k | v, each head-major
    h_{i}/attn/out/{kernel [H Dh, D], bias [D]}
    h_{i}/mlp/fc_in/{kernel [D, F], bias}   h_{i}/mlp/fc_out/{kernel [F, D], bias}
    h_{i}/mlp/gate/{kernel [D, F], bias}    (gated MLP only: fc_out(act(gate(x)) * fc_in(x)))
    ln_f/{scale, bias}
    lm_head/{kernel [D, V], bias [V]}   (untied)   or   lm_head_bias [V]  (tied with bias)

The qkv bias is there when ``qkv_bias``, the output projection's when ``attn_out_bias``
(``out_bias``, by default ``qkv_bias``), the MLP's when ``mlp_bias``; an RMSNorm
(``norm="rms"``) has a ``scale`` and no ``bias``. In the GPT-2 and CodeGen layouts
``Hkv == H`` and ``H Dh == D``: the qkv kernel is ``[D, 3D]``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jelm.lm.kv import LayerCache, View, attend

Params = Any  # nested dict of arrays


class Adapter(NamedTuple):
    """A soft prompt every layer reads through a gate (stage 3's terrain conditioning, §7).

    ``prefix`` [B, K, D]: K embeddings per row (a terrain encoder's output). Each layer
    normalises them with its ``ln_1``, projects them with its own key and value weights
    (no rotary: they have no position) and lets the tokens attend to them in a softmax of
    their own, added to the attention output times ``gate`` [n_layer, n_head]: the
    zero-initialised gated prompts of LLaMA-Adapter (Zhang et al., 2023). With a zero gate
    the model computes exactly what it computes without the adapter, so a policy built on
    it starts as its reference model.
    """

    prefix: jax.Array
    gate: jax.Array


ACTIVATIONS = {
    # GPT-2's and CodeGen's "gelu_new" is the tanh approximation.
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


#: The rope scaling types :class:`RopeScaling` implements (transformers' ``rope_type``).
ROPE_SCALING_KINDS = ("linear", "dynamic", "llama3", "yarn")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """How rotary frequencies are stretched past the trained context (transformers'
    ``rope_parameters`` / ``rope_scaling``; the formulas of its ``modeling_rope_utils.py``).

    ``kind`` is one of :data:`ROPE_SCALING_KINDS`:

    - ``linear``: every inverse frequency divided by ``factor`` (position interpolation).
    - ``dynamic``: NTK scaling that transformers applies only to sequences longer than
      ``original_n_ctx``; jelm never runs past ``n_ctx <= original_n_ctx`` (checked by
      :class:`ModelConfig`), where it leaves the frequencies as they are.
    - ``llama3``: Llama 3.1's split by wavelength against ``original_n_ctx``: long waves
      divided by ``factor``, short ones kept, those between ``original_n_ctx /
      high_freq_factor`` and ``original_n_ctx / low_freq_factor`` interpolated.
    - ``yarn``: YaRN's ramp between interpolated and original frequencies over the dims
      whose rotation counts lie between ``beta_slow`` and ``beta_fast`` over
      ``original_n_ctx`` (bounds rounded outwards when ``truncate``), and cos/sin scaled by
      ``attention_factor`` (``None``: ``0.1 ln(factor) + 1``).
    """

    kind: str
    factor: float = 1.0
    original_n_ctx: int | None = None
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALING_KINDS:
            raise ValueError(
                f"unknown rope scaling {self.kind!r}; known: {', '.join(ROPE_SCALING_KINDS)}"
            )
        if not self.factor > 0:
            raise ValueError(f"rope scaling factor must be positive, got {self.factor}")
        if self.kind != "linear" and not (self.original_n_ctx and self.original_n_ctx > 0):
            raise ValueError(f"{self.kind} rope scaling needs original_n_ctx > 0")
        if self.kind == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError(
                "llama3 rope scaling needs high_freq_factor > low_freq_factor, got "
                f"{self.high_freq_factor} and {self.low_freq_factor}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RopeScaling:
        """Inverse of ``dataclasses.asdict``; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RopeScaling keys {unknown}; known: {sorted(names)}")
        return cls(**d)


NORMS = ("layer", "rms")
MLPS = ("plain", "gated")
ROTARY_STYLES = ("gptj", "neox")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and architecture of a decoder-only transformer (hashable: a ``jit`` static).

    ``rotary_dim == 0`` selects learned absolute positions (GPT-2); ``rotary_dim > 0``
    rotary embeddings on that many leading dimensions of each head, in GPT-J's interleaved
    pairs (``rotary_style="gptj"``: CodeGen, GPT-J) or Llama's halves (``"neox"``, the
    ``rotate_half`` of GPT-NeoX and Llama), with base ``rope_theta`` and optional
    ``rope_scaling`` (a :class:`RopeScaling`; a dict of its fields is converted).
    ``qkv_bias`` switches the biases of both attention projections (qkv and output), which
    GPT-2 has and CodeGen has not; ``out_bias``, when set, overrides it for the output
    projection (Qwen2 has qkv biases only). ``d_ff`` defaults to ``4 * d_model``.

    Llama-family fields, whose defaults keep the GPT-2/CodeGen layouts: ``n_kv_head``
    key/value heads shared by groups of ``n_head / n_kv_head`` query heads (``None``: as
    many as ``n_head``); ``d_head`` the head dimension (``None``: ``d_model / n_head``);
    ``norm`` ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm, eps ``layer_norm_eps``);
    ``mlp`` ``"plain"`` (``fc_out(act(fc_in(x)))``) or ``"gated"``
    (``fc_out(act(gate(x)) * fc_in(x))``: SwiGLU with ``activation="silu"``);
    ``mlp_bias`` the MLP's biases.
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
    n_kv_head: int | None = None
    d_head: int | None = None
    norm: str = "layer"
    mlp: str = "plain"
    mlp_bias: bool = True
    out_bias: bool | None = None
    rotary_style: str = "gptj"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rope_scaling, dict):  # from to_dict / config.json
            object.__setattr__(self, "rope_scaling", RopeScaling.from_dict(self.rope_scaling))
        if self.vocab_size <= 0 or self.n_ctx <= 0 or self.n_layer <= 0 or self.n_head <= 0:
            raise ValueError(f"ModelConfig sizes must be positive: {self}")
        if self.d_head is None and self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.d_head is not None and self.d_head <= 0:
            raise ValueError(f"d_head must be positive, got {self.d_head}")
        if self.n_kv_head is not None and (self.n_kv_head <= 0 or self.n_head % self.n_kv_head):
            raise ValueError(f"n_kv_head must divide n_head={self.n_head}, got {self.n_kv_head}")
        if self.rotary_dim < 0 or self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise ValueError(
                f"rotary_dim must be even and in [0, head_dim={self.head_dim}], "
                f"got {self.rotary_dim}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; known: {sorted(ACTIVATIONS)}"
            )
        for name, known in (("norm", NORMS), ("mlp", MLPS), ("rotary_style", ROTARY_STYLES)):
            if getattr(self, name) not in known:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; known: {known}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")
        rs = self.rope_scaling
        if rs is not None:
            if not isinstance(rs, RopeScaling):
                raise ValueError(f"rope_scaling must be a RopeScaling or None, got {rs!r}")
            if not self.rotary_dim:
                raise ValueError("rope_scaling needs rotary positions (rotary_dim > 0)")
            if rs.kind == "dynamic" and self.n_ctx > rs.original_n_ctx:
                raise ValueError(
                    f"dynamic rope scaling is implemented within original_n_ctx="
                    f"{rs.original_n_ctx} positions only, but n_ctx={self.n_ctx}"
                )

    @property
    def head_dim(self) -> int:
        """Dimension of one attention head."""
        return self.d_head if self.d_head is not None else self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (the KV cache's head axis)."""
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def attn_out_bias(self) -> bool:
        """Whether the attention output projection has a bias."""
        return self.qkv_bias if self.out_bias is None else self.out_bias

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


@functools.lru_cache(maxsize=64)
def rope_frequencies(config: ModelConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies [rotary_dim / 2] (float32) and the cos/sin scale of ``config``.

    ``theta ** (-2j / rotary_dim)``, then ``config.rope_scaling`` applied as transformers'
    ``modeling_rope_utils.py`` does (in float32, in the same order, so the angles agree).
    """
    r, base, rs = config.rotary_dim, config.rope_theta, config.rope_scaling
    inv_freq = 1.0 / (base ** (np.arange(0, r, 2, dtype=np.float32) / r))
    if rs is None or rs.kind == "dynamic":  # dynamic: unchanged within original_n_ctx
        return inv_freq, 1.0
    if rs.kind == "linear":
        return inv_freq / rs.factor, 1.0
    if rs.kind == "llama3":
        old, lo, hi = rs.original_n_ctx, rs.low_freq_factor, rs.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old / lo, inv_freq / rs.factor, inv_freq)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        return np.where(medium, smoothed, scaled).astype(np.float32), 1.0

    # yarn
    def correction_dim(rotations: float) -> float:
        return r * math.log(rs.original_n_ctx / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(rs.beta_fast), correction_dim(rs.beta_slow)
    if rs.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, r - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(r // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp  # weight of the original frequency
    pos_freqs = base ** (np.arange(0, r, 2, dtype=np.float32) / r)
    inv_freq = (1.0 / (rs.factor * pos_freqs)) * (1 - extrapolation) + (
        1.0 / pos_freqs
    ) * extrapolation
    scale = rs.attention_factor
    if scale is None:
        scale = 0.1 * math.log(rs.factor) + 1.0 if rs.factor > 1 else 1.0
    return inv_freq.astype(np.float32), float(scale)


def _rotary(x: jax.Array, positions: jax.Array, config: ModelConfig) -> jax.Array:
    """Rotary embedding of ``x`` [B, T, H, Dh] on its first ``config.rotary_dim`` dims.

    Dim pair ``j`` rotates by ``position * inv_freq[j]`` (:func:`rope_frequencies`). GPT-J
    pairs are interleaved, dims (2j, 2j+1) (HF ``rotate_every_two`` in
    modeling_codegen.py); Llama's (``rotary_style="neox"``) are halves, dims (j, j + R/2)
    (HF ``rotate_half`` in modeling_llama.py).
    """
    r = config.rotary_dim
    inv_freq, scale = rope_frequencies(config)
    angle = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, R/2]
    sin = jnp.sin(angle)[:, :, None, :]
    cos = jnp.cos(angle)[:, :, None, :]
    if scale != 1.0:
        sin, cos = sin * scale, cos * scale
    rot, rest = x[..., :r], x[..., r:]
    if config.rotary_style == "neox":
        x1, x2 = rot[..., : r // 2], rot[..., r // 2 :]
        rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    else:
        even, odd = rot[..., 0::2], rot[..., 1::2]
        rotated = jnp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
        rotated = rotated.reshape(rot.shape)
    return jnp.concatenate([rotated.astype(x.dtype), rest], axis=-1)


def _dense_init(config: ModelConfig, residual_out: bool = False):
    """GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2L)."""
    std = 0.02 / math.sqrt(2 * config.n_layer) if residual_out else 0.02
    return nn.initializers.normal(stddev=std)


class Attention(nn.Module):
    """Causal multi-head self-attention, over the tokens themselves or over a KV cache.

    Grouped-query when ``n_kv_head < n_head``: query head ``j * G + g`` (``G = n_head /
    n_kv_head``) reads key/value head ``j``, as transformers' ``repeat_kv`` pairs them, and
    the cache holds the ``n_kv_head`` heads only.
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        mask: jax.Array | View,
        cache: LayerCache | None = None,
        prompt: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | LayerCache]:
        """``x`` [B, T, D]. Without a cache ``mask`` is [B, T, T] bool (query t may see key
        s) and the keys and values of the tokens come back ``[B, H, T, Dh]`` (to become a
        cached prefix). With a cache (:mod:`jelm.lm.kv`) ``mask`` is a
        :class:`jelm.lm.kv.View` and the updated cache comes back. ``prompt``: this
        layer's normalised :class:`Adapter` prefix [B, K, D] and its gate [H].
        """
        cfg = self.config
        b, t, _ = x.shape
        h, hkv, dh = cfg.n_head, cfg.kv_heads, cfg.head_dim
        project = nn.Dense(
            (h + 2 * hkv) * dh, use_bias=cfg.qkv_bias, kernel_init=_dense_init(cfg), name="qkv"
        )
        qkv = project(x)
        q = qkv[..., : h * dh].reshape(b, t, h, dh)
        k = qkv[..., h * dh : (h + hkv) * dh].reshape(b, t, hkv, dh)
        v = qkv[..., (h + hkv) * dh :].reshape(b, t, hkv, dh)
        if cfg.rotary_dim:
            q = _rotary(q, positions, cfg)
            k = _rotary(k, positions, cfg)
        q_rot = q
        if cache is not None:
            out, kv = attend(q, k, v, cache, mask)
        else:
            q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # [B, heads, T, Dh]
            # Each KV head's G query heads as one sequence of G * T queries: [B, H_kv, G T, Dh].
            g = h // hkv
            q = q.reshape(b, hkv, g * t, dh)
            scores = jnp.einsum("bktd,bksd->bkts", q, k) / math.sqrt(dh)
            scores = scores.reshape(b, hkv, g, t, -1)
            scores = jnp.where(mask[:, None, None], scores, jnp.finfo(scores.dtype).min)
            probs = jax.nn.softmax(scores, axis=-1).reshape(b, hkv, g * t, -1)
            out = jnp.einsum("bkts,bksd->bktd", probs, v).reshape(b, h, t, dh)
            out = out.transpose(0, 2, 1, 3)
            kv = (k, v)
        if prompt is not None:
            out = out + _prompt_attention(project(prompt[0]), q_rot, prompt[1], cfg)
        out = out.reshape(b, t, h * dh)
        out = nn.Dense(
            cfg.d_model,
            use_bias=cfg.attn_out_bias,
            kernel_init=_dense_init(cfg, residual_out=True),
            name="out",
        )(out)
        return out, kv


def _prompt_attention(
    pqkv: jax.Array, q: jax.Array, gate: jax.Array, cfg: ModelConfig
) -> jax.Array:
    """The tokens' attention over an :class:`Adapter` prompt, times its gate.

    ``pqkv`` [B, K, (H + 2 Hkv) Dh]: the prompt through the layer's qkv projection;
    ``q`` [B, T, H, Dh] the tokens' queries; ``gate`` [H]. Returns [B, T, H, Dh].
    """
    b, kp, _ = pqkv.shape
    h, hkv, dh = cfg.n_head, cfg.kv_heads, cfg.head_dim
    pk = pqkv[..., h * dh : (h + hkv) * dh].reshape(b, kp, hkv, dh)
    pv = pqkv[..., (h + hkv) * dh :].reshape(b, kp, hkv, dh)
    t = q.shape[1]
    qg = q.reshape(b, t, hkv, h // hkv, dh)
    scores = jnp.einsum("btkgd,bskd->btkgs", qg, pk) / math.sqrt(dh)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(pv.dtype)
    out = jnp.einsum("btkgs,bskd->btkgd", probs, pv).reshape(b, t, h, dh)
    return out * gate[None, None, :, None].astype(out.dtype)


class MLP(nn.Module):
    """Position-wise feed-forward: ``fc_out(act(fc_in(x)))``, or gated (``mlp="gated"``)
    ``fc_out(act(gate(x)) * fc_in(x))`` (SwiGLU: Llama's gate_proj, up_proj, down_proj)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dense = functools.partial(nn.Dense, use_bias=cfg.mlp_bias)
        h = dense(cfg.ff_dim, kernel_init=_dense_init(cfg), name="fc_in")(x)
        if cfg.mlp == "gated":
            gate = dense(cfg.ff_dim, kernel_init=_dense_init(cfg), name="gate")(x)
            h = ACTIVATIONS[cfg.activation](gate) * h
        else:
            h = ACTIVATIONS[cfg.activation](h)
        return dense(cfg.d_model, kernel_init=_dense_init(cfg, residual_out=True), name="fc_out")(h)


def _norm(cfg: ModelConfig, name: str) -> nn.Module:
    """LayerNorm, or RMSNorm when ``cfg.norm == "rms"`` (scale only, no mean, no bias)."""
    if cfg.norm == "rms":
        return nn.RMSNorm(epsilon=cfg.layer_norm_eps, name=name)
    return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name=name)


class Block(nn.Module):
    """One transformer layer, sequential (GPT-2, Llama) or parallel (CodeGen) residual."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, mask, cache=None, prompt=None):
        cfg = self.config
        ln_1 = _norm(cfg, "ln_1")
        h = ln_1(x)
        if prompt is not None:  # (prefix [B, K, D], gate [H]), normalised as the tokens are
            prompt = (ln_1(prompt[0]), prompt[1])
        a, new_cache = Attention(cfg, name="attn")(h, positions, mask, cache, prompt)
        if cfg.parallel_residual:
            return x + a + MLP(cfg, name="mlp")(h), new_cache
        x = x + a
        h = _norm(cfg, "ln_2")(x)
        return x + MLP(cfg, name="mlp")(h), new_cache


class Transformer(nn.Module):
    """The decoder. ``logits=False`` returns the final hidden states (after ``ln_f``).

    The second output is one entry per layer: with ``cache`` (a tuple of
    :class:`jelm.lm.kv.LayerCache`, ``mask`` a :class:`jelm.lm.kv.View`) the updated
    caches, without it the layers' keys and values ``[B, H, T, Dh]``.
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        mask: jax.Array | View,
        cache: tuple[LayerCache, ...] | None = None,
        logits: bool = True,
        last_only: bool = False,
        adapter: Adapter | None = None,
    ) -> tuple[jax.Array, tuple[Any, ...]]:
        cfg = self.config
        wte = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=_dense_init(cfg), name="wte")
        x = wte(tokens)
        if not cfg.rotary_dim:
            wpe = nn.Embed(
                cfg.n_ctx, cfg.d_model, embedding_init=nn.initializers.normal(0.01), name="wpe"
            )
            x = x + wpe(positions)
        per_layer = []
        for i in range(cfg.n_layer):
            prompt = None if adapter is None else (adapter.prefix, adapter.gate[i])
            x, c = Block(cfg, name=f"h_{i}")(
                x, positions, mask, None if cache is None else cache[i], prompt
            )
            per_layer.append(c)
        x = _norm(cfg, "ln_f")(x)
        if last_only:
            x = x[:, -1:]
        if not logits:
            return x, tuple(per_layer)
        if cfg.tie_embeddings:
            y = jnp.einsum("btd,vd->btv", x, wte.embedding)  # no copy of the transpose
            if cfg.lm_head_bias:
                y = y + self.param("lm_head_bias", nn.initializers.zeros, (cfg.vocab_size,))
        else:
            y = nn.Dense(
                cfg.vocab_size,
                use_bias=cfg.lm_head_bias,
                kernel_init=_dense_init(cfg),
                name="lm_head",
            )(x)
        return y, tuple(per_layer)


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
    adapter: Adapter | None = None,
) -> jax.Array:
    """Final hidden states [B, T, D] (after ``ln_f``), e.g. for a value head (stage 3 PPO)."""
    out, _ = Transformer(config).apply(
        {"params": params},
        tokens,
        positions,
        causal_mask(attention_mask),
        logits=False,
        adapter=adapter,
    )
    return out


def logits_of(params: Params, config: ModelConfig, hidden: jax.Array) -> jax.Array:
    """The output head on final hidden states [..., D] -> logits [..., V]: what
    :func:`forward` returns from what :func:`hidden_states` returns (a policy reads both)."""
    if config.tie_embeddings:
        y = jnp.einsum("...d,vd->...v", hidden, params["wte"]["embedding"])
        return y + params["lm_head_bias"] if config.lm_head_bias else y
    y = hidden @ params["lm_head"]["kernel"]
    return y + params["lm_head"]["bias"] if config.lm_head_bias else y


def forward(
    params: Params,
    config: ModelConfig,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array,
    adapter: Adapter | None = None,
) -> jax.Array:
    """Logits [B, T, V] of a full causal forward pass (training, scoring).

    ``tokens``/``positions`` int32 [B, T]; ``attention_mask`` bool [B, T] marks real tokens
    (padding on either side is fine; padded positions produce finite, meaningless logits).
    Not jitted here: callers jit it with ``config`` static (a frozen, hashable dataclass).
    """
    logits, _ = Transformer(config).apply(
        {"params": params}, tokens, positions, causal_mask(attention_mask), adapter=adapter
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
