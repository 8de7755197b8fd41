"""Read a local Hugging Face checkpoint into jelm's Flax model (ELM §3.1's diff models and
the code models a research run samples instead).

:func:`load_hf` reads a ``save_pretrained`` directory (``model_type`` ``"gpt2"``,
``"codegen"``, ``"llama"`` or ``"qwen2"``: config and tokenizer through transformers,
local files only; weights from safetensors, one file or a sharded index, as float32) and
returns ``(params, ModelConfig, Tokenizer)`` for :mod:`jelm.lm.model`. Each family is an
entry of :data:`FAMILIES`.

Layout conversions (checked against transformers' ``modeling_gpt2.py``,
``modeling_codegen.py``, ``modeling_llama.py`` and ``modeling_qwen2.py``; tests/lm/hf
compare logits and greedy generations with torch):

- GPT-2 stores its projections as ``Conv1D`` weights ``[in, out]`` (a Flax kernel as is);
  ``c_attn`` columns are already ``q | k | v``, each head-major.
- CodeGen uses ``nn.Linear`` (``[out, in]``, transposed here). Its fused ``qkv_proj`` is
  interleaved over the ``mp_num = 4`` model-parallel shards it was trained with: output row
  ``m * 3L + j`` (``L = d_model / 4``) belongs to shard ``m``, and inside a shard the blocks
  are ordered **q, v, k**; the query's feature ``m * L + j`` is row ``m * 3L + j``. Rows are
  regrouped into jelm's ``q | k | v`` kernel.
- Llama and Qwen2 use ``nn.Linear`` too, with separate ``q_proj`` ``[H Dh, D]`` and
  ``k_proj``, ``v_proj`` ``[Hkv Dh, D]`` (grouped-query attention), each head-major: their
  transposes side by side are jelm's qkv kernel. ``gate_proj``, ``up_proj`` and
  ``down_proj`` are the gated MLP's ``gate``, ``fc_in`` and ``fc_out``; the RMSNorm weights
  are ``scale``. Rotary positions use the ``rotate_half`` pairing on the whole head with
  ``rope_theta``; the scalings ``linear``, ``dynamic``, ``llama3`` and ``yarn`` of
  ``rope_parameters`` (``rope_scaling`` in older configs) load as a
  :class:`jelm.lm.model.RopeScaling`, any other raises. Llama's ``attention_bias`` puts
  biases on q, k, v and the output projection, its ``mlp_bias`` on the MLP; Qwen2 always
  has q, k, v biases and no others. Qwen2's sliding window is refused when it would cut
  the context (``use_sliding_window`` with a window shorter than
  ``max_position_embeddings`` on some layer) and ignored otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jelm.lm.checkpoint import ModelLoadError
from jelm.lm.model import ModelConfig, Params, RopeScaling

CODEGEN_MP_NUM = 4
# Non-parameter buffers some checkpoints carry (causal masks of older transformers, rotary
# frequencies of older Llama conversions).
_IGNORED_SUFFIXES = (
    ".attn.bias",
    ".attn.masked_bias",
    ".attn.causal_mask",
    ".rotary_emb.inv_freq",
)


def load_hf(directory: str | Path) -> tuple[Params, ModelConfig, Any]:
    """``(params, config, tokenizer)`` of a local HF checkpoint of a supported family.

    Raises :class:`jelm.lm.checkpoint.ModelLoadError` naming the directory and the problem: not
    a directory, no readable config, an unsupported ``model_type`` (the message lists the
    supported ones) or architecture option, no safetensors weights, missing, unexpected or
    misshapen tensors, an unreadable tokenizer.
    """
    from jelm.lm.tokenizer import Tokenizer

    params, config = load_hf_params(directory)
    directory = Path(directory).absolute()
    try:
        tokenizer = Tokenizer.from_hf(directory)
    except Exception as exc:  # transformers/tokenizers raise many kinds
        raise ModelLoadError(f"{directory}: cannot load the tokenizer: {exc}") from exc
    return params, config, tokenizer


def load_hf_params(directory: str | Path) -> tuple[Params, ModelConfig]:
    """``(params, config)`` of a local HF checkpoint, without its tokenizer (see
    :func:`load_hf`; same errors)."""
    import jax

    from jelm.lm.model import init_params

    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise ModelLoadError(f"HF checkpoint {directory} does not exist or is not a directory")
    hf_config = _hf_config(directory)
    model_type = hf_config.model_type
    weights = _read_safetensors(directory)
    strip = {k.removeprefix("transformer."): v for k, v in weights.items()}
    family = FAMILIES[model_type]
    config = family.config(hf_config, directory, strip)
    params, used = family.params(strip, config, directory)
    unused = sorted(k for k in set(strip) - used if not k.endswith(_IGNORED_SUFFIXES))
    if unused:
        raise ModelLoadError(
            f"{directory}: unexpected tensors for a {model_type} model {unused[:5]}"
            f"{' ...' if len(unused) > 5 else ''}; the checkpoint uses an architecture "
            "variant jelm does not implement"
        )
    abstract = jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0))
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), abstract)
    got = jax.tree_util.tree_map(lambda a: tuple(a.shape), params)
    if want != got:  # a mapping bug rather than a user error, but say so clearly
        raise ModelLoadError(f"{directory}: converted parameter tree does not match {config}")
    return jax.tree_util.tree_map(jax.numpy.asarray, params), config


# --------------------------------------------------------------------------- reading


def _hf_config(directory: Path) -> Any:
    """transformers' config object, local files only."""
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"{directory / 'config.json'} is missing: not an HF checkpoint")
    try:
        raw = json.loads((directory / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{directory / 'config.json'} is not valid JSON: {exc}") from exc
    if isinstance(raw, dict) and raw.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{directory}: model_type {raw.get('model_type')!r} is not supported; jelm "
            f"loads {', '.join(repr(t) for t in SUPPORTED_MODEL_TYPES)} checkpoints"
        )
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{directory}: transformers cannot read config.json: {exc}") from exc


def _read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of ``model.safetensors`` or of the shards its index names, as float32."""
    from safetensors.numpy import load_file

    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index} is not a valid safetensors index: {exc}") from exc
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{index} names shards that are missing: {missing}")
    else:
        others = sorted(p.name for p in directory.glob("*.bin")) + sorted(
            p.name for p in directory.glob("*.pt")
        )
        hint = (
            f" (found {others}: re-save with save_pretrained(..., safe_serialization=True))"
            if others
            else ""
        )
        raise ModelLoadError(
            f"{directory}: no model.safetensors or model.safetensors.index.json{hint}"
        )
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            tensors = load_file(f)
        except Exception as exc:
            raise ModelLoadError(f"{f} is not a readable safetensors file: {exc}") from exc
        for k, v in tensors.items():
            out[k] = v.astype(np.float32)
    return out


class _Taker:
    """Takes tensors by name, checking shapes and remembering which were used."""

    def __init__(self, weights: dict[str, np.ndarray], directory: Path):
        self.weights, self.directory, self.used = weights, directory, set()

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.weights:
            raise ModelLoadError(f"{self.directory}: tensor {name!r} is missing")
        a = self.weights[name]
        if a.shape != shape:
            raise ModelLoadError(
                f"{self.directory}: tensor {name!r} has shape {a.shape}, expected {shape}"
            )
        self.used.add(name)
        return a

    def has(self, name: str) -> bool:
        return name in self.weights


def _layer_norm(take: _Taker, prefix: str, d: int) -> dict[str, np.ndarray]:
    return {"scale": take(f"{prefix}.weight", (d,)), "bias": take(f"{prefix}.bias", (d,))}


# --------------------------------------------------------------------------- GPT-2


def _gpt2_config(hf: Any, directory: Path, weights: dict[str, np.ndarray]) -> ModelConfig:
    if not getattr(hf, "scale_attn_weights", True) or getattr(
        hf, "scale_attn_by_inverse_layer_idx", False
    ):
        raise ModelLoadError(
            f"{directory}: GPT-2 with scale_attn_weights=False or "
            "scale_attn_by_inverse_layer_idx=True is not supported"
        )
    if getattr(hf, "add_cross_attention", False):
        raise ModelLoadError(f"{directory}: GPT-2 with cross-attention is not a causal LM")
    return _model_config(
        directory,
        vocab_size=hf.vocab_size,
        n_ctx=hf.n_positions,
        d_model=hf.n_embd,
        n_layer=hf.n_layer,
        n_head=hf.n_head,
        d_ff=hf.n_inner,
        rotary_dim=0,
        parallel_residual=False,
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", True)),
        lm_head_bias=False,
        qkv_bias=True,
        layer_norm_eps=hf.layer_norm_epsilon,
        activation=hf.activation_function,
    )


def _gpt2_params(
    weights: dict[str, np.ndarray], cfg: ModelConfig, directory: Path
) -> tuple[Params, set[str]]:
    take = _Taker(weights, directory)
    d, f, v = cfg.d_model, cfg.ff_dim, cfg.vocab_size
    params: dict[str, Any] = {
        "wte": {"embedding": take("wte.weight", (v, d))},
        "wpe": {"embedding": take("wpe.weight", (cfg.n_ctx, d))},
        "ln_f": _layer_norm(take, "ln_f", d),
    }
    for i in range(cfg.n_layer):
        p = f"h.{i}"
        params[f"h_{i}"] = {
            "ln_1": _layer_norm(take, f"{p}.ln_1", d),
            "ln_2": _layer_norm(take, f"{p}.ln_2", d),
            "attn": {
                "qkv": {
                    "kernel": take(f"{p}.attn.c_attn.weight", (d, 3 * d)),
                    "bias": take(f"{p}.attn.c_attn.bias", (3 * d,)),
                },
                "out": {
                    "kernel": take(f"{p}.attn.c_proj.weight", (d, d)),
                    "bias": take(f"{p}.attn.c_proj.bias", (d,)),
                },
            },
            "mlp": {
                "fc_in": {
                    "kernel": take(f"{p}.mlp.c_fc.weight", (d, f)),
                    "bias": take(f"{p}.mlp.c_fc.bias", (f,)),
                },
                "fc_out": {
                    "kernel": take(f"{p}.mlp.c_proj.weight", (f, d)),
                    "bias": take(f"{p}.mlp.c_proj.bias", (d,)),
                },
            },
        }
    if cfg.tie_embeddings:
        if take.has("lm_head.weight"):  # saved anyway by some versions: must equal wte
            take.used.add("lm_head.weight")
    else:
        params["lm_head"] = {"kernel": take("lm_head.weight", (v, d)).T}
    return params, take.used


# --------------------------------------------------------------------------- CodeGen


def _codegen_config(hf: Any, directory: Path, weights: dict[str, np.ndarray]) -> ModelConfig:
    d, n_head = hf.n_embd, hf.n_head
    if d % CODEGEN_MP_NUM:
        raise ModelLoadError(
            f"{directory}: CodeGen's fused qkv layout needs n_embd divisible by "
            f"{CODEGEN_MP_NUM}, got {d}"
        )
    # transformers applies rotary to the whole head when rotary_dim is None (which only
    # works with one head): that is rotary_dim = head_dim.
    rotary_dim = hf.rotary_dim if hf.rotary_dim is not None else d // n_head
    tied = bool(getattr(hf, "tie_word_embeddings", False))
    return _model_config(
        directory,
        vocab_size=hf.vocab_size,
        n_ctx=hf.n_positions,
        d_model=d,
        n_layer=hf.n_layer,
        n_head=n_head,
        d_ff=hf.n_inner,
        rotary_dim=rotary_dim,
        parallel_residual=True,
        tie_embeddings=tied,
        lm_head_bias="lm_head.bias" in weights,
        qkv_bias=False,
        layer_norm_eps=hf.layer_norm_epsilon,
        activation=hf.activation_function,
    )


def codegen_qkv_kernel(weight: np.ndarray, mp_num: int = CODEGEN_MP_NUM) -> np.ndarray:
    """CodeGen's ``qkv_proj.weight`` [3D, D] (torch Linear) -> jelm's qkv kernel [D, 3D].

    Rows are grouped per model-parallel shard as (q, v, k) blocks of ``D / mp_num`` rows;
    jelm's kernel columns are ``q | k | v``, each in the head-major order the model reshapes
    to (``view(..., n_head, head_dim)`` of the concatenated shard blocks).
    """
    d = weight.shape[1]
    local = d // mp_num
    blocks = weight.reshape(mp_num, 3, local, d)
    q, v, k = (blocks[:, j].reshape(d, d) for j in range(3))
    return np.concatenate([q, k, v], axis=0).T


def _codegen_params(
    weights: dict[str, np.ndarray], cfg: ModelConfig, directory: Path
) -> tuple[Params, set[str]]:
    take = _Taker(weights, directory)
    d, f, v = cfg.d_model, cfg.ff_dim, cfg.vocab_size
    params: dict[str, Any] = {
        "wte": {"embedding": take("wte.weight", (v, d))},
        "ln_f": _layer_norm(take, "ln_f", d),
    }
    for i in range(cfg.n_layer):
        p = f"h.{i}"
        params[f"h_{i}"] = {
            "ln_1": _layer_norm(take, f"{p}.ln_1", d),
            "attn": {
                "qkv": {
                    "kernel": codegen_qkv_kernel(take(f"{p}.attn.qkv_proj.weight", (3 * d, d)))
                },
                "out": {"kernel": take(f"{p}.attn.out_proj.weight", (d, d)).T},
            },
            "mlp": {
                "fc_in": {
                    "kernel": take(f"{p}.mlp.fc_in.weight", (f, d)).T,
                    "bias": take(f"{p}.mlp.fc_in.bias", (f,)),
                },
                "fc_out": {
                    "kernel": take(f"{p}.mlp.fc_out.weight", (d, f)).T,
                    "bias": take(f"{p}.mlp.fc_out.bias", (d,)),
                },
            },
        }
    if cfg.tie_embeddings:
        if take.has("lm_head.weight"):
            take.used.add("lm_head.weight")
        if cfg.lm_head_bias:
            params["lm_head_bias"] = take("lm_head.bias", (v,))
    else:
        head = {"kernel": take("lm_head.weight", (v, d)).T}
        if cfg.lm_head_bias:
            head["bias"] = take("lm_head.bias", (v,))
        params["lm_head"] = head
    return params, take.used


# --------------------------------------------------------------------------- Llama, Qwen2


def _yarn_mscale(scale: float, mscale: float) -> float:
    """YaRN's attention factor for a context ``scale`` (transformers' ``yarn_get_mscale``)."""
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _rope(hf: Any, directory: Path) -> tuple[float, RopeScaling | None]:
    """``(rope_theta, rope_scaling)`` of a Llama/Qwen2 config (transformers 5's
    ``rope_parameters``, or the older ``rope_theta`` and ``rope_scaling`` attributes)."""
    rp = dict(getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {})
    theta = float(rp.get("rope_theta") or getattr(hf, "rope_theta", None) or 10000.0)
    kind = rp.get("rope_type", rp.get("type")) or "default"
    partial = rp.get("partial_rotary_factor", getattr(hf, "partial_rotary_factor", None))
    if partial not in (None, 1, 1.0):
        raise ModelLoadError(
            f"{directory}: partial_rotary_factor={partial} is not supported (Llama and Qwen2 "
            "rotate the whole head)"
        )
    n_ctx = hf.max_position_embeddings
    try:
        if kind == "default":
            return theta, None
        if kind == "linear":
            return theta, RopeScaling("linear", factor=float(rp["factor"]))
        if kind == "dynamic":
            return theta, RopeScaling("dynamic", factor=float(rp["factor"]), original_n_ctx=n_ctx)
        if kind == "llama3":
            return theta, RopeScaling(
                "llama3",
                factor=float(rp["factor"]),
                original_n_ctx=int(rp["original_max_position_embeddings"]),
                low_freq_factor=float(rp["low_freq_factor"]),
                high_freq_factor=float(rp["high_freq_factor"]),
            )
        if kind == "yarn":
            original = int(rp.get("original_max_position_embeddings") or n_ctx)
            factor = float(rp.get("factor") or n_ctx / original)
            attention = rp.get("attention_factor")
            mscale, mscale_all = rp.get("mscale"), rp.get("mscale_all_dim")
            if attention is None and mscale and mscale_all:
                attention = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all)
            return theta, RopeScaling(
                "yarn",
                factor=factor,
                original_n_ctx=original,
                beta_fast=float(rp.get("beta_fast") or 32),
                beta_slow=float(rp.get("beta_slow") or 1),
                attention_factor=None if attention is None else float(attention),
                truncate=bool(rp.get("truncate", True)),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{directory}: invalid {kind} rope scaling {rp}: {exc}") from exc
    raise ModelLoadError(
        f"{directory}: rope scaling {kind!r} is not supported; jelm implements default, "
        "linear, dynamic, llama3 and yarn"
    )


def _qwen2_sliding_window(hf: Any, directory: Path) -> None:
    """Refuse a Qwen2 sliding window that would hide keys within the context."""
    window = getattr(hf, "sliding_window", None)
    if not getattr(hf, "use_sliding_window", False) or window is None:
        return
    types = getattr(hf, "layer_types", None) or [
        "sliding_attention" if i >= hf.max_window_layers else "full_attention"
        for i in range(hf.num_hidden_layers)
    ]
    sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]
    if sliding and window < hf.max_position_embeddings:
        raise ModelLoadError(
            f"{directory}: Qwen2 with use_sliding_window=True (a window of {window} tokens on "
            f"layers {sliding}, shorter than max_position_embeddings="
            f"{hf.max_position_embeddings}) is not supported: jelm's attention sees the whole "
            "context"
        )


def _llama_config(hf: Any, directory: Path, weights: dict[str, np.ndarray]) -> ModelConfig:
    d, n_head = hf.hidden_size, hf.num_attention_heads
    head_dim = getattr(hf, "head_dim", None) or d // n_head
    n_kv = getattr(hf, "num_key_value_heads", None) or n_head
    if hf.model_type == "qwen2":
        _qwen2_sliding_window(hf, directory)
        qkv_bias, out_bias, mlp_bias = True, False, False
    else:
        qkv_bias = out_bias = bool(getattr(hf, "attention_bias", False))
        mlp_bias = bool(getattr(hf, "mlp_bias", False))
    theta, scaling = _rope(hf, directory)
    return _model_config(
        directory,
        vocab_size=hf.vocab_size,
        n_ctx=hf.max_position_embeddings,
        d_model=d,
        n_layer=hf.num_hidden_layers,
        n_head=n_head,
        d_ff=None if hf.intermediate_size == 4 * d else hf.intermediate_size,
        rotary_dim=head_dim,
        parallel_residual=False,
        tie_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        lm_head_bias=False,
        qkv_bias=qkv_bias,
        layer_norm_eps=hf.rms_norm_eps,
        activation=hf.hidden_act,
        n_kv_head=None if n_kv == n_head else n_kv,
        d_head=None if head_dim * n_head == d else head_dim,
        norm="rms",
        mlp="gated",
        mlp_bias=mlp_bias,
        out_bias=None if out_bias == qkv_bias else out_bias,
        rotary_style="neox",
        rope_theta=theta,
        rope_scaling=scaling,
    )


def _llama_params(
    weights: dict[str, np.ndarray], cfg: ModelConfig, directory: Path
) -> tuple[Params, set[str]]:
    take = _Taker(weights, directory)
    d, f, v = cfg.d_model, cfg.ff_dim, cfg.vocab_size
    hq, hkv = cfg.n_head * cfg.head_dim, cfg.kv_heads * cfg.head_dim

    def linear(name: str, n_out: int, n_in: int, bias: bool) -> dict[str, np.ndarray]:
        out = {"kernel": take(f"{name}.weight", (n_out, n_in)).T}
        if bias:
            out["bias"] = take(f"{name}.bias", (n_out,))
        return out

    params: dict[str, Any] = {
        "wte": {"embedding": take("model.embed_tokens.weight", (v, d))},
        "ln_f": {"scale": take("model.norm.weight", (d,))},
    }
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}"
        q, k, vv = (
            linear(f"{p}.self_attn.{name}_proj", n, d, cfg.qkv_bias)
            for name, n in (("q", hq), ("k", hkv), ("v", hkv))
        )
        qkv = {"kernel": np.concatenate([q["kernel"], k["kernel"], vv["kernel"]], axis=1)}
        if cfg.qkv_bias:
            qkv["bias"] = np.concatenate([q["bias"], k["bias"], vv["bias"]])
        params[f"h_{i}"] = {
            "ln_1": {"scale": take(f"{p}.input_layernorm.weight", (d,))},
            "ln_2": {"scale": take(f"{p}.post_attention_layernorm.weight", (d,))},
            "attn": {
                "qkv": qkv,
                "out": linear(f"{p}.self_attn.o_proj", d, hq, cfg.attn_out_bias),
            },
            "mlp": {
                "gate": linear(f"{p}.mlp.gate_proj", f, d, cfg.mlp_bias),
                "fc_in": linear(f"{p}.mlp.up_proj", f, d, cfg.mlp_bias),
                "fc_out": linear(f"{p}.mlp.down_proj", d, f, cfg.mlp_bias),
            },
        }
    if cfg.tie_embeddings:
        if take.has("lm_head.weight"):  # saved anyway by some versions: must equal wte
            take.used.add("lm_head.weight")
    else:
        params["lm_head"] = {"kernel": take("lm_head.weight", (v, d)).T}
    return params, take.used


def _model_config(directory: Path, **fields: Any) -> ModelConfig:
    try:
        return ModelConfig(**fields)
    except ValueError as exc:
        raise ModelLoadError(f"{directory}: unsupported configuration: {exc}") from exc


class Family(NamedTuple):
    """How one ``model_type`` maps onto jelm's model: its :class:`ModelConfig` from the HF
    config (and the tensors), and its parameter tree with the names of the tensors used."""

    config: Callable[[Any, Path, dict[str, np.ndarray]], ModelConfig]
    params: Callable[[dict[str, np.ndarray], ModelConfig, Path], tuple[Params, set[str]]]


#: The supported families by ``model_type``.
FAMILIES: dict[str, Family] = {
    "gpt2": Family(_gpt2_config, _gpt2_params),
    "codegen": Family(_codegen_config, _codegen_params),
    "llama": Family(_llama_config, _llama_params),
    "qwen2": Family(_llama_config, _llama_params),
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)
