"""Write a jelm model as a Hugging Face GPT-2, CodeGen or Llama checkpoint (ELM §3.1's
models for torch tooling).

:func:`save_hf` follows the model's architecture: a GPT-2-layout model (learned
positions, sequential residual) is written as GPT-2, a CodeGen-layout model (rotary,
parallel residual, no attention biases) as CodeGen, a Llama-layout model (RMSNorm, gated
MLP, rotate_half rotary on the whole head, sequential residual; a Qwen2 model too) as
Llama, with the inverse conversions of :mod:`jelm.lm.hf.load` (:func:`gpt2_state_dict`,
:func:`codegen_state_dict`, :func:`codegen_qkv_weight`, :func:`llama_state_dict`).
Where transformers' layout has a bias jelm's model lacks, it is written as zeros (same
logits) and :func:`jelm.lm.hf.load_hf` reads it back as a bias: CodeGen's ``lm_head``
always has one (read back with ``lm_head_bias=True``), and Llama's ``attention_bias``
covers q, k, v and the output projection together (a model with Qwen2's q/k/v biases
only is read back with ``out_bias=None``, a zero output bias).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jelm.lm.hf.load import CODEGEN_MP_NUM
from jelm.lm.model import ModelConfig, Params

if TYPE_CHECKING:
    from jelm.lm.tokenizer import Tokenizer


def _llama_option_problems(config: ModelConfig) -> list[str]:
    """The Llama-family options of ``config`` that neither GPT-2 nor CodeGen has."""
    problems = []
    if config.kv_heads != config.n_head:
        problems.append(f"n_kv_head={config.n_kv_head} (grouped-query attention)")
    if config.head_dim * config.n_head != config.d_model:
        problems.append(f"d_head={config.d_head} (heads of d_model / n_head dims only)")
    if config.norm != "layer":
        problems.append(f"norm={config.norm!r} (LayerNorm only)")
    if config.mlp != "plain":
        problems.append(f"mlp={config.mlp!r} (a plain fc_in/fc_out MLP only)")
    if not config.mlp_bias:
        problems.append("mlp_bias=False (the MLP has biases)")
    if config.attn_out_bias != config.qkv_bias:
        problems.append(f"out_bias={config.out_bias} (the same biases as qkv)")
    if config.rotary_dim and config.rotary_style != "gptj":
        problems.append(f"rotary_style={config.rotary_style!r} (GPT-J's interleaved pairs)")
    if config.rotary_dim and config.rope_theta != 10000.0:
        problems.append(f"rope_theta={config.rope_theta} (a rotary base of 10000)")
    if config.rope_scaling is not None:
        problems.append(f"rope_scaling={config.rope_scaling.kind!r} (no rope scaling)")
    return problems


def gpt2_export_problems(config: ModelConfig) -> list[str]:
    """Why ``config`` cannot be written as a Hugging Face GPT-2 checkpoint (empty if it can).

    GPT-2 means learned absolute positions, a sequential residual with ``ln_1``/``ln_2``,
    attention biases, an output projection tied to the token embedding without a bias, and
    none of the Llama-family options (grouped-query attention, RMSNorm, a gated MLP, ...).
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
    return problems + _llama_option_problems(config)


