"""jelm.lm.model: the Flax decoder's configuration, parameter tree, forward pass and loss
(ELM §3.1's diff model, GPT-2 and CodeGen layouts)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.lm import model as M
from tests.lm.tiny import ARCHS, CODEGEN, GPT2
from tests.lm.tiny import random_prompts as _prompts
from tests.lm.tiny import scaled_params as _params

_forward = jax.jit(M.forward, static_argnums=1)


# ----------------------------------------------------------------------------- config


def test_config_round_trip_and_validation():
    for cfg in ARCHS.values():
        d = json.loads(json.dumps(cfg.to_dict()))
        assert M.ModelConfig.from_dict(d) == cfg
        assert hash(M.ModelConfig.from_dict(d)) == hash(cfg)
    assert GPT2.ff_dim == 128 and GPT2.head_dim == 8
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        M.ModelConfig.from_dict({**GPT2.to_dict(), "n_embd": 3})
    with pytest.raises(ValueError, match="divisible"):
        M.ModelConfig(vocab_size=10, d_model=30, n_head=4)
    with pytest.raises(ValueError, match="rotary_dim"):
        M.ModelConfig(vocab_size=10, d_model=32, n_head=4, rotary_dim=3)
    with pytest.raises(ValueError, match="activation"):
        M.ModelConfig(vocab_size=10, activation="swish9")


def test_param_tree_names():
    g = M.init_params(GPT2, jax.random.key(0))
    assert set(g) == {"wte", "wpe", "h_0", "h_1", "ln_f"}
    assert set(g["h_0"]) == {"ln_1", "ln_2", "attn", "mlp"}
    assert g["h_0"]["attn"]["qkv"]["kernel"].shape == (32, 96)
    assert "bias" in g["h_0"]["attn"]["qkv"]
    c = M.init_params(CODEGEN, jax.random.key(0))
    assert set(c) == {"wte", "h_0", "h_1", "ln_f", "lm_head"}
    assert set(c["h_0"]) == {"ln_1", "attn", "mlp"}  # one shared LayerNorm
    assert set(c["h_0"]["attn"]["qkv"]) == {"kernel"}
    assert c["lm_head"]["bias"].shape == (211,)
    assert M.param_count(g) == sum(a.size for a in jax.tree_util.tree_leaves(g))


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("arch", ["gpt2", "codegen"])
def test_forward_padding_invariance(arch):
    """Left or right padding does not change the logits at real positions."""
    cfg = ARCHS[arch]
    params = _params(cfg)
    seq = _prompts(1, [11])[0]
    ref = _forward(params, cfg, jnp.asarray([seq]), jnp.arange(11)[None], jnp.ones((1, 11), bool))
    tokens = np.zeros((2, 16), np.int32)
    mask = np.zeros((2, 16), bool)
    tokens[0, 5:], mask[0, 5:] = seq, True  # left padded
    tokens[1, :11], mask[1, :11] = seq, True  # right padded
    pos = M.positions_from_mask(jnp.asarray(mask))
    assert pos[0, 5] == 0 and pos[0, 15] == 10 and pos[1, 10] == 10
    out = _forward(params, cfg, jnp.asarray(tokens), pos, jnp.asarray(mask))
    assert out.shape == (2, 16, cfg.vocab_size)
    assert np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_allclose(out[0, 5:], ref[0], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out[1, :11], ref[0], atol=1e-4, rtol=1e-4)


def test_forward_is_causal():
    cfg = CODEGEN
    params = _params(cfg)
    a, b = _prompts(2, [12, 12])
    b = a[:6] + b[6:]
    run = lambda s: _forward(
        params, cfg, jnp.asarray([s]), jnp.arange(12)[None], jnp.ones((1, 12), bool)
    )
    np.testing.assert_allclose(run(a)[0, :6], run(b)[0, :6], atol=1e-5)
    assert not np.allclose(run(a)[0, 6:], run(b)[0, 6:], atol=1e-3)


def test_masked_xent_and_grad():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 7, (2, 5)), jnp.int32)
    mask = jnp.asarray([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], bool)
    logp = jax.nn.log_softmax(logits)
    want = -np.mean(
        [logp[b, t, targets[b, t]] for b, t in zip(*np.nonzero(np.asarray(mask)), strict=True)]
    )
    np.testing.assert_allclose(M.masked_xent(logits, targets, mask), want, rtol=1e-6)
    assert float(M.masked_xent(logits, targets, jnp.zeros_like(mask))) == 0.0

    cfg = GPT2
    params = M.init_params(cfg, jax.random.key(0))
    toks = jnp.asarray(_prompts(3, [9, 9]), jnp.int32)
    am = jnp.ones((2, 8), bool)

    def loss(p):
        lg = M.forward(p, cfg, toks[:, :-1], jnp.broadcast_to(jnp.arange(8), (2, 8)), am)
        return M.masked_xent(lg, toks[:, 1:], am)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert abs(float(value) - np.log(cfg.vocab_size)) < 0.5  # near-uniform at init
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
    assert float(jnp.abs(grads["h_0"]["attn"]["qkv"]["kernel"]).sum()) > 0
