"""Load local Hugging Face causal-LM checkpoints into jelm's Flax model.

ELM (Lehman et al. 2022, §3.1) mutates programs with pretrained code models: the paper's
diff models are CodeGen-style models fine-tuned on GitHub commits. jelm cannot download
weights, but a user who has a checkpoint on disk can use it: :func:`load_hf` reads a
``save_pretrained`` directory of the GPT-2 family (``model_type`` ``"gpt2"``) or the CodeGen
family (``"codegen"``) and returns ``(params, ModelConfig, Tokenizer)`` for
:mod:`jelm.lm.model`. transformers 5 has no Flax model classes, so only its config and
tokenizer classes are used; the weights come straight from safetensors (one file or a
sharded ``model.safetensors.index.json``), converted to float32.

Layout conversions (checked against transformers' ``modeling_gpt2.py`` and
``modeling_codegen.py``; tests/test_hf.py compares logits and greedy generations with the
torch models):

- GPT-2 stores its projections as ``Conv1D`` weights ``[in, out]`` (a Flax kernel as is);
  ``c_attn`` columns are already ``q | k | v``, each head-major.
- CodeGen uses ``nn.Linear`` (``[out, in]``, transposed here). Its fused ``qkv_proj`` is
  interleaved over the ``mp_num = 4`` model-parallel shards it was trained with: output row
  ``m * 3L + j`` (``L = d_model / 4``) belongs to shard ``m``, and inside a shard the blocks
  are ordered **q, v, k**; the query's feature ``m * L + j`` is row ``m * 3L + j``. Rows are
  regrouped into jelm's ``q | k | v`` kernel.

The other direction, :func:`save_hf`, writes a jelm model as a checkpoint directory of the
matching family (``config.json``, ``model.safetensors``, tokenizer files): a GPT-2-layout
model (learned positions, sequential residual) as GPT-2, a CodeGen-layout model (rotary,
parallel residual, no attention biases) as CodeGen, with the inverse conversions
(:func:`gpt2_state_dict`, :func:`codegen_state_dict`, :func:`codegen_qkv_weight`). Torch
tooling (``AutoModelForCausalLM.from_pretrained``, ``AutoTokenizer``, serving stacks) can
then run jelm's diff models, and ``jelm.lm.bench`` can compare jelm's sampler with
transformers' ``generate`` on the same weights. CodeGen's ``lm_head`` always has a bias
in transformers: a jelm model without one is written with a zero bias (same logits), so
:func:`load_hf` reads it back with ``lm_head_bias=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jelm.lm.model import ModelConfig, ModelLoadError, Params

if TYPE_CHECKING:
    from jelm.lm.tokenizer import Tokenizer

SUPPORTED_MODEL_TYPES = ("gpt2", "codegen")
CODEGEN_MP_NUM = 4
# Non-parameter buffers some checkpoints carry (causal masks of older transformers).
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".attn.causal_mask")


def load_hf(directory: str | Path) -> tuple[Params, ModelConfig, Any]:
    """``(params, config, tokenizer)`` of a local HF checkpoint of a supported family.

    Raises :class:`jelm.lm.model.ModelLoadError` naming the directory and the problem: not
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
    if model_type == "gpt2":
        config = _gpt2_config(hf_config, directory)
        params, used = _gpt2_params(strip, config, directory)
    else:
        config = _codegen_config(hf_config, directory, strip)
        params, used = _codegen_params(strip, config, directory)
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


def _gpt2_config(hf: Any, directory: Path) -> ModelConfig:
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


# --------------------------------------------------------------------------- export


def gpt2_export_problems(config: ModelConfig) -> list[str]:
    """Why ``config`` cannot be written as a Hugging Face GPT-2 checkpoint (empty if it can).

    GPT-2 means learned absolute positions, a sequential residual with ``ln_1``/``ln_2``,
    attention biases, an output projection tied to the token embedding without a bias.
    """
    problems = []
    if config.rotary_dim:
        problems.append(f"rotary_dim={config.rotary_dim} (GPT-2 has learned positions: 0)")
    if config.parallel_residual:
        problems.append("parallel_residual=True (GPT-2's residual is sequential)")
    if not config.tie_embeddings:
        problems.append("tie_embeddings=False (GPT-2 ties lm_head to wte)")
    if config.lm_head_bias:
        problems.append("lm_head_bias=True (GPT-2's lm_head has no bias)")
    if not config.qkv_bias:
        problems.append("qkv_bias=False (GPT-2's attention projections have biases)")
    return problems


def codegen_export_problems(config: ModelConfig) -> list[str]:
    """Why ``config`` cannot be written as a Hugging Face CodeGen checkpoint (empty if it can).

    CodeGen means rotary positions (GPT-J's interleaved pairs) on ``rotary_dim > 0``
    dimensions of each head, a parallel residual with one ``ln_1``, attention projections
    without biases, and a fused ``qkv_proj`` split over 4 model-parallel shards (so
    ``d_model`` divisible by 4). The head may be tied or untied, with or without a bias.
    """
    problems = []
    if not config.rotary_dim:
        problems.append("rotary_dim=0 (CodeGen has rotary positions: rotary_dim > 0)")
    if not config.parallel_residual:
        problems.append("parallel_residual=False (CodeGen's residual is parallel)")
    if config.qkv_bias:
        problems.append("qkv_bias=True (CodeGen's attention projections have no biases)")
    if config.d_model % CODEGEN_MP_NUM:
        problems.append(
            f"d_model={config.d_model} (CodeGen's fused qkv_proj needs a multiple of "
            f"{CODEGEN_MP_NUM})"
        )
    return problems


