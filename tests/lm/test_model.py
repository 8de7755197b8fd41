"""jelm.lm.model: the Flax decoder's configuration, parameter tree, forward pass and loss
(ELM §3.1's diff model; GPT-2, CodeGen and Llama layouts)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.lm import model as M
from tests.lm.tiny import ARCHS, CODEGEN, GPT2, LLAMA
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


def test_llama_fields_round_trip_and_validation():
    """The Llama-family fields: defaults keep old config.json files loading as before, the
    rope scaling survives JSON as a dict, and bad values are refused."""
    old = {k: v for k, v in GPT2.to_dict().items() if k in M.ModelConfig.__annotations__}
    for name in ("n_kv_head", "d_head", "norm", "mlp", "rope_scaling", "rope_theta"):
        old.pop(name)
    assert M.ModelConfig.from_dict(old) == GPT2  # a config.json from before these fields
    d = json.loads(json.dumps(LLAMA.to_dict()))
    assert d["rope_scaling"]["kind"] == "yarn"
    assert M.ModelConfig.from_dict(d) == LLAMA and hash(M.ModelConfig.from_dict(d)) == hash(LLAMA)
    assert (LLAMA.kv_heads, LLAMA.head_dim, LLAMA.attn_out_bias) == (2, 8, False)
    assert (GPT2.kv_heads, GPT2.attn_out_bias, CODEGEN.attn_out_bias) == (4, True, False)
    wide = M.ModelConfig(vocab_size=10, d_model=32, n_head=4, d_head=12, rotary_dim=12)
    assert wide.head_dim == 12
    base = dict(vocab_size=10, d_model=32, n_head=4, rotary_dim=8)
    for bad, match in (
        (dict(n_kv_head=3), "n_kv_head must divide"),
        (dict(norm="batch"), "unknown norm"),
        (dict(mlp="moe"), "unknown mlp"),
        (dict(rotary_style="glm"), "unknown rotary_style"),
        (dict(rope_theta=0.0), "rope_theta"),
        (dict(rope_scaling={"kind": "longrope", "factor": 2.0}), "unknown rope scaling"),
        (dict(rope_scaling={"kind": "linear", "scale": 2.0}), "unknown RopeScaling keys"),
        (dict(rope_scaling={"kind": "llama3", "factor": 8.0}), "original_n_ctx"),
        (dict(rope_scaling=M.RopeScaling("linear", 2.0), rotary_dim=0), "rotary_dim > 0"),
        (
            dict(n_ctx=128, rope_scaling=M.RopeScaling("dynamic", 2.0, original_n_ctx=64)),
            "dynamic rope scaling",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            M.ModelConfig(**{**base, **bad})


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
    ll = M.init_params(LLAMA, jax.random.key(0))
    assert set(ll) == {"wte", "h_0", "h_1", "ln_f", "lm_head"}
    assert set(ll["h_0"]["ln_1"]) == set(ll["ln_f"]) == {"scale"}  # RMSNorm
    qkv = ll["h_0"]["attn"]["qkv"]
    assert qkv["kernel"].shape == (32, (4 + 2 * 2) * 8) and qkv["bias"].shape == (64,)
    assert set(ll["h_0"]["attn"]["out"]) == {"kernel"}
    assert set(ll["h_0"]["mlp"]) == {"gate", "fc_in", "fc_out"}
    assert all(set(m) == {"kernel"} for m in ll["h_0"]["mlp"].values())
    assert ll["h_0"]["mlp"]["gate"]["kernel"].shape == (32, 48)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("arch", ["gpt2", "codegen", "llama"])
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


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_adapter_with_a_zero_gate_changes_nothing_and_a_gate_opens_it(arch):
    """A gated soft prompt (stage 3's terrain conditioning) is exactly a no-op while its
    gate is zero, changes every later position once it is open, and the output head on
    the hidden states gives the logits of a forward pass."""
    cfg = ARCHS[arch]
    params = _params(cfg)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 9)), jnp.int32)
    mask = jnp.ones((2, 9), bool).at[0, :2].set(False)  # left padding on row 0
    pos = M.positions_from_mask(mask)
    prefix = jax.random.normal(jax.random.key(1), (2, 3, cfg.d_model))
    closed = M.Adapter(prefix, jnp.zeros((cfg.n_layer, cfg.n_head)))
    # jitted as its callers use it (op by op, a forward pass compiles each op on its own)
    forward = jax.jit(M.forward, static_argnames="config")
    plain = forward(params, cfg, tokens, pos, mask)
    np.testing.assert_array_equal(forward(params, cfg, tokens, pos, mask, closed), plain)
    opened = forward(params, cfg, tokens, pos, mask, closed._replace(gate=closed.gate + 0.5))
    assert np.all(np.abs(np.asarray(opened - plain))[:, 2:].max(axis=-1) > 1e-4)
    hidden = jax.jit(M.hidden_states, static_argnames="config")(params, cfg, tokens, pos, mask)
    np.testing.assert_allclose(M.logits_of(params, cfg, hidden), plain, rtol=1e-5, atol=1e-5)
    # The gate learns from a closed start: its gradient is not zero.
    grad = jax.jit(
        jax.grad(
            lambda g: M.forward(params, cfg, tokens, pos, mask, closed._replace(gate=g))[1, -1, 0]
        )
    )(closed.gate)
    assert float(jnp.abs(grad).sum()) > 0
