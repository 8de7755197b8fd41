"""Tiny random models the jelm.lm model and sampling tests share (no files)."""

from __future__ import annotations

import jax
import numpy as np

from jelm.lm import model as M

GPT2 = M.ModelConfig(vocab_size=211, n_ctx=96, d_model=32, n_layer=2, n_head=4)
CODEGEN = M.ModelConfig(
    vocab_size=211,
    n_ctx=96,
    d_model=32,
    n_layer=2,
    n_head=4,
    rotary_dim=4,
    parallel_residual=True,
    tie_embeddings=False,
    lm_head_bias=True,
    qkv_bias=False,
)
# Llama/Qwen2 layout: RMSNorm, SwiGLU, 2 KV heads for 4 query heads, rotate_half rotary on
# the whole head with YaRN scaling, q/k/v biases only (Qwen2's).
LLAMA = M.ModelConfig(
    vocab_size=211,
    n_ctx=96,
    d_model=32,
    n_layer=2,
    n_head=4,
    d_ff=48,
    rotary_dim=8,
    tie_embeddings=False,
    qkv_bias=True,
    activation="silu",
    n_kv_head=2,
    norm="rms",
    mlp="gated",
    mlp_bias=False,
    out_bias=False,
    rotary_style="neox",
    rope_theta=500.0,
    rope_scaling=M.RopeScaling("yarn", factor=4.0, original_n_ctx=24),
)
ARCHS = {"gpt2": GPT2, "codegen": CODEGEN, "llama": LLAMA}


def scaled_params(config: M.ModelConfig, seed: int = 0):
    """Random params with weights scaled up, so that greedy decoding is not trivially
    "repeat the last token" (what a tied GPT-2 at 0.02 init does)."""
    params = M.init_params(config, jax.random.key(seed))
    return jax.tree_util.tree_map_with_path(
        lambda path, a: (
            a * 8
            if "kernel" in jax.tree_util.keystr(path) or "embedding" in jax.tree_util.keystr(path)
            else a
        ),
        params,
    )


def random_prompts(seed: int, lengths):
    """Random token-id prompts of the given lengths (ids 5..210)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(5, 211, n).tolist() for n in lengths]