def _check_shapes(params: Params, config: ModelConfig) -> None:
    """``ValueError`` unless ``params`` has exactly the tree and shapes of ``config``."""
    import jax

    from jelm.lm.model import init_params

    abstract = jax.eval_shape(lambda k: init_params(config, k), jax.random.key(0))
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), abstract)
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), params)
    if want != got:
        raise ValueError(f"params do not have the shapes of {config}")


def _f32(a: Any) -> np.ndarray:
    """``a`` as a C-contiguous float32 numpy array (what safetensors writes)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def gpt2_state_dict(params: Params, config: ModelConfig) -> dict[str, np.ndarray]:
    """jelm params -> GPT-2 tensors named as ``GPT2LMHeadModel.state_dict()`` (float32).

    The inverse of the GPT-2 branch of :func:`load_hf_params`: kernels are ``Conv1D``
    weights ``[in, out]`` as they are; the tied ``lm_head.weight`` and the ``attn.bias``
    mask buffers are left out (transformers rebuilds both).
    """
    problems = gpt2_export_problems(config)
    if problems:
        raise ValueError(
            "only GPT-2-architecture jelm models can be exported as a Hugging Face GPT-2 "
            f"checkpoint; this config has {'; '.join(problems)}"
        )
    _check_shapes(params, config)
    out = {
        "transformer.wte.weight": _f32(params["wte"]["embedding"]),
        "transformer.wpe.weight": _f32(params["wpe"]["embedding"]),
        "transformer.ln_f.weight": _f32(params["ln_f"]["scale"]),
        "transformer.ln_f.bias": _f32(params["ln_f"]["bias"]),
    }
    for i in range(config.n_layer):
        layer, p = params[f"h_{i}"], f"transformer.h.{i}"
        for ln in ("ln_1", "ln_2"):
            out[f"{p}.{ln}.weight"] = _f32(layer[ln]["scale"])
            out[f"{p}.{ln}.bias"] = _f32(layer[ln]["bias"])
        for ours, theirs in (
            (("attn", "qkv"), "attn.c_attn"),
            (("attn", "out"), "attn.c_proj"),
            (("mlp", "fc_in"), "mlp.c_fc"),
            (("mlp", "fc_out"), "mlp.c_proj"),
        ):
            dense = layer[ours[0]][ours[1]]
            out[f"{p}.{theirs}.weight"] = _f32(dense["kernel"])
            out[f"{p}.{theirs}.bias"] = _f32(dense["bias"])
    return out


def codegen_qkv_weight(kernel: np.ndarray, mp_num: int = CODEGEN_MP_NUM) -> np.ndarray:
    """jelm's qkv kernel [D, 3D] (columns ``q | k | v``) -> CodeGen's ``qkv_proj.weight``
    [3D, D]: the inverse of :func:`codegen_qkv_kernel`.

    Output row ``m * 3L + b * L + j`` (``L = D / mp_num``) is feature ``m * L + j`` of
    the ``b``-th of (q, v, k): CodeGen's order inside each shard ``m``.
    """
    kernel = np.asarray(kernel)
    d = kernel.shape[0]
    local = d // mp_num
    q, k, v = kernel.T.reshape(3, d, d)
    blocks = np.stack([a.reshape(mp_num, local, d) for a in (q, v, k)], axis=1)
    return blocks.reshape(3 * d, d)


def codegen_state_dict(params: Params, config: ModelConfig) -> dict[str, np.ndarray]:
    """jelm params -> CodeGen tensors named as ``CodeGenForCausalLM.state_dict()`` (float32).

    The inverse of the CodeGen branch of :func:`load_hf_params`: ``nn.Linear`` weights are
    the transposed kernels, ``qkv_proj.weight`` is regrouped into the 4-shard q, v, k
    layout (:func:`codegen_qkv_weight`). ``CodeGenForCausalLM`` always has
    ``lm_head.bias``: it is jelm's head bias, or zeros when the model has none. A tied head
    (``tie_embeddings``) is written as ``lm_head.weight`` = a copy of ``wte`` (transformers
    ties the two again on loading when the config says ``tie_word_embeddings``).
    """
    problems = codegen_export_problems(config)
    if problems:
        raise ValueError(
            "only CodeGen-architecture jelm models can be exported as a Hugging Face CodeGen "
            f"checkpoint; this config has {'; '.join(problems)}"
        )
    _check_shapes(params, config)
    wte = _f32(params["wte"]["embedding"])
    out = {
        "transformer.wte.weight": wte,
        "transformer.ln_f.weight": _f32(params["ln_f"]["scale"]),
        "transformer.ln_f.bias": _f32(params["ln_f"]["bias"]),
    }
    for i in range(config.n_layer):
        layer, p = params[f"h_{i}"], f"transformer.h.{i}"
        out[f"{p}.ln_1.weight"] = _f32(layer["ln_1"]["scale"])
        out[f"{p}.ln_1.bias"] = _f32(layer["ln_1"]["bias"])
        qkv = _f32(layer["attn"]["qkv"]["kernel"])
        out[f"{p}.attn.qkv_proj.weight"] = _f32(codegen_qkv_weight(qkv))
        out[f"{p}.attn.out_proj.weight"] = _f32(_f32(layer["attn"]["out"]["kernel"]).T)
        for name in ("fc_in", "fc_out"):
            dense = layer["mlp"][name]
            out[f"{p}.mlp.{name}.weight"] = _f32(_f32(dense["kernel"]).T)
            out[f"{p}.mlp.{name}.bias"] = _f32(dense["bias"])
    if config.tie_embeddings:
        out["lm_head.weight"] = wte.copy()
        bias = params.get("lm_head_bias")
    else:
        out["lm_head.weight"] = _f32(_f32(params["lm_head"]["kernel"]).T)
        bias = params["lm_head"].get("bias")
    out["lm_head.bias"] = (
        _f32(bias) if bias is not None else np.zeros(config.vocab_size, np.float32)
    )
    return out


def save_hf(
    directory: str | Path, params: Params, config: ModelConfig, tokenizer: Tokenizer
) -> None:
    """Write a jelm model as a Hugging Face GPT-2 or CodeGen checkpoint directory.

    The family follows the architecture: a config with no :func:`gpt2_export_problems` is
    written as GPT-2 (``transformers.GPT2Config``, ``GPT2LMHeadModel``, tensors of
    :func:`gpt2_state_dict`), one with no :func:`codegen_export_problems` as CodeGen
    (``transformers.CodeGenConfig`` with ``rotary_dim``, ``n_ctx`` and
    ``tie_word_embeddings`` = ``tie_embeddings``, ``CodeGenForCausalLM``, tensors of
    :func:`codegen_state_dict`). Both configs carry ``n_positions``, ``n_embd``,
    ``n_layer``, ``n_head``, ``n_inner``, ``vocab_size``, ``layer_norm_epsilon``,
    ``activation_function``, BOS and EOS = the tokenizer's EOS id (ELM's
    ``<|endoftext|>``) and its pad id.

    Files: ``config.json``, ``model.safetensors`` (float32) and the tokenizer
    (``tokenizer.json`` and ``tokenizer_config.json`` of a ``PreTrainedTokenizerFast`` with
    EOS and pad tokens set), so that ``AutoModelForCausalLM.from_pretrained(directory)``,
    ``AutoTokenizer.from_pretrained`` and :func:`load_hf` all read it. A config that is
    neither layout (e.g. rotary with a sequential residual), params of other shapes than
    ``config``'s, or a tokenizer larger than ``vocab_size`` raise ``ValueError`` before
    anything is written. Existing files of the same names are overwritten.
    """
    from safetensors.numpy import save_file
    from transformers import CodeGenConfig, GPT2Config

    gpt2_problems = gpt2_export_problems(config)
    codegen_problems = codegen_export_problems(config)
    if gpt2_problems and codegen_problems:
        raise ValueError(
            "this jelm model is neither a GPT-2 nor a CodeGen architecture, so it cannot be "
            f"exported as a Hugging Face checkpoint; as GPT-2 it has "
            f"{'; '.join(gpt2_problems)}; as CodeGen it has {'; '.join(codegen_problems)}"
        )
    # Both validate the params' shapes before anything is written.
    is_gpt2 = not gpt2_problems
    tensors = gpt2_state_dict(params, config) if is_gpt2 else codegen_state_dict(params, config)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}"
        )
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        n_positions=config.n_ctx,
        n_embd=config.d_model,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.d_ff,
        activation_function=config.activation,
        layer_norm_epsilon=config.layer_norm_eps,
        bos_token_id=tokenizer.eos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    if is_gpt2:
        hf_config: Any = GPT2Config(
            **common, tie_word_embeddings=True, architectures=["GPT2LMHeadModel"]
        )
    else:
        hf_config = CodeGenConfig(
            **common,
            n_ctx=config.n_ctx,
            rotary_dim=config.rotary_dim,
            tie_word_embeddings=config.tie_embeddings,
            architectures=["CodeGenForCausalLM"],
        )
    hf_config.save_pretrained(directory)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    _save_tokenizer(directory, tokenizer, config.n_ctx)


def _save_tokenizer(directory: Path, tokenizer: Tokenizer, n_ctx: int) -> None:
    """``tokenizer.json`` and a ``PreTrainedTokenizerFast``'s files (EOS = BOS, pad set)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer.save(directory / "tokenizer.json")
    eos = tokenizer.decode([tokenizer.eos_id])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"),
        eos_token=eos,
        bos_token=eos,
        pad_token=tokenizer.decode([tokenizer.pad_id]),
        model_max_length=n_ctx,
    )
    hf_tok.save_pretrained(directory)
