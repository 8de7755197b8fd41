"""Continuous batching in jelm serve: prompts of requests that arrive while others sample
join the running rows, each is answered as soon as it finishes, and every answer is the
one the backend gives the request alone (a real tiny jelm model, a real HTTP server)."""

from __future__ import annotations

import threading

import httpx
import pytest

from jelm.lm.backends import JelmBackend
from jelm.lm.serve import ContinuousBatcher, Server
from tests.lm_fixtures import make_tiny_model

TEXTS = ["def make_walker():\n    wc = walker_creator()\n", "the quick brown fox " * 3]
PROMPTS = ["the quick", "def make_walker", "wc =", "fox jumps", "brown", "walker"]
PARAMS = {"max_new_tokens": 12, "temperature": 0.9, "top_p": 0.95, "stop": ()}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    path = make_tiny_model(
        tmp_path_factory.mktemp("tiny"), seed=2, n_ctx=64, vocab_size=300, texts=TEXTS
    )
    return JelmBackend.from_dir(path, max_batch=8)


class Gated:
    """The real backend, whose first stream holds its first ``run`` until ``go`` is set:
    the prompts submitted meanwhile must join that stream."""

    def __init__(self, inner: JelmBackend) -> None:
        self.inner, self.name = inner, inner.name
        self.go = threading.Event()
        self.streams = 0

    def render_chat(self, messages):
        return self.inner.render_chat(messages)

    def stream(self, **kw):
        real = self.inner.stream(**kw)
        self.streams += 1
        gate = self.go if self.streams == 1 else None

        class Stream:
            busy = property(lambda _: real.busy)
            add = staticmethod(real.add)

            def run(self, max_steps=None):
                if gate is not None:
                    gate.wait(timeout=60)
                return real.run(max_steps)

        return Stream()


@pytest.mark.slow
def test_prompts_join_the_running_stream_and_get_their_own_answers(backend):
    gated = Gated(backend)
    batcher = ContinuousBatcher(gated, poll_steps=2)
    try:
        first = batcher.submit("complete", PROMPTS[:1], {**PARAMS, "seed": 3})
        while gated.streams == 0:  # the first prompt is sampling (held at the gate)
            threading.Event().wait(0.01)
        later = batcher.submit("complete", PROMPTS[1:], {**PARAMS, "seed": 3})
        other = batcher.submit("complete", PROMPTS[:1], {**PARAMS, "seed": 3, "top_p": 0.5})
        gated.go.set()
        got = [f.result(timeout=120) for f in first + later]
        held = other[0].result(timeout=120)
    finally:
        batcher.close()
    assert batcher.joined == len(PROMPTS) - 1
    assert gated.streams == 2  # other settings waited for a stream of their own
    # each prompt's answer is its own: prompt i of a request with seed 3, alone
    alone = [backend.complete([p], **{**PARAMS, "seed": 3})[0] for p in PROMPTS[:1]]
    alone += [
        backend.complete(PROMPTS[1:], **{**PARAMS, "seed": 3})[i] for i in range(len(PROMPTS) - 1)
    ]
    assert [c.text for c in got] == [c.text for c in alone]
    assert held.text == backend.complete(PROMPTS[:1], **{**PARAMS, "seed": 3, "top_p": 0.5})[0].text


@pytest.mark.slow
def test_concurrent_http_requests_are_answered_as_alone(backend):
    """Eight concurrent clients on localhost get, seeded, what the backend gives each
    request alone (greedy and sampled), through the server's continuous batcher."""
    with pytest.raises(ValueError, match="continuous batching needs"):
        Server(object(), port=0, continuous=True)
    with Server(backend, port=0, continuous=True) as server:
        assert isinstance(server.batcher, ContinuousBatcher)
        n = 8
        barrier = threading.Barrier(n)
        results: list = [None] * n

        def one(i: int) -> None:
            barrier.wait()
            body = {
                "prompt": PROMPTS[i % len(PROMPTS)],
                "max_tokens": 16,
                "temperature": 0.0 if i % 2 else 0.8,
                "seed": i,
            }
            r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
            results[i] = r.json()["choices"][0]["text"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    for i in range(n):
        kw = dict(max_new_tokens=16, temperature=0.0 if i % 2 else 0.8, top_p=1.0, seed=i)
        (alone,) = backend.complete([PROMPTS[i % len(PROMPTS)]], **kw)
        assert results[i] == alone.text, i


@pytest.mark.slow  # like the other benches' end-to-end runs; the HTTP test above stays
def test_serve_bench_counts_the_tokens_of_every_request(tmp_path):
    """`python -m jelm.lm.serve.bench` drives a real server with official OpenAI clients."""
    from jelm.lm.serve.bench import main

    path = make_tiny_model(tmp_path / "m", seed=3, n_ctx=2048, vocab_size=300, texts=TEXTS)
    out = main(
        [
            "--model",
            str(path),
            "--clients",
            "1",
            "2",
            "--requests",
            "3",
            "--max-tokens",
            "8",
            "--modes",
            "continuous",
        ]
    )
    runs = out["runs"]
    assert [(r["mode"], r["clients"], r["requests"]) for r in runs] == [
        ("continuous", 1, 3),
        ("continuous", 2, 3),
    ]
    for r in runs:
        assert 3 <= r["tokens"] <= 3 * 8 and r["tokens_per_s"] > 0
