"""jelm.lm.model: the Flax decoder, its loss, KV-cache generation and save/load.

The central check: greedy generation with the KV cache (left-padded batch of prompts of
different lengths) gives exactly the tokens of re-running the full forward pass on the
growing sequence without a cache, for both architectures (GPT-2 and CodeGen/GPT-J), and a
row's result does not depend on the other rows in the batch.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
ARCHS = {"gpt2": GPT2, "codegen": CODEGEN}


def _params(config: M.ModelConfig, seed: int = 0):
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


_forward = jax.jit(M.forward, static_argnums=1)


def _greedy_reference(params, config, prompt, n, width=32):
    """Greedy decoding without a cache: the full forward pass over the growing sequence at
    every step (right-padded to one fixed width, so it compiles once)."""
    seq = list(prompt)
    assert len(prompt) + n <= width
    for _ in range(n):
        t = len(seq)
        tokens = np.zeros((1, width), np.int32)
        tokens[0, :t] = seq
        mask = np.arange(width)[None] < t
        logits = _forward(
            params,
            config,
            jnp.asarray(tokens),
            jnp.arange(width, dtype=jnp.int32)[None],
            jnp.asarray(mask),
        )
        seq.append(int(jnp.argmax(logits[0, t - 1])))
    return seq[len(prompt) :]


def _prompts(seed: int, lengths):
    rng = np.random.default_rng(seed)
    return [rng.integers(5, 211, n).tolist() for n in lengths]


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


# ----------------------------------------------------------------------------- generate


@pytest.mark.parametrize("arch", ["gpt2", "codegen"])
def test_greedy_generate_matches_uncached_forward(arch):
    cfg = ARCHS[arch]
    params = _params(cfg)
    prompts = _prompts(4, [3, 17, 9])
    n = 10
    gens = M.generate(params, cfg, prompts, jax.random.key(0), max_new_tokens=n, temperature=0)
    for prompt, gen in zip(prompts, gens, strict=True):
        assert gen.finish_reason == "length"
        assert gen.tokens == _greedy_reference(params, cfg, prompt, n)
    assert len({tuple(g.tokens) for g in gens}) == 3
    # A row does not depend on the other rows: alone, or among other prompts.
    alone = M.generate(
        params, cfg, prompts[1:2], jax.random.key(5), max_new_tokens=n, temperature=0
    )
    assert alone[0].tokens == gens[1].tokens
    others = _prompts(5, [30, 2, 5, 12, 1])
    mixed = M.generate(
        params, cfg, [*others, prompts[2]], jax.random.key(0), max_new_tokens=n, temperature=0
    )
    assert mixed[-1].tokens == gens[2].tokens
    for prompt, gen in zip(others[1:], mixed[1:-1], strict=True):
        assert gen.tokens == _greedy_reference(params, cfg, prompt, n)


def test_chunked_prefill_gives_the_same_tokens(monkeypatch):
    """Long prompts in big batches prefill in row chunks (bounded attention-score memory);
    forcing one row per chunk changes nothing."""
    cfg = CODEGEN
    params = _params(cfg)
    prompts = _prompts(4, [3, 17, 9])
    kw = dict(max_new_tokens=10, temperature=0.9, top_p=0.9)
    whole = M.generate(params, cfg, prompts, jax.random.key(0), **kw)
    monkeypatch.setattr(M, "PREFILL_SCORE_ELEMENTS", 1)
    chunked = M.generate(params, cfg, prompts, jax.random.key(0), **kw)
    assert chunked == whole


def test_stop_tokens_per_row():
    cfg = CODEGEN
    params = _params(cfg)
    prompts = _prompts(6, [4, 8])
    full = M.generate(params, cfg, prompts, jax.random.key(0), max_new_tokens=12, temperature=0)
    stop_tok = full[0].tokens[5]
    k = full[0].tokens.index(stop_tok)
    gens = M.generate(
        params,
        cfg,
        prompts,
        jax.random.key(0),
        max_new_tokens=12,
        temperature=0,
        stop_token_ids=[stop_tok, 10_000],
    )
    assert gens[0] == M.Generation(full[0].tokens[:k], "stop")
    if stop_tok in full[1].tokens:
        k1 = full[1].tokens.index(stop_tok)
        assert gens[1] == M.Generation(full[1].tokens[:k1], "stop")
    else:
        assert gens[1] == full[1]
    # Stop on the very first token.
    first = M.generate(
        params,
        cfg,
        prompts[:1],
        jax.random.key(0),
        max_new_tokens=12,
        temperature=0,
        stop_token_ids=[full[0].tokens[0]],
    )
    assert first[0] == M.Generation([], "stop")


def test_sampling_deterministic_and_row_independent():
    cfg = GPT2
    params = _params(cfg)
    prompts = _prompts(7, [5, 13, 6])
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95)
    a = M.generate(params, cfg, prompts, jax.random.key(1), **kw)
    b = M.generate(params, cfg, prompts, jax.random.key(1), **kw)
    c = M.generate(params, cfg, prompts, jax.random.key(2), **kw)
    assert a == b
    assert a != c
    # Row 0 keeps its sample whatever follows it in the batch.
    d = M.generate(params, cfg, [prompts[0], *_prompts(8, [16, 1, 4])], jax.random.key(1), **kw)
    assert d[0] == a[0]
    # A nucleus smaller than the top token is greedy decoding.
    g = M.generate(params, cfg, prompts, jax.random.key(3), max_new_tokens=16, temperature=0)
    tiny = M.generate(
        params, cfg, prompts, jax.random.key(3), max_new_tokens=16, temperature=0.7, top_p=1e-6
    )
    assert g == tiny


def test_top_p_keeps_the_nucleus():
    logits = jnp.log(jnp.asarray([[0.05, 0.5, 0.15, 0.3]] * 4000))
    keys = jax.random.split(jax.random.key(0), 4000)
    toks = np.asarray(
        M._sample(
            logits,
            keys,
            jnp.int32(0),
            jnp.float32(1.0),
            jnp.float32(0.7),
            greedy=False,
            use_top_p=True,
        )
    )
    assert set(np.unique(toks)) == {1, 3}  # 0.5 + 0.3 >= 0.7: the nucleus is {1, 3}
    np.testing.assert_allclose(np.mean(toks == 1), 0.5 / 0.8, atol=0.03)
    plain = np.asarray(
        M._sample(
            logits,
            keys,
            jnp.int32(0),
            jnp.float32(1.0),
            jnp.float32(1.0),
            greedy=False,
            use_top_p=False,
        )
    )
    np.testing.assert_allclose(
        np.bincount(plain, minlength=4) / 4000, [0.05, 0.5, 0.15, 0.3], atol=0.03
    )


def test_generate_does_not_recompile_for_similar_prompts():
    cfg = M.ModelConfig(vocab_size=211, n_ctx=96, d_model=32, n_layer=1, n_head=4)
    params = _params(cfg)
    kw = dict(max_new_tokens=7, temperature=0.8, top_p=0.9, stop_token_ids=[3])
    M.generate(params, cfg, _prompts(9, [20, 25, 30]), jax.random.key(0), **kw)
    before = M._generate_padded._cache_size()
    # Other prompts, lengths in the same bucket (17..32), batch 3 -> 4 in the same bucket,
    # other key, temperature, top_p and stop ids: no new compilation.
    M.generate(
        params,
        cfg,
        _prompts(10, [31, 18, 22, 29]),
        jax.random.key(1),
        max_new_tokens=7,
        temperature=0.5,
        top_p=0.8,
        stop_token_ids=[3, 4, 5],
    )
    assert M._generate_padded._cache_size() == before
    # A longer prompt bucket is one new program.
    M.generate(params, cfg, _prompts(11, [40]), jax.random.key(1), **kw)
    assert M._generate_padded._cache_size() == before + 1
    assert [M.bucket_length(n) for n in (1, 16, 17, 100, 300, 513, 800, 1100)] == [
        16,
        16,
        32,
        128,
        512,
        768,
        1024,
        1280,
    ]
    assert [M.bucket_batch(n) for n in (1, 3, 8, 9)] == [1, 4, 8, 16]


def test_generate_errors():
    params = M.init_params(GPT2, jax.random.key(0))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        M.generate(params, GPT2, [[1, 2], []], jax.random.key(0), max_new_tokens=4)
    with pytest.raises(ValueError, match="n_ctx=96"):
        M.generate(params, GPT2, [[1] * 90], jax.random.key(0), max_new_tokens=10)
    with pytest.raises(ValueError, match="top_p"):
        M.generate(params, GPT2, [[1]], jax.random.key(0), max_new_tokens=4, top_p=0.0)
    assert M.generate(params, GPT2, [], jax.random.key(0)) == []


# ----------------------------------------------------------------------------- save / load


def _tokenizer():
    from jelm.lm.tokenizer import Tokenizer

    texts = ["def make_walker():\n    wc = walker_creator()\n    return wc.get_walker()\n"] * 20
    return Tokenizer.train(texts, vocab_size=300)


def test_save_load_round_trip(tmp_path):
    tok = _tokenizer()
    cfg = M.ModelConfig(**{**CODEGEN.to_dict(), "vocab_size": tok.vocab_size})
    params = M.init_params(cfg, jax.random.key(0))
    M.save_model(tmp_path / "m", params, cfg, tok)
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {
        "config.json",
        "tokenizer.json",
        "params",
    }
    p2, cfg2, tok2 = M.load_model(tmp_path / "m")
    assert cfg2 == cfg
    assert jax.tree_util.tree_structure(p2) == jax.tree_util.tree_structure(params)
    for x, y in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(p2), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    text = "def make_walker():"
    assert tok2.encode(text) == tok.encode(text)
    # Saving again over the same directory replaces the params.
    params3 = M.init_params(cfg, jax.random.key(1))
    M.save_model(tmp_path / "m", params3, cfg, tok)
    p3, _, _ = M.load_model(tmp_path / "m")
    np.testing.assert_array_equal(
        np.asarray(p3["wte"]["embedding"]), np.asarray(params3["wte"]["embedding"])
    )


def test_load_errors_name_the_path_and_problem(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(M.ModelLoadError, match=r"nope.*does not exist"):
        M.load_model(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(M.ModelLoadError, match=r"config.json is missing"):
        M.load_model(empty)

    tok = _tokenizer()
    cfg = M.ModelConfig(**{**GPT2.to_dict(), "vocab_size": tok.vocab_size})
    params = M.init_params(cfg, jax.random.key(0))
    good = tmp_path / "good"
    M.save_model(good, params, cfg, tok)

    (good / "config.json").write_text("{not json")
    with pytest.raises(M.ModelLoadError, match=r"config.json is not valid JSON"):
        M.load_model(good)
    (good / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(M.ModelLoadError, match="load_hf"):
        M.load_model(good)
    # Another configuration's shapes: named, not an orbax traceback.
    (good / "config.json").write_text(json.dumps({**cfg.to_dict(), "d_model": 64}))
    with pytest.raises(M.ModelLoadError, match=r"params.*another configuration"):
        M.load_model(good)
    (good / "config.json").write_text(json.dumps(cfg.to_dict()))
    M.load_model(good)  # intact again

    (good / "tokenizer.json").write_text("garbage")
    with pytest.raises(M.ModelLoadError, match=r"tokenizer.json is not a readable tokenizer"):
        M.load_model(good)
    tok.save(good / "tokenizer.json")

    # Damaged checkpoint: every data file truncated.
    for f in (good / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and f.name != "_CHECKPOINT_METADATA":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with pytest.raises(M.ModelLoadError, match="params"):
        M.load_model(good)
    import shutil

    shutil.rmtree(good / "params")
    with pytest.raises(M.ModelLoadError, match=r"params.*missing"):
        M.load_model(good)
