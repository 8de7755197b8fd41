"""jelm.lm.backends: JelmBackend on a real tiny model, make_backend, and OpenAIBackend's
retries, backoff, rate limit and timeouts against a real misbehaving HTTP server."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jax.numpy as jnp
import pytest

from jelm.lm.backends import (
    SHIPPED_DIR,
    Completion,
    JelmBackend,
    OpenAIBackend,
    RateLimiter,
    make_backend,
    render_chat_plain,
)
from jelm.lm.model import ModelConfig, ModelLoadError, load_model
from jelm.lm.tokenizer import Tokenizer
from tests.lm_fixtures import make_tiny_model

TEXTS = [
    "<NME> walker.py\n<BEF> def make_walker():\n    wc = walker_creator()\n",
    "<MSG> Changed make_walker function.\n<DFF> --- walker.py\n+++ walker.py\n",
    "@@ -1,3 +1,3 @@\n-    j0 = wc.add_joint(0, 0)\n+    j0 = wc.add_joint(1, 0)\n",
    "the quick brown fox jumps over the lazy dog " * 3,
]


# --------------------------------------------------------------------------------------
# a real tiny jelm model
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    return make_tiny_model(path, seed=0, n_ctx=64, vocab_size=300, texts=TEXTS)


@pytest.fixture(scope="module")
def backend(model_dir):
    return JelmBackend.from_dir(model_dir, max_batch=4)


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


def test_jelm_backend_stop_tokens_and_stop_strings(backend, model_dir):
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
    params, config, _ = load_model(model_dir)
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


def test_make_backend(model_dir):
    b = make_backend({"kind": "jelm", "path": str(model_dir), "max_batch": 2})
    assert isinstance(b, JelmBackend) and b.max_batch == 2 and b.name.startswith("jelm:")
    o = make_backend({"kind": "openai", "base_url": "http://127.0.0.1:9", "model": "m"})
    assert isinstance(o, OpenAIBackend) and o.base_url == "http://127.0.0.1:9/v1"
    o.close()
    for spec, words in [
        ({"kind": "nope"}, "kind"),
        ({"path": "x"}, "kind"),
        ({"kind": "openai", "model": "m"}, "base_url"),
        ({"kind": "openai", "base_url": "http://x/v1"}, "model"),
        ({"kind": "jelm"}, "path"),
        ({"kind": "hf", "path": ""}, "path"),
        ({"kind": "jelm", "path": "shipped", "temperature": 1}, "temperature"),
        ({"kind": "openai", "base_url": "ftp://x", "model": "m"}, "http"),
        ("jelm", "mapping"),
    ]:
        with pytest.raises(ValueError, match=words):
            make_backend(spec)
    if not (SHIPPED_DIR / "config.json").is_file():
        with pytest.raises(FileNotFoundError, match="shipped"):
            make_backend({"kind": "jelm", "path": "shipped"})
    with pytest.raises(ModelLoadError, match="does not exist"):
        make_backend({"kind": "jelm", "path": str(model_dir / "nothing-here")})


# --------------------------------------------------------------------------------------
# a misbehaving OpenAI-compatible server
# --------------------------------------------------------------------------------------


class FlakyServer:
    """Answers /v1/completions and /v1/chat/completions according to the prompt:

    ``ok...``: 200 at once; ``429...``: 429 with Retry-After 1, then 200; ``500x2...``:
    500 twice, then 200; ``sleep...``: sleeps 3 s before answering; ``close...``: closes the
    connection without answering once, then 200; ``closeall...``: always closes;
    ``bad...``: 400; ``garbage...``: 200 with a non-JSON body; ``stop...``: the text has a
    stop word in it. Records every attempt (time, headers, body) per prompt.
    """

    def __init__(self) -> None:
        self.attempts: dict[str, list[tuple[float, dict, dict]]] = defaultdict(list)
        self.lock = threading.Lock()
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                chat = self.path.endswith("/chat/completions")
                prompt = body["messages"][-1]["content"] if chat else body["prompt"]
                with flaky.lock:
                    flaky.attempts[prompt].append((time.monotonic(), dict(self.headers), body))
                    n = len(flaky.attempts[prompt])
                if prompt.startswith("429") and n == 1:
                    return self.reply(
                        429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}
                    )
                if prompt.startswith("500x2") and n <= 2:
                    return self.reply(500, {"error": {"message": "oops"}})
                if prompt.startswith("sleep"):
                    time.sleep(3)
                if prompt.startswith("closeall") or (prompt.startswith("close") and n == 1):
                    self.close_connection = True
                    return None
                if prompt.startswith("bad"):
                    return self.reply(400, {"error": {"message": "bad prompt"}})
                if prompt.startswith("garbage"):
                    return self.reply(200, None)
                text = f"re:{prompt} STOP tail" if prompt.startswith("stop") else f"re:{prompt}"
                choice = (
                    {"index": 0, "message": {"role": "assistant", "content": text}}
                    if chat
                    else {"index": 0, "text": text}
                )
                choice["finish_reason"] = "length"
                usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
                return self.reply(200, {"choices": [choice], "usage": usage})

            def reply(self, status, obj, headers=()):
                data = b"<html>not json" if obj is None else json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    for k, v in dict(headers).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout tests)
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def times(self, prompt: str) -> list[float]:
        return [t for t, _, _ in self.attempts[prompt]]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def flaky():
    server = FlakyServer()
    yield server
    server.close()


def test_openai_backend_retries_and_backoff(flaky):
    prompts = ["ok-1", "429-1", "500x2-1", "close-1", "bad-1", "garbage-1", "closeall-1", "ok-2"]
    with OpenAIBackend(
        flaky.url, "m", concurrency=8, timeout_s=5, max_retries=2, backoff_s=0.2
    ) as b:
        t0 = time.monotonic()
        out = b.complete(prompts, max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3)
        elapsed = time.monotonic() - t0
    by = dict(zip(prompts, out, strict=True))
    for p in ("ok-1", "ok-2", "429-1", "500x2-1", "close-1"):
        assert by[p] == Completion(f"re:{p}", "length", 5, prompt_tokens=3), p
    attempts = {p: len(flaky.attempts[p]) for p in prompts}
    assert attempts == {
        "ok-1": 1,
        "ok-2": 1,
        "429-1": 2,
        "500x2-1": 3,
        "close-1": 2,
        "bad-1": 1,  # 400 is not retried
        "garbage-1": 1,  # nor a malformed answer
        "closeall-1": 3,  # 1 + max_retries
    }
    for p in ("bad-1", "garbage-1", "closeall-1"):
        assert by[p].finish_reason == "error" and by[p].text == "" and by[p].tokens == 0
    assert by["bad-1"].error == "HTTPStatusError: 400 from /completions: bad prompt"
    assert by["garbage-1"].error.startswith("ResponseError: not JSON")
    assert by["closeall-1"].error.startswith("RemoteProtocolError:")
    # Retry-After honoured: about 1 s, not the 0.1-0.2 s exponential backoff
    t = flaky.times("429-1")
    assert 0.95 <= t[1] - t[0] < 2.0
    # exponential backoff with jitter in [0.5, 1]: 0.1-0.2 s, then 0.2-0.4 s
    t = flaky.times("500x2-1")
    assert 0.1 <= t[1] - t[0] < 0.2 + 0.5
    assert 0.2 <= t[2] - t[1] < 0.4 + 0.5
    assert elapsed < 4.0
    # the request body is the OpenAI completions request
    body = flaky.attempts["ok-1"][0][2]
    assert body == {
        "model": "m",
        "prompt": "ok-1",
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "n": 1,
    }


def test_openai_backend_timeouts_do_not_hang(flaky):
    with OpenAIBackend(flaky.url, "m", timeout_s=0.5, max_retries=1, backoff_s=0.05) as b:
        t0 = time.monotonic()
        (c,) = b.complete(["sleep-1"])
        elapsed = time.monotonic() - t0
    assert c.finish_reason == "error" and c.error.startswith("ReadTimeout")
    assert len(flaky.attempts["sleep-1"]) == 2
    assert 1.0 <= elapsed < 2.0  # two 0.5 s attempts and a short backoff, not the 3 s sleep


def test_openai_backend_rate_limit(flaky):
    prompts = [f"ok-r{i}" for i in range(8)]
    with OpenAIBackend(
        flaky.url, "m", concurrency=8, requests_per_minute=600, burst=1
    ) as b:  # 10 requests a second
        t0 = time.monotonic()
        out = b.complete(prompts)
        elapsed = time.monotonic() - t0
    assert [c.text for c in out] == [f"re:{p}" for p in prompts]
    arrivals = sorted(flaky.times(p)[0] for p in prompts)
    assert elapsed >= 0.7  # the first request is free, then one every 0.1 s
    assert arrivals[-1] - arrivals[0] >= 0.6
    assert elapsed < 3.0
    # the bucket itself: a burst of 3 passes at once, then 20 a second
    limiter = RateLimiter(20.0, burst=3)
    t0 = time.monotonic()
    waits = [limiter.acquire() for _ in range(7)]
    assert waits[:3] == [0.0, 0.0, 0.0] and all(w > 0 for w in waits[3:])
    assert 0.19 <= time.monotonic() - t0 < 0.6


def test_openai_backend_chat_stop_and_api_key(flaky, monkeypatch):
    monkeypatch.setenv("JELM_TEST_KEY", "sekrit")
    base = flaky.url.removesuffix("/v1")  # a bare host:port gets /v1
    with OpenAIBackend(
        base, "m", endpoint="chat", system="you write diffs", api_key_env="JELM_TEST_KEY"
    ) as b:
        (c,) = b.complete(["stop-1"], stop=["STOP"])
        (d,) = b.chat([[{"role": "user", "content": "ok-chat"}]])
    assert c.text == "re:stop-1 " and c.finish_reason == "stop"
    assert d.text == "re:ok-chat" and d.finish_reason == "length"
    _, headers, body = flaky.attempts["stop-1"][0]
    assert headers["Authorization"] == "Bearer sekrit"
    assert body["messages"] == [
        {"role": "system", "content": "you write diffs"},
        {"role": "user", "content": "stop-1"},
    ]
    assert body["stop"] == ["STOP"]
    monkeypatch.delenv("JELM_TEST_KEY")
    with OpenAIBackend(flaky.url, "m", api_key_env="JELM_TEST_KEY") as b:  # no key: no header
        assert b.complete(["ok-nokey"])[0].ok
    assert "Authorization" not in flaky.attempts["ok-nokey"][0][1]


def test_openai_backend_unreachable_server_is_an_error_completion():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_s=0.01) as b:
        out = b.complete(["a", "b"])
    assert [c.finish_reason for c in out] == ["error", "error"]
    assert all(c.error.startswith("ConnectError") for c in out)


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
