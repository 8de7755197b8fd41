"""jelm.lm.hf.load: local Hugging Face Llama and Qwen2 checkpoints in jelm's Flax model.

As for GPT-2 and CodeGen (test_load.py), the references are the real torch models from
transformers built from a random init (no downloads): tiny ``LlamaForCausalLM`` and
``Qwen2ForCausalLM`` with grouped-query attention, tied and untied heads, Llama's bias
flags, Qwen2's q/k/v biases and each rope scaling jelm implements, saved with
``save_pretrained(safe_serialization=True)`` beside a small tokenizer, loaded with
``load_hf`` and compared with torch on logits (left padding included) and on greedy
generation token for token (jelm's left-padded batch against transformers, one prompt at a
time and left-padded).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jelm.lm import hf  # noqa: E402
from jelm.lm.backends import make_backend  # noqa: E402
from jelm.lm.checkpoint import ModelLoadError  # noqa: E402
from jelm.lm.sampling import generate  # noqa: E402
from tests.lm.hf.common import jelm_logits, torch_logits  # noqa: E402

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
    "rope_theta": 500.0,
}
#: name -> (model_type, config overrides). Defaults: d 64, 2 layers, 4 heads, 2 KV heads.
CASES = {
    "llama": ("llama", {}),
    "llama_tied_biases": (
        "llama",
        dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True, num_key_value_heads=1),
    ),
    "llama_mha_head_dim": ("llama", dict(num_key_value_heads=4, head_dim=24)),
    "qwen2": ("qwen2", {}),
    "qwen2_tied": ("qwen2", dict(tie_word_embeddings=True)),
    "llama_linear": ("llama", dict(rope_parameters={"rope_type": "linear", "factor": 4.0})),
    "llama_dynamic": ("llama", dict(rope_parameters={"rope_type": "dynamic", "factor": 4.0})),
    "llama_llama3": ("llama", dict(rope_parameters=LLAMA3)),
    "qwen2_yarn": (
        "qwen2",
        dict(
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32,
                "rope_theta": 1e6,
            }
        ),
    ),
}


def _hf_model(model_type: str, vocab: int, **overrides):
    """A tiny random torch model; weights scaled up so greedy decoding is not trivial."""
    kw = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    kw.update(overrides)
    if model_type == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(4.0 if name.endswith("embed_tokens.weight") else 8.0)
            else:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _save(directory, model, tok) -> None:
    """``model`` and the test tokenizer as a ``save_pretrained`` directory."""
    tok.save(directory / "tokenizer.json")
    transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), eos_token="<|endoftext|>"
    ).save_pretrained(directory)
    model.save_pretrained(directory, safe_serialization=True)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tok):
    """case -> (directory, torch model) for every case of :data:`CASES`."""
    out = {}
    for name, (model_type, overrides) in CASES.items():
        torch.manual_seed(0)
        d = tmp_path_factory.mktemp(name)
        model = _hf_model(model_type, tok.vocab_size, **overrides)
        _save(d, model, tok)
        out[name] = (d, model)
    return out


def _logit_diff(model, params, config, vocab: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Max |jelm - torch| over the real positions of a left-padded random batch of 40
    tokens (past the llama3/yarn ``original_max_position_embeddings`` of 32), and both."""
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, vocab, (3, 40)).astype(np.int32)
    mask = np.ones((3, 40), bool)
    mask[1, :9] = False  # left padding
    mask[2, :30] = False
    ref = torch_logits(model, tokens, mask)
    out = jelm_logits(params, config, tokens, mask)
    out = np.asarray(out)
    return float(np.abs(out - ref)[mask].max()), out[mask], ref[mask]


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_torch(checkpoints, tok, case):
    d, model = checkpoints[case]
    params, config = hf.load_hf_params(d)
    model_type, overrides = CASES[case]
    n_kv = overrides.get("num_key_value_heads", 2)
    assert config.vocab_size == tok.vocab_size and config.n_ctx == 128
    assert (config.norm, config.mlp, config.rotary_style) == ("rms", "gated", "neox")
    assert config.kv_heads == n_kv and config.n_kv_head == (None if n_kv == 4 else n_kv)
    assert config.head_dim == overrides.get("head_dim", 16) == config.rotary_dim
    assert config.tie_embeddings == overrides.get("tie_word_embeddings", False)
    assert not config.parallel_residual and config.activation == "silu"
    if model_type == "qwen2":
        assert config.qkv_bias and not config.attn_out_bias and not config.mlp_bias
    else:
        bias = overrides.get("attention_bias", False)
        assert config.qkv_bias == config.attn_out_bias == bias
        assert config.mlp_bias == overrides.get("mlp_bias", False)
    # The fused qkv kernel: H query heads, then n_kv key heads and n_kv value heads.
    assert params["h_0"]["attn"]["qkv"]["kernel"].shape == (64, (4 + 2 * n_kv) * config.head_dim)
    diff, _, ref = _logit_diff(model, params, config, tok.vocab_size)
    assert diff < 1e-4, diff
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero logits
    rope = overrides.get("rope_parameters")
    if rope is not None:
        assert config.rope_scaling.kind == rope["rope_type"]
        assert config.rope_theta == rope.get("rope_theta", 10000.0)
        # The scaling matters here (except dynamic, a no-op within the trained context).
        plain = dataclasses.replace(config, rope_scaling=None)
        _, unscaled, _ = _logit_diff(model, params, plain, tok.vocab_size)
        gap = np.abs(unscaled - ref).max()
        assert gap < 1e-4 if rope["rope_type"] == "dynamic" else gap > 1e-2, gap
    else:
        assert config.rope_scaling is None and config.rope_theta == 10000.0


