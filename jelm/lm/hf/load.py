"""Read a local Hugging Face GPT-2 or CodeGen checkpoint into jelm's Flax model (§3.1).

:func:`load_hf` reads a ``save_pretrained`` directory (``model_type`` ``"gpt2"`` or
``"codegen"``: config and tokenizer through transformers, local files only; weights from
safetensors, one file or a sharded index, as float32) and returns ``(params, ModelConfig,
Tokenizer)`` for :mod:`jelm.lm.model`. Each family is an entry of :data:`FAMILIES`.

Layout conversions (checked against transformers' ``modeling_gpt2.py`` and
``modeling_codegen.py``; tests/lm/hf compare logits and greedy generations with torch):

- GPT-2 stores its projections as ``Conv1D`` weights ``[in, out]`` (a Flax kernel as is);
  ``c_attn`` columns are already ``q | k | v``, each head-major.
- CodeGen uses ``nn.Linear`` (``[out, in]``, transposed here). Its fused ``qkv_proj`` is
  interleaved over the ``mp_num = 4`` model-parallel shards it was trained with: output row
  ``m * 3L + j`` (``L = d_model / 4``) belongs to shard ``m``, and inside a shard the blocks
  are ordered **q, v, k**; the query's feature ``m * L + j`` is row ``m * 3L + j``. Rows are
  regrouped into jelm's ``q | k | v`` kernel.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jelm.lm.checkpoint import ModelLoadError
from jelm.lm.model import ModelConfig, Params

CODEGEN_MP_NUM = 4
# Non-parameter buffers some checkpoints carry (causal masks of older transformers).
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attn.causal_mask")


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
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)
