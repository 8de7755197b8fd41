"""jelm.lm.hf.export: tiny random jelm GPT-2 and CodeGen models (tied head with a bias,
untied, without a bias) written by ``save_hf`` read back exactly with ``load_hf`` and run
in transformers with the same logits and greedy generations.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jelm.lm import hf  # noqa: E402
from jelm.lm import model as M  # noqa: E402
from jelm.lm.sampling import generate  # noqa: E402
from jelm.lm.tokenizer import Tokenizer  # noqa: E402
from tests.lm.hf.common import SAMPLE_TEXT, jelm_logits, torch_logits  # noqa: E402


def _jelm_model(config: M.ModelConfig, seed: int = 5) -> M.Params:
    """Tiny random jelm params for ``config``, weights scaled up like ``_hf_model`` (so
    greedy decoding is not trivial; biases, LayerNorms and a tied head's bias get noise)."""
    params = M.init_params(config, jax.random.key(seed))
    noise = iter(jax.random.split(jax.random.key(seed + 1), 64))

    def scale(path, a):
        name = jax.tree_util.keystr(path)
        if a.ndim == 2:
            return a * (4.0 if "wte" in name or "wpe" in name else 8.0)
        return a + 0.1 * jax.random.normal(next(noise), a.shape)

    return jax.tree_util.tree_map_with_path(scale, params)


def _jelm_gpt2(vocab: int) -> tuple[M.Params, M.ModelConfig]:
    """A tiny random jelm GPT-2."""
    config = M.ModelConfig(vocab_size=vocab, n_ctx=128, d_model=64, n_layer=2, n_head=4)
    return _jelm_model(config), config


def _codegen_config(vocab: int, *, tied: bool, bias: bool = True) -> M.ModelConfig:
    """A tiny jelm config of the CodeGen layout (head_dim 16, rotary on 8 of it)."""
    return M.ModelConfig(
        vocab_size=vocab,
        n_ctx=128,
        d_model=64,
        n_layer=2,
        n_head=4,
        rotary_dim=8,
        parallel_residual=True,
        tie_embeddings=tied,
        lm_head_bias=bias,
        qkv_bias=False,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tok):
    """(directory, params, config, tokenizer) of a jelm GPT-2 written by save_hf."""
    params, config = _jelm_gpt2(tok.vocab_size)
    d = tmp_path_factory.mktemp("exported")
    hf.save_hf(d, params, config, tok)
    return d, params, config, tok


def _assert_round_trip(d: Path, params: M.Params, config: M.ModelConfig, tok) -> Tokenizer:
    """``save_hf``'s directory has the checkpoint and tokenizer files, and ``load_hf`` reads
    back the same config, exactly the same params and an equivalent tokenizer (returned)."""
    assert {p.name for p in d.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    loaded, cfg, tokenizer = hf.load_hf(d)
    assert cfg == config
    _assert_same_params(params, loaded)
    assert tokenizer.encode(SAMPLE_TEXT) == tok.encode(SAMPLE_TEXT)
    return tokenizer


def test_save_hf_round_trip(exported):
    d, params, config, tok = exported
    tokenizer = _assert_round_trip(d, params, config, tok)
    assert tokenizer.eos_id == tok.eos_id == 0
    raw = json.loads((d / "config.json").read_text())
    assert raw["model_type"] == "gpt2" and raw["activation_function"] == "gelu_new"
    assert raw["bos_token_id"] == raw["eos_token_id"] == tok.eos_id
    assert (raw["n_positions"], raw["n_embd"], raw["n_layer"], raw["n_head"]) == (128, 64, 2, 4)
    # transformers' own tokenizer loader reads it, with EOS and padding set.
    auto = transformers.AutoTokenizer.from_pretrained(d, local_files_only=True)
    assert auto.eos_token == "<|endoftext|>" and auto.eos_token_id == tok.eos_id
    assert auto.pad_token_id == tok.pad_id
    assert auto.encode(SAMPLE_TEXT, add_special_tokens=False) == tok.encode(SAMPLE_TEXT)


def _assert_greedy_matches(model, params: M.Params, config: M.ModelConfig, tok) -> None:
    """transformers' greedy ``generate`` on a left-padded batch of three prompts writes the
    same 16 tokens per row as jelm's ``generate`` (and not a constant token)."""
    prompts = [tok.encode(t) for t in ("def make_walker():", "    j0 = wc.add_joint(0", "the")]
    n = 16
    gens = generate(params, config, prompts, jax.random.key(0), max_new_tokens=n, temperature=0)
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts])
    am = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=am,
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tok.pad_id,
        )
    refs = out[:, width:].tolist()
    assert [g.tokens for g in gens] == refs
    assert all(len(set(r)) >= 3 for r in refs), refs