def _greedy_refs(model, prompts, n):
    """transformers' greedy tokens for each prompt alone."""
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
    return refs


@pytest.mark.parametrize(
    "case",
    [
        "llama",
        "qwen2",
        pytest.param("llama_llama3", marks=pytest.mark.slow),
        pytest.param("llama_tied_biases", marks=pytest.mark.slow),
        pytest.param("qwen2_yarn", marks=pytest.mark.slow),
        pytest.param("llama_linear", marks=pytest.mark.slow),
    ],
)
def test_greedy_generation_matches_transformers(checkpoints, tok, case):
    """jelm's generate on a left-padded batch of prompts of different lengths writes the
    tokens transformers writes for each prompt alone, and for the left-padded batch."""
    d, model = checkpoints[case]
    params, config, tokenizer = hf.load_hf(d)
    texts = ("def make_walker():\n    wc = walker_creator()", "    wc.add_muscle(j0", "the")
    prompts = [tokenizer.encode(t) for t in texts]
    assert len({len(p) for p in prompts}) == 3
    n = 12
    ours = generate(params, config, prompts, jax.random.key(0), max_new_tokens=n, temperature=0)
    refs = _greedy_refs(model, prompts, n)
    assert [g.tokens for g in ours] == refs
    assert all(len(set(r)) >= 3 for r in refs), refs  # not a repeat-one-token model
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


def test_hf_backend_samples_a_llama(checkpoints, tok):
    """The ``hf`` backend kind loads a Llama directory and completes with its greedy tokens."""
    d, model = checkpoints["llama"]
    backend = make_backend({"kind": "hf", "path": str(d)})
    prompt = "def make_walker():"
    (c,) = backend.complete([prompt], max_new_tokens=8, temperature=0.0)
    (ref,) = _greedy_refs(model, [tok.encode(prompt)], 8)
    if tok.eos_id in ref:
        ref = ref[: ref.index(tok.eos_id)]
    assert c.error is None and c.text == tok.decode(ref)


def _edit_config(src, dst, **changes) -> None:
    """A copy of checkpoint ``src`` in ``dst`` with config.json keys changed (``None``
    removes a key)."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    raw = json.loads((src / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    (dst / "config.json").write_text(json.dumps(raw))


def test_legacy_rope_keys(checkpoints, tmp_path):
    """A config.json of older transformers (``rope_theta`` and ``rope_scaling`` with
    ``type``) reads as the same config as transformers 5's ``rope_parameters``."""
    d, _ = checkpoints["llama_llama3"]
    _, want = hf.load_hf_params(d)
    legacy = {k: v for k, v in LLAMA3.items() if k not in ("rope_type", "rope_theta")}
    _edit_config(
        d,
        tmp_path / "legacy",
        rope_parameters=None,
        rope_theta=500.0,
        rope_scaling={"type": "llama3", **legacy},
    )
    _, got = hf.load_hf_params(tmp_path / "legacy")
    assert got == want


def test_unsupported_options_are_refused(checkpoints, tmp_path):
    d, _ = checkpoints["llama"]
    longrope = {
        "rope_type": "longrope",
        "short_factor": [1.0] * 8,
        "long_factor": [2.0] * 8,
        "original_max_position_embeddings": 64,
        "factor": 2.0,
        "rope_theta": 10000.0,
    }
    _edit_config(d, tmp_path / "longrope", rope_parameters=longrope)
    with pytest.raises(ModelLoadError, match=r"rope scaling 'longrope' is not supported"):
        hf.load_hf(tmp_path / "longrope")
    # Qwen2's sliding window: refused when it is shorter than the context on some layer.
    q, _ = checkpoints["qwen2"]
    _edit_config(
        q,
        tmp_path / "sliding",
        use_sliding_window=True,
        sliding_window=16,
        max_window_layers=1,
        layer_types=None,
    )
    with pytest.raises(
        ModelLoadError, match=r"use_sliding_window=True .*16 tokens on layers \[1\]"
    ):
        hf.load_hf_params(tmp_path / "sliding")
    # ... and ignored when it cannot matter: a window as long as the context, or none used.
    _, want = hf.load_hf_params(q)
    for name, changes in (
        ("long_window", dict(sliding_window=128, max_window_layers=0)),
        ("all_full", dict(sliding_window=16, max_window_layers=2)),
        ("off", dict(use_sliding_window=False, sliding_window=16, max_window_layers=0)),
    ):
        _edit_config(
            q, tmp_path / name, **{"use_sliding_window": True, "layer_types": None, **changes}
        )
        assert hf.load_hf_params(tmp_path / name)[1] == want
    # Other decoder families are not read as Llama.
    _edit_config(d, tmp_path / "mistral", model_type="mistral")
    with pytest.raises(ModelLoadError, match=r"'mistral' is not supported.*'llama', 'qwen2'"):
        hf.load_hf(tmp_path / "mistral")
