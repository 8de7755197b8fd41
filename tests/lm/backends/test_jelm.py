"""jelm.lm.backends.jelm: JelmBackend on a real tiny model (kinds ``jelm`` and ``hf``):
batching, left truncation, stop tokens and strings, chat templates."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from jelm.lm.backends import Completion, JelmBackend, make_backend, render_chat_plain
from jelm.lm.checkpoint import load_model
from jelm.lm.model import ModelConfig
from jelm.lm.tokenizer import Tokenizer
from tests.lm_fixtures import BACKEND_TEXTS as TEXTS


@pytest.fixture(scope="module")
def backend(backend_model_dir):
    return JelmBackend.from_dir(backend_model_dir, max_batch=4)


@pytest.mark.slow
def test_jelm_backend_greedy_is_deterministic_and_batch_split_invariant(backend):
    prompts = [t[:30] for t in TEXTS] + ["def make_walker", "fox"]
    kw = dict(max_new_tokens=8, temperature=0.0, top_p=1.0)
    split = backend.complete(prompts, **kw)  # max_batch 4: two chunks
    assert len(split) == len(prompts)
    assert all(c.ok and c.finish_reason in ("stop", "length") for c in split)
    assert all(c.prompt_tokens > 0 and c.truncated == 0 for c in split)
    one = [backend.complete([p], **kw)[0] for p in prompts]
    assert [c.text for c in split] == [c.text for c in one]
    assert backend.complete(prompts, **kw) == split
    # sampling: seeds matter, same seed replays
    a = backend.complete(prompts[:2], max_new_tokens=8, temperature=1.0, seed=1)
    assert backend.complete(prompts[:2], max_new_tokens=8, temperature=1.0, seed=1) == a


@pytest.mark.slow
def test_jelm_backend_truncates_long_prompts_from_the_left(backend):
    long = " ".join(["the quick brown fox"] * 40)  # far more than n_ctx = 64 tokens
    n = len(backend.tokenizer.encode(long))
    (c,) = backend.complete([long], max_new_tokens=8, temperature=0.0)
    assert c.ok, c.error
    assert c.prompt_tokens == 64 - 8 and c.truncated == n - (64 - 8)
    # the kept tail is what the model saw: same result as sending the tail
    tail = backend.tokenizer.decode(backend.tokenizer.encode(long)[c.truncated :])
    assert backend.complete([tail], max_new_tokens=8, temperature=0.0)[0].text == c.text
    # max_new_tokens beyond the context is clamped, not an error
    (c,) = backend.complete(["fox"], max_new_tokens=1000, temperature=0.0)
    assert c.ok and c.tokens <= 63


@pytest.mark.slow
def test_jelm_backend_stop_tokens_and_stop_strings(backend, backend_model_dir):
    tok = backend.tokenizer
    stop = ["<NME>", "\n", "<|endoftext|>", "", "quick brown"]
    ids, host = backend.stop_token_ids(stop)
    assert ids == [tok.eos_id, tok.token_id("<NME>"), tok.token_id("\n")]
    assert tok.token_id("quick brown") is None and host == [s for s in stop if s]
    prompt = "the quick brown"
    (free,) = backend.complete([prompt], max_new_tokens=8, temperature=0.0)
    assert free.ok and free.text and free.finish_reason == "length" and free.tokens == 8
    # a host-side stop string: cut at its first occurrence, finish_reason "stop"
    piece = free.text[len(free.text) // 2 :][:2]
    (cut,) = backend.complete([prompt], max_new_tokens=8, temperature=0.0, stop=[piece])
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(piece)]
    # device-side stop tokens: a model whose output bias always picks one special token
    params, config, _ = load_model(backend_model_dir)
    biased = ModelConfig.from_dict({**config.to_dict(), "lm_head_bias": True})
    dff = tok.token_id("<DFF>")
    params = {**params, "lm_head_bias": jnp.zeros(config.vocab_size).at[dff].set(1e4)}
    b = JelmBackend(params, biased, tok)
    prompts = ["fox", "the quick brown", "wc"]
    out = b.complete(prompts, max_new_tokens=8, temperature=0.0)
    assert [(c.finish_reason, c.tokens) for c in out] == [("length", 8)] * 3
    out = b.complete(prompts, max_new_tokens=8, temperature=0.0, stop=["<DFF>"])
    assert out == [Completion("", "stop", 0, prompt_tokens=len(tok.encode(p))) for p in prompts]
    # EOS always stops, stop list or not
    eos = jnp.zeros(config.vocab_size).at[tok.eos_id].set(1e4)
    b = JelmBackend({**params, "lm_head_bias": eos}, biased, tok)
    (c,) = b.complete(["fox"], max_new_tokens=8, temperature=0.0)
    assert (c.text, c.finish_reason, c.tokens) == ("", "stop", 0)


def test_jelm_backend_chat_uses_plain_template(backend):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "fox"}]
    assert render_chat_plain(msgs) == "system: be brief\nuser: fox\nassistant:"
    (c,) = backend.chat([msgs], max_new_tokens=8, temperature=0.0)
    (d,) = backend.complete(
        [render_chat_plain(msgs)], max_new_tokens=8, temperature=0.0, stop=["\nuser:", "\nsystem:"]
    )
    assert c == d


def test_hf_backend_uses_the_chat_template(tmp_path):
    """A tiny random GPT-2 saved by transformers, loaded through make_backend("hf"): greedy
    completions match torch's, and chat renders with the tokenizer's chat template."""
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer.train(TEXTS, vocab_size=300)
    tok.save(tmp_path / "tokenizer.json")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json"), eos_token="<|endoftext|>"
    )
    hf_tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    hf_tok.save_pretrained(tmp_path)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(tmp_path)
    b = make_backend({"kind": "hf", "path": str(tmp_path)})
    assert b.name == f"hf:{tmp_path.name}"
    prompt = "the quick brown"
    (c,) = b.complete([prompt], max_new_tokens=8, temperature=0.0)
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        ref = model.generate(
            ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    ref_ids = ref[0, ids.shape[1] :].tolist()
    if tok.eos_id in ref_ids:
        ref_ids = ref_ids[: ref_ids.index(tok.eos_id)]
    assert c.text == tok.decode(ref_ids)
    msgs = [{"role": "user", "content": "fox"}]
    rendered, extra = b.render_chat(msgs)
    assert rendered == "<user>fox\n<assistant>" and extra == ()
    (chat,) = b.chat([msgs], max_new_tokens=8, temperature=0.0)
    assert chat == b.complete([rendered], max_new_tokens=8, temperature=0.0)[0]
