"""jelm.lm.hf.export: tiny random jelm models of the Llama layout (untied, grouped-query,
MLP biases, llama3 rope scaling; and Qwen2's: tied, q/k/v biases only, one KV head, YaRN)
written by ``save_hf`` as Llama checkpoints, read back with ``load_hf`` and run in
transformers with the same logits and greedy generations.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jelm.lm import hf  # noqa: E402
from jelm.lm import model as M  # noqa: E402
from tests.lm.hf.common import SAMPLE_TEXT  # noqa: E402
from tests.lm.hf.test_export import (  # noqa: E402
    _assert_greedy_matches,
    _assert_logits_match,
    _assert_round_trip,
    _assert_same_params,
    _jelm_model,
)


def _llama_config(vocab: int, family: str) -> M.ModelConfig:
    """A tiny jelm config of the Llama layout: d 64, 4 heads of 16, rotary on all of them."""
    common = dict(
        vocab_size=vocab,
        n_ctx=128,
        d_model=64,
        n_layer=2,
        n_head=4,
        d_ff=96,
        rotary_dim=16,
        activation="silu",
        norm="rms",
        mlp="gated",
        rotary_style="neox",
    )
    if family == "llama":
        return M.ModelConfig(
            **common,
            n_kv_head=2,
            tie_embeddings=False,
            qkv_bias=False,
            mlp_bias=True,
            rope_theta=500.0,
            rope_scaling=M.RopeScaling("llama3", factor=8.0, original_n_ctx=32),
        )
    return M.ModelConfig(
        **common,
        n_kv_head=1,
        tie_embeddings=True,
        qkv_bias=True,
        out_bias=False,
        mlp_bias=False,
        rope_scaling=M.RopeScaling("yarn", factor=4.0, original_n_ctx=32),
    )


@pytest.fixture(scope="module", params=["llama", pytest.param("qwen2", marks=pytest.mark.slow)])
def exported_llama(request, tmp_path_factory, tok):
    """(directory, params, config, tokenizer, family) of a jelm Llama-layout model written
    by save_hf."""
    config = _llama_config(tok.vocab_size, request.param)
    params = _jelm_model(config, seed=3)
    d = tmp_path_factory.mktemp(f"exported_{request.param}")
    hf.save_hf(d, params, config, tok)
    return d, params, config, tok, request.param


def test_save_hf_llama_round_trip_and_runs_in_transformers(exported_llama):
    """load_hf reads the export back (exactly, but for a zero output bias where the model
    has q/k/v biases only); AutoModelForCausalLM reads every tensor and agrees with jelm on
    logits (within 1e-4, left padding included) and greedy tokens."""
    d, params, config, tok, family = exported_llama
    raw = json.loads((d / "config.json").read_text())
    assert raw["model_type"] == "llama" and raw["architectures"] == ["LlamaForCausalLM"]
    assert raw["num_key_value_heads"] == config.kv_heads and raw["head_dim"] == 16
    assert raw["rope_parameters"]["rope_type"] == config.rope_scaling.kind
    assert raw["attention_bias"] is (family == "qwen2") and raw["mlp_bias"] is config.mlp_bias
    if family == "llama":
        _assert_round_trip(d, params, config, tok)
    else:
        loaded, cfg, tokenizer = hf.load_hf(d)
        assert cfg == dataclasses.replace(config, out_bias=None)
        assert tokenizer.encode(SAMPLE_TEXT) == tok.encode(SAMPLE_TEXT)
        for i in range(config.n_layer):
            bias = loaded[f"h_{i}"]["attn"]["out"].pop("bias")
            np.testing.assert_array_equal(np.asarray(bias), np.zeros(64, np.float32))
        _assert_same_params(params, loaded)
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        d, local_files_only=True, output_loading_info=True
    )
    model.eval()
    assert isinstance(model, transformers.LlamaForCausalLM)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    shared = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert shared is config.tie_embeddings
    _assert_logits_match(model, params, config, tok.vocab_size, seed=9)
    _assert_greedy_matches(model, params, config, tok)


def test_llama_export_problems(tok):
    """The Llama layout (with any biases), with the reason for each thing it is not."""
    llama = _llama_config(tok.vocab_size, "llama")
    assert hf.llama_export_problems(llama) == []
    assert hf.llama_export_problems(_llama_config(tok.vocab_size, "qwen2")) == []
    for change, match in (
        (dict(norm="layer"), "norm='layer'"),
        (dict(mlp="plain"), "mlp='plain'"),
        (dict(parallel_residual=True), "parallel_residual=True"),
        (dict(rotary_dim=8), "rotary_dim=8"),
        (dict(rotary_style="gptj"), "rotary_style='gptj'"),
        (dict(lm_head_bias=True), "lm_head_bias=True"),
    ):
        problems = hf.llama_export_problems(dataclasses.replace(llama, **change))
        assert len(problems) == 1 and problems[0].startswith(match), (change, problems)
    # Neither GPT-2 nor CodeGen takes a Llama-family option.
    codegen = M.ModelConfig(
        vocab_size=tok.vocab_size,
        n_ctx=64,
        d_model=32,
        n_layer=1,
        n_head=4,
        rotary_dim=8,
        parallel_residual=True,
        qkv_bias=False,
    )
    assert hf.codegen_export_problems(codegen) == []
    for change, match in (
        (dict(n_kv_head=2), "n_kv_head=2"),
        (dict(mlp="gated"), "mlp='gated'"),
        (dict(norm="rms"), "norm='rms'"),
        (dict(rotary_style="neox"), "rotary_style='neox'"),
        (dict(rope_theta=500.0), "rope_theta=500.0"),
        (dict(rope_scaling=M.RopeScaling("linear", 2.0)), "rope_scaling='linear'"),
        (dict(mlp_bias=False), "mlp_bias=False"),
        (dict(d_head=16), "d_head=16"),
    ):
        problems = hf.codegen_export_problems(dataclasses.replace(codegen, **change))
        assert len(problems) == 1 and problems[0].startswith(match), (change, problems)
    with pytest.raises(ValueError, match=r"only Llama-architecture.*norm='layer'"):
        hf.llama_state_dict({}, codegen)
