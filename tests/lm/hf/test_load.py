"""jelm.lm.hf.load: local Hugging Face GPT-2 / CodeGen checkpoints in jelm's Flax model
(Llama and Qwen2: test_load_llama.py).

The references are the real torch models from transformers, built from a random init here
(no downloads): a tiny GPT2LMHeadModel and CodeGenForCausalLM (tied and untied) are saved
with ``save_pretrained(safe_serialization=True)`` beside a small tokenizer, loaded with
``load_hf``, and compared with torch on logits (left padding included) and on greedy
generation token for token.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jelm.lm import hf  # noqa: E402
from jelm.lm.checkpoint import ModelLoadError  # noqa: E402
from jelm.lm.sampling import Generation, generate  # noqa: E402
from tests.lm.hf.common import jelm_logits, torch_logits  # noqa: E402


def _hf_model(arch: str, vocab: int):
    """A tiny random torch model; weights scaled up so greedy decoding is not trivial."""
    common = dict(
        vocab_size=vocab,
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
    )
    if arch == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**common))
    else:
        cfg = transformers.CodeGenConfig(
            **common, n_ctx=128, rotary_dim=8, tie_word_embeddings=arch == "codegen_tied"
        )
        model = transformers.CodeGenForCausalLM(cfg)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(4.0 if name.endswith(("wte.weight", "wpe.weight")) else 8.0)
            else:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tok):
    """arch -> (directory, torch model, jelm tokenizer) for gpt2, codegen, codegen_tied."""
    torch.manual_seed(0)
    out = {}
    for arch in ("gpt2", "codegen", "codegen_tied"):
        d = tmp_path_factory.mktemp(arch)
        tok.save(d / "tokenizer.json")
        hf_tok = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(d / "tokenizer.json"), eos_token="<|endoftext|>"
        )
        hf_tok.save_pretrained(d)
        model = _hf_model(arch, tok.vocab_size)
        model.save_pretrained(d, safe_serialization=True)
        out[arch] = (d, model, tok)
    return out


@pytest.mark.parametrize("arch", ["gpt2", "codegen", "codegen_tied"])
def test_logits_match_torch(checkpoints, arch):
    d, model, tok = checkpoints[arch]
    params, config, tokenizer = hf.load_hf(d)
    assert config.vocab_size == tok.vocab_size and config.n_ctx == 128
    if arch == "gpt2":
        assert config.rotary_dim == 0 and config.tie_embeddings and config.qkv_bias
    else:
        assert config.rotary_dim == 8 and config.parallel_residual and not config.qkv_bias
        assert config.tie_embeddings == (arch == "codegen_tied") and config.lm_head_bias
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, tok.vocab_size, (3, 24)).astype(np.int32)
    mask = np.ones((3, 24), bool)
    mask[1, :9] = False  # left padding
    mask[2, :20] = False
    ref = torch_logits(model, tokens, mask)
    out = jelm_logits(params, config, tokens, mask)
    diff = np.abs(np.asarray(out) - ref)[mask]
    assert diff.max() < 1e-4, diff.max()
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero logits
    text = "def make_walker():"
    assert tokenizer.encode(text) == tok.encode(text)


@pytest.mark.parametrize(
    "arch",
    [pytest.param("gpt2", marks=pytest.mark.slow), pytest.param("codegen", marks=pytest.mark.slow)],
)
def test_greedy_generation_matches_transformers(checkpoints, arch):
    d, model, tok = checkpoints[arch]
    params, config, _ = hf.load_hf(d)
    prompts = [tok.encode(t) for t in ("def make_walker():", "    wc.add_muscle(j0", "the")]
    n = 12
    ours = generate(params, config, prompts, jax.random.key(0), max_new_tokens=n, temperature=0)
    refs = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        refs.append(out[0, len(prompt) :].tolist())
    assert [g.tokens for g in ours] == refs
    assert all(len(set(r)) >= 3 for r in refs)  # not a degenerate repeat-one-token model
    # transformers' own left-padded batch agrees too.
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    am = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        batch = model.generate(
            ids,
            attention_mask=am,
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert batch[:, width:].tolist() == refs
    # A stop token: transformers emits it and stops; jelm stops and leaves it out.
    stop = refs[0][4]
    k = refs[0].index(stop)
    (g,) = generate(
        params,
        config,
        prompts[:1],
        jax.random.key(0),
        max_new_tokens=n,
        temperature=0,
        stop_token_ids=[stop],
    )
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompts[0]]),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=0,
        )
    assert out[0, len(prompts[0]) :].tolist()[: k + 1] == [*g.tokens, stop]
    assert g == Generation(refs[0][:k], "stop")


def test_codegen_qkv_split_matches_transformers():
    """The mp_num=4 interleaved (q, v, k) layout, checked on the projection itself."""
    d = 64
    w = np.random.default_rng(0).normal(size=(3 * d, d)).astype(np.float32)
    x = np.random.default_rng(1).normal(size=(5, d)).astype(np.float32)
    # transformers: qkv.view(..., mp_num, 3 * local); query, value, key = split(local)
    qkv = (x @ w.T).reshape(5, 4, 3 * d // 4)
    local = d // 4
    q_ref = qkv[..., :local].reshape(5, d)
    v_ref = qkv[..., local : 2 * local].reshape(5, d)
    k_ref = qkv[..., 2 * local :].reshape(5, d)
    ours = x @ hf.codegen_qkv_kernel(w)
    np.testing.assert_allclose(ours[:, :d], q_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[:, d : 2 * d], k_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[:, 2 * d :], v_ref, rtol=1e-5, atol=1e-5)


def test_sharded_checkpoint(checkpoints, tmp_path):
    d, model, tok = checkpoints["codegen"]
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="40KB")
    tok.save(tmp_path / "tokenizer.json")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    sharded, cfg_s = hf.load_hf_params(tmp_path)
    single, cfg_1 = hf.load_hf_params(d)
    assert cfg_s == cfg_1
    for a, b in zip(
        jax.tree_util.tree_leaves(sharded), jax.tree_util.tree_leaves(single), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_errors(checkpoints, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        hf.load_hf(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match=r"config\.json is missing"):
        hf.load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(
        ModelLoadError, match=r"'mistral' is not supported.*'gpt2', 'codegen', 'llama', 'qwen2'"
    ):
        hf.load_hf(tmp_path)

    d, model, _ = checkpoints["gpt2"]
    bad = tmp_path / "bin"
    model.save_pretrained(bad, safe_serialization=True)
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safe_serialization=True"):
        hf.load_hf(bad)

    from safetensors.numpy import load_file, save_file

    weights = load_file(d / "model.safetensors")
    name = next(k for k in weights if k.endswith("h.1.mlp.c_fc.weight"))
    save_file({k: v for k, v in weights.items() if k != name}, bad / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"h\.1\.mlp\.c_fc\.weight' is missing"):
        hf.load_hf(bad)
    save_file(
        {**weights, "transformer.h.0.attn.q_attn.weight": weights[name]}, bad / "model.safetensors"
    )
    with pytest.raises(ModelLoadError, match="unexpected tensors"):
        hf.load_hf(bad)


# --------------------------------------------------------------------------- save_hf