@pytest.mark.slow
def test_save_hf_runs_in_transformers(exported):
    """GPT2LMHeadModel.from_pretrained on the export: logits within 1e-4 of jelm's forward
    (left padding included) and the same greedy continuation as jelm's generate."""
    d, params, config, tok = exported
    model = transformers.GPT2LMHeadModel.from_pretrained(d, local_files_only=True).eval()
    _assert_logits_match(model, params, config, tok.vocab_size, seed=5)
    _assert_greedy_matches(model, params, config, tok)


def _assert_same_params(a: M.Params, b: M.Params) -> None:
    """The same tree paths and exactly the same arrays."""
    flat_a = jax.tree_util.tree_leaves_with_path(a)
    flat_b = jax.tree_util.tree_leaves_with_path(b)
    assert [k for k, _ in flat_a] == [k for k, _ in flat_b]
    for (k, x), (_, y) in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(k))


def _assert_logits_match(model, params, config, vocab: int, seed: int) -> None:
    """torch ``model`` and jelm's forward agree within 1e-4 on left-padded random tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (3, 24)).astype(np.int32)
    mask = np.ones((3, 24), bool)
    mask[1, :7] = False
    mask[2, :19] = False
    ref = torch_logits(model, tokens, mask)
    ours = jelm_logits(params, config, tokens, mask)
    diff = np.abs(np.asarray(ours) - ref)[mask]
    assert diff.max() < 1e-4, diff.max()
    assert np.abs(ref).max() > 1.0


def test_codegen_qkv_weight_inverts_qkv_kernel():
    d = 64
    rng = np.random.default_rng(2)
    w = rng.normal(size=(3 * d, d)).astype(np.float32)
    np.testing.assert_array_equal(hf.codegen_qkv_weight(hf.codegen_qkv_kernel(w)), w)
    kernel = rng.normal(size=(d, 3 * d)).astype(np.float32)
    np.testing.assert_array_equal(hf.codegen_qkv_kernel(hf.codegen_qkv_weight(kernel)), kernel)
    # Shard 1's value block (rows 3L+L .. 3L+2L) holds v features L .. 2L, which are
    # kernel columns 2D+L .. 2D+2L.
    local = d // 4
    np.testing.assert_array_equal(
        hf.codegen_qkv_weight(kernel)[4 * local : 5 * local],
        kernel[:, 2 * d + local : 2 * d + 2 * local].T,
    )


@pytest.fixture(scope="module", params=["tied", pytest.param("untied", marks=pytest.mark.slow)])
def exported_codegen(request, tmp_path_factory, tok):
    """(directory, params, config, tokenizer) of a jelm CodeGen (with a head bias, tied or
    untied) written by save_hf."""
    config = _codegen_config(tok.vocab_size, tied=request.param == "tied")
    params = _jelm_model(config)
    d = tmp_path_factory.mktemp(f"exported_codegen_{request.param}")
    hf.save_hf(d, params, config, tok)
    return d, params, config, tok


def test_save_hf_codegen_round_trip(exported_codegen):
    from safetensors.numpy import load_file

    d, params, config, tok = exported_codegen
    _assert_round_trip(d, params, config, tok)
    raw = json.loads((d / "config.json").read_text())
    assert raw["model_type"] == "codegen" and raw["architectures"] == ["CodeGenForCausalLM"]
    assert (raw["n_positions"], raw["n_ctx"], raw["n_embd"], raw["n_layer"]) == (128, 128, 64, 2)
    assert (raw["n_head"], raw["rotary_dim"], raw["activation_function"]) == (4, 8, "gelu_new")
    assert raw["tie_word_embeddings"] is config.tie_embeddings
    assert raw["bos_token_id"] == raw["eos_token_id"] == tok.eos_id
    tensors = load_file(d / "model.safetensors")
    assert {"lm_head.weight", "lm_head.bias"} <= set(tensors)
    assert not any("wpe" in k or "ln_2" in k or "attn.c_" in k for k in tensors)
    if config.tie_embeddings:
        np.testing.assert_array_equal(tensors["lm_head.weight"], tensors["transformer.wte.weight"])
        np.testing.assert_array_equal(tensors["lm_head.bias"], np.asarray(params["lm_head_bias"]))
    else:
        np.testing.assert_array_equal(
            tensors["lm_head.weight"], np.asarray(params["lm_head"]["kernel"]).T
        )
    auto = transformers.AutoTokenizer.from_pretrained(d, local_files_only=True)
    assert auto.eos_token_id == tok.eos_id and auto.pad_token_id == tok.pad_id


@pytest.mark.slow
def test_save_hf_codegen_runs_in_transformers(exported_codegen):
    """AutoModelForCausalLM on the export is a CodeGenForCausalLM with every tensor read
    from the file: logits within 1e-4 of jelm's forward (left padding included) and the
    same greedy continuations as jelm's generate, in a left-padded batch."""
    d, params, config, tok = exported_codegen
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        d, local_files_only=True, output_loading_info=True
    )
    model.eval()
    assert isinstance(model, transformers.CodeGenForCausalLM)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    shared = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert shared is config.tie_embeddings
    _assert_logits_match(model, params, config, tok.vocab_size, seed=7)
    _assert_greedy_matches(model, params, config, tok)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_save_hf_codegen_without_head_bias(tmp_path, tok, tied):
    """CodeGenForCausalLM's lm_head always has a bias: a jelm model without one is written
    with zeros, runs the same in transformers, and reads back with a zero bias."""
    config = _codegen_config(tok.vocab_size, tied=tied, bias=False)
    params = _jelm_model(config, seed=11)
    hf.save_hf(tmp_path, params, config, tok)
    model, info = transformers.CodeGenForCausalLM.from_pretrained(
        tmp_path, local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not model.lm_head.bias.detach().numpy().any()
    _assert_logits_match(model.eval(), params, config, tok.vocab_size, seed=8)
    loaded, cfg = hf.load_hf_params(tmp_path)
    assert cfg == dataclasses.replace(config, lm_head_bias=True)
    bias = loaded.pop("lm_head_bias") if tied else loaded["lm_head"].pop("bias")
    np.testing.assert_array_equal(np.asarray(bias), np.zeros(config.vocab_size, np.float32))
    _assert_same_params(params, loaded)


@pytest.mark.slow
def test_save_hf_refuses_other_architectures(tmp_path, tok):
    # Rotary positions with GPT-2's sequential residual: neither layout.
    hybrid = M.ModelConfig(
        vocab_size=tok.vocab_size,
        n_ctx=64,
        d_model=32,
        n_layer=1,
        n_head=4,
        rotary_dim=8,
        parallel_residual=False,
        tie_embeddings=False,
        lm_head_bias=True,
        qkv_bias=False,
    )
    params = M.init_params(hybrid, jax.random.key(0))
    out = tmp_path / "hybrid"
    with pytest.raises(
        ValueError,
        match=r"not a GPT-2, CodeGen or Llama.*as GPT-2 it has rotary_dim=8.*"
        r"as CodeGen it has parallel_residual=False.*as Llama it has norm='layer'",
    ):
        hf.save_hf(out, params, hybrid, tok)
    assert not out.exists()  # refused before writing anything
    # CodeGen's 4-shard qkv layout needs d_model divisible by 4 (head_dim 10, rotary 8).
    odd = dataclasses.replace(hybrid, d_model=30, n_head=3, parallel_residual=True)
    with pytest.raises(ValueError, match=r"as CodeGen it has d_model=30 .*multiple of 4"):
        hf.save_hf(out, M.init_params(odd, jax.random.key(0)), odd, tok)
    # GPT-2 learned positions but CodeGen's parallel residual and bias-free attention.
    gpt2ish = M.ModelConfig(
        vocab_size=tok.vocab_size,
        n_ctx=64,
        d_model=32,
        n_layer=1,
        n_head=4,
        parallel_residual=True,
        qkv_bias=False,
    )
    with pytest.raises(ValueError, match=r"parallel_residual=True.*as CodeGen it has rotary_dim=0"):
        hf.save_hf(out, M.init_params(gpt2ish, jax.random.key(0)), gpt2ish, tok)
    assert not out.exists()
    # The per-family converters refuse the other family.
    gpt2 = M.ModelConfig(vocab_size=tok.vocab_size, n_ctx=64, d_model=32, n_layer=1, n_head=4)
    codegen = _codegen_config(tok.vocab_size, tied=False)
    with pytest.raises(ValueError, match=r"only CodeGen-architecture.*rotary_dim=0"):
        hf.codegen_state_dict(M.init_params(gpt2, jax.random.key(0)), gpt2)
    with pytest.raises(ValueError, match=r"only GPT-2-architecture.*rotary_dim=8"):
        hf.gpt2_state_dict(M.init_params(codegen, jax.random.key(0)), codegen)
    # Wrong shapes and a too-large tokenizer, for both families.
    wrong = M.init_params(dataclasses.replace(gpt2, n_layer=2), jax.random.key(0))
    with pytest.raises(ValueError, match="do not have the shapes"):
        hf.save_hf(out, wrong, gpt2, tok)
    untied = M.init_params(codegen, jax.random.key(0))
    tied = dataclasses.replace(codegen, tie_embeddings=True)
    with pytest.raises(ValueError, match="do not have the shapes"):
        hf.save_hf(out, untied, tied, tok)
    for cfg in (gpt2, codegen):
        small = dataclasses.replace(cfg, vocab_size=100)
        with pytest.raises(ValueError, match="tokenizer has"):
            hf.save_hf(out, M.init_params(small, jax.random.key(0)), small, tok)
    assert not out.exists()