def codegen_export_problems(config: ModelConfig) -> list[str]:
    """Why ``config`` cannot be written as a Hugging Face CodeGen checkpoint (empty if it can).

    CodeGen means rotary positions (GPT-J's interleaved pairs) on ``rotary_dim > 0``
    dimensions of each head, a parallel residual with one ``ln_1``, attention projections
    without biases, and a fused ``qkv_proj`` split over 4 model-parallel shards (so
    ``d_model`` divisible by 4), and none of the Llama-family options (grouped-query
    attention, RMSNorm, a gated MLP, rotate_half pairs, another rope base or a rope
    scaling). The head may be tied or untied, with or without a bias.
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
    return problems + _llama_option_problems(config)


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


def llama_export_problems(config: ModelConfig) -> list[str]:
    """Why ``config`` cannot be written as a Hugging Face Llama checkpoint (empty if it can).

    Llama means RMSNorm, a gated MLP, rotary positions in the ``rotate_half`` pairing
    (``rotary_style="neox"``) on the whole head, a sequential residual and a head without
    a bias. Any attention and MLP biases can be written (see :func:`llama_state_dict`).
    """
    problems = []
    if config.norm != "rms":
        problems.append(f"norm={config.norm!r} (Llama has RMSNorm)")
    if config.mlp != "gated":
        problems.append(f"mlp={config.mlp!r} (Llama's MLP is gated)")
    if config.parallel_residual:
        problems.append("parallel_residual=True (Llama's residual is sequential)")
    if config.rotary_dim != config.head_dim:
        problems.append(
            f"rotary_dim={config.rotary_dim} (Llama rotates the whole head: {config.head_dim})"
        )
    if config.rotary_style != "neox":
        problems.append(f"rotary_style={config.rotary_style!r} (Llama's pairs are 'neox')")
    if config.lm_head_bias:
        problems.append("lm_head_bias=True (Llama's lm_head has no bias)")
    return problems


def llama_state_dict(params: Params, config: ModelConfig) -> dict[str, np.ndarray]:
    """jelm params -> Llama tensors named as ``LlamaForCausalLM.state_dict()`` (float32).

    The inverse of the Llama branch of :func:`load_hf_params`: the qkv kernel's columns
    split into ``q_proj``, ``k_proj`` and ``v_proj`` (``nn.Linear`` weights: transposed),
    ``gate``/``fc_in``/``fc_out`` as ``gate_proj``/``up_proj``/``down_proj``. Llama's
    ``attention_bias`` is one switch for the four attention projections: when jelm's model
    has biases on only one side (``qkv_bias`` != ``attn_out_bias``, e.g. Qwen2's), the
    other side's are written as zeros. A tied head is left out (transformers ties it to
    ``embed_tokens`` when the config says so).
    """
    problems = llama_export_problems(config)
    if problems:
        raise ValueError(
            "only Llama-architecture jelm models can be exported as a Hugging Face Llama "
            f"checkpoint; this config has {'; '.join(problems)}"
        )
    _check_shapes(params, config)
    hq, hkv = config.n_head * config.head_dim, config.kv_heads * config.head_dim
    out = {
        "model.embed_tokens.weight": _f32(params["wte"]["embedding"]),
        "model.norm.weight": _f32(params["ln_f"]["scale"]),
    }

    attention_bias = config.qkv_bias or config.attn_out_bias

    def linear(name: str, dense: dict[str, Any], cols: slice = slice(None), bias=False) -> None:
        kernel = _f32(dense["kernel"])[:, cols]
        out[f"{name}.weight"] = _f32(kernel.T)
        if "bias" in dense:
            out[f"{name}.bias"] = _f32(_f32(dense["bias"])[cols])
        elif bias:
            out[f"{name}.bias"] = np.zeros(kernel.shape[1], np.float32)

    for i in range(config.n_layer):
        layer, p = params[f"h_{i}"], f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = _f32(layer["ln_1"]["scale"])
        out[f"{p}.post_attention_layernorm.weight"] = _f32(layer["ln_2"]["scale"])
        qkv = layer["attn"]["qkv"]
        linear(f"{p}.self_attn.q_proj", qkv, slice(0, hq), attention_bias)
        linear(f"{p}.self_attn.k_proj", qkv, slice(hq, hq + hkv), attention_bias)
        linear(f"{p}.self_attn.v_proj", qkv, slice(hq + hkv, None), attention_bias)
        linear(f"{p}.self_attn.o_proj", layer["attn"]["out"], bias=attention_bias)
        for ours, theirs in (("gate", "gate_proj"), ("fc_in", "up_proj"), ("fc_out", "down_proj")):
            linear(f"{p}.mlp.{theirs}", layer["mlp"][ours])
    if not config.tie_embeddings:
        linear("lm_head", params["lm_head"])
    return out


def _rope_parameters(config: ModelConfig) -> dict[str, Any]:
    """transformers' ``rope_parameters`` of ``config`` (the inverse of the loader's)."""
    rs = config.rope_scaling
    out: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_theta}
    if rs is None:
        return out
    out.update(rope_type=rs.kind, factor=rs.factor)
    if rs.kind == "llama3":
        out.update(
            original_max_position_embeddings=rs.original_n_ctx,
            low_freq_factor=rs.low_freq_factor,
            high_freq_factor=rs.high_freq_factor,
        )
    elif rs.kind == "yarn":
        out.update(
            original_max_position_embeddings=rs.original_n_ctx,
            beta_fast=rs.beta_fast,
            beta_slow=rs.beta_slow,
            truncate=rs.truncate,
        )
        if rs.attention_factor is not None:
            out["attention_factor"] = rs.attention_factor
    return out


def save_hf(
    directory: str | Path, params: Params, config: ModelConfig, tokenizer: Tokenizer
) -> None:
    """Write a jelm model as a Hugging Face GPT-2, CodeGen or Llama checkpoint directory.

    The family follows the architecture: a config with no :func:`gpt2_export_problems` is
    written as GPT-2 (``transformers.GPT2Config``, ``GPT2LMHeadModel``, tensors of
    :func:`gpt2_state_dict`), one with no :func:`codegen_export_problems` as CodeGen
    (``transformers.CodeGenConfig`` with ``rotary_dim``, ``n_ctx`` and
    ``tie_word_embeddings`` = ``tie_embeddings``, ``CodeGenForCausalLM``, tensors of
    :func:`codegen_state_dict`). Both configs carry ``n_positions``, ``n_embd``,
    ``n_layer``, ``n_head``, ``n_inner``, ``vocab_size``, ``layer_norm_epsilon``,
    ``activation_function``. One with no :func:`llama_export_problems` is written as
    Llama (``transformers.LlamaConfig``, ``LlamaForCausalLM``, tensors of
    :func:`llama_state_dict`; a Qwen2 model too, as Qwen2 is Llama with q/k/v biases, and
    transformers would read a ``qwen2`` directory's tokenizer as Qwen's own), with
    ``hidden_size``, ``intermediate_size``, ``num_hidden_layers``,
    ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ``hidden_act``,
    ``max_position_embeddings`` = ``n_ctx``, ``rms_norm_eps``, ``attention_bias``,
    ``mlp_bias``, ``tie_word_embeddings`` and ``rope_parameters`` (``rope_theta`` and the
    rope scaling; a ``dynamic`` one is written against ``n_ctx``). Every config has BOS and
    EOS = the tokenizer's EOS id (ELM's ``<|endoftext|>``) and its pad id.

    Files: ``config.json``, ``model.safetensors`` (float32) and the tokenizer
    (``tokenizer.json`` and ``tokenizer_config.json`` of a ``PreTrainedTokenizerFast`` with
    EOS and pad tokens set), so that ``AutoModelForCausalLM.from_pretrained(directory)``,
    ``AutoTokenizer.from_pretrained`` and :func:`load_hf` all read it. A config that is
    none of these layouts (e.g. rotary with a sequential residual and LayerNorm), params of
    other shapes than ``config``'s, or a tokenizer larger than ``vocab_size`` raise
    ``ValueError`` before anything is written. Existing files of the same names are
    overwritten.
    """
    from safetensors.numpy import save_file
    from transformers import CodeGenConfig, GPT2Config, LlamaConfig

    problems = {
        "GPT-2": gpt2_export_problems(config),
        "CodeGen": codegen_export_problems(config),
        "Llama": llama_export_problems(config),
    }
    family = next((name for name, found in problems.items() if not found), None)
    if family is None:
        raise ValueError(
            "this jelm model is not a GPT-2, CodeGen or Llama architecture, so it cannot be "
            "exported as a Hugging Face checkpoint; "
            + "; ".join(f"as {name} it has {'; '.join(found)}" for name, found in problems.items())
        )
    # Each validates the params' shapes before anything is written.
    state_dict = {"GPT-2": gpt2_state_dict, "CodeGen": codegen_state_dict}.get(
        family, llama_state_dict
    )
    tensors = state_dict(params, config)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}"
        )
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    tokens: dict[str, Any] = dict(
        bos_token_id=tokenizer.eos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
    )
    common: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        n_positions=config.n_ctx,
        n_embd=config.d_model,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.d_ff,
        activation_function=config.activation,
        layer_norm_epsilon=config.layer_norm_eps,
        **tokens,
    )
    llama: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.ff_dim,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.kv_heads,
        hidden_act=config.activation,
        max_position_embeddings=config.n_ctx,
        rms_norm_eps=config.layer_norm_eps,
        tie_word_embeddings=config.tie_embeddings,
        rope_parameters=_rope_parameters(config),
        **tokens,
    )
    if family == "GPT-2":
        hf_config: Any = GPT2Config(
            **common, tie_word_embeddings=True, architectures=["GPT2LMHeadModel"]
        )
    elif family == "CodeGen":
        hf_config = CodeGenConfig(
            **common,
            n_ctx=config.n_ctx,
            rotary_dim=config.rotary_dim,
            tie_word_embeddings=config.tie_embeddings,
            architectures=["CodeGenForCausalLM"],
        )
    else:
        hf_config = LlamaConfig(
            **llama,
            head_dim=config.head_dim,
            attention_bias=config.qkv_bias or config.attn_out_bias,
            mlp_bias=config.mlp_bias,
            architectures=["LlamaForCausalLM"],
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
