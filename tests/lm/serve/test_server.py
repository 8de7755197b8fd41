"""jelm serve end to end: a real tiny jelm model behind the real HTTP server (in-process and
as the `jelm serve` subprocess), talked to by jelm's OpenAIBackend, the official `openai`
package and raw HTTP; micro-batching; OpenAI-shaped errors."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from jelm.cli import main as cli_main
from jelm.lm.backends import JelmBackend, OpenAIBackend
from jelm.lm.serve import Server
from tests.lm_fixtures import make_tiny_model

REPO = Path(__file__).resolve().parents[3]
TEXTS = [
    "<NME> walker.py\n<BEF> def make_walker():\n    wc = walker_creator()\n",
    "<MSG> Changed make_walker function.\n<DFF> --- walker.py\n+++ walker.py\n",
    "the quick brown fox jumps over the lazy dog " * 3,
]
PROMPTS = ["the quick", "def make_walker", "<NME> walker.py\n", "fox jumps", "lazy", "wc ="]
GREEDY = dict(max_new_tokens=8, temperature=0.0, top_p=1.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    return make_tiny_model(path, seed=1, n_ctx=64, vocab_size=300, texts=TEXTS)


class CountingBackend:
    """The real JelmBackend, with a count of the calls that reach it (and their sizes)."""

    def __init__(self, inner: JelmBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[int] = []

    def complete(self, prompts, **kw):
        self.calls.append(len(prompts))
        return self.inner.complete(prompts, **kw)

    def chat(self, messages_per_prompt, **kw):
        self.calls.append(len(messages_per_prompt))
        return self.inner.chat(messages_per_prompt, **kw)


@pytest.fixture(scope="module")
def backend(model_dir):
    return JelmBackend.from_dir(model_dir, max_batch=8)


@pytest.fixture(scope="module")
def expected(backend):
    """What the backend answers when called directly (greedy)."""
    chat = [[{"role": "user", "content": p}] for p in PROMPTS[:2]]
    return {
        "complete": backend.complete(PROMPTS, **GREEDY),
        "chat": backend.chat(chat, **GREEDY),
    }


@pytest.fixture(scope="module")
def server(backend):
    counting = CountingBackend(backend)
    with Server(counting, port=0, max_batch=8, batch_window_s=0.05) as s:
        yield s


def _post(url: str, body, **kw) -> httpx.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=data, headers={"Content-Type": "application/json"}, **kw)


def _read_url(proc: subprocess.Popen, timeout: float) -> str:
    """The URL from `jelm serve`'s 'listening on' line."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if "listening on" in line:
            return line.split("listening on ", 1)[1].split()[0]
    proc.kill()
    raise AssertionError(f"jelm serve did not start: {proc.stderr.read()}")


@pytest.mark.slow
def test_cli_subprocess_with_openai_backend(model_dir, expected):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "jelm.cli", "serve", "--model", str(model_dir)]
    proc = subprocess.Popen(
        [*cmd, "--port", "0", "--max-batch", "4"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _read_url(proc, timeout=60)
        models = httpx.get(f"{url}/v1/models", timeout=10).json()
        (model,) = [m["id"] for m in models["data"]]
        assert model == f"jelm:{model_dir.name}"
        with OpenAIBackend(f"{url}/v1", model, concurrency=4, timeout_s=60, max_retries=0) as b:
            got = b.complete(PROMPTS, **GREEDY)
            assert [c.text for c in got] == [c.text for c in expected["complete"]]
            assert [c.finish_reason for c in got] == [c.finish_reason for c in expected["complete"]]
            assert [c.tokens for c in got] == [c.tokens for c in expected["complete"]]
            assert [c.prompt_tokens for c in got] == [c.prompt_tokens for c in expected["complete"]]
        with OpenAIBackend(f"{url}/v1", model, endpoint="chat", max_retries=0) as b:
            got = b.complete(PROMPTS[:2], **GREEDY)
            assert [c.text for c in got] == [c.text for c in expected["chat"]]
            got = b.chat([[{"role": "user", "content": PROMPTS[0]}]], **GREEDY)
            assert got[0].text == expected["chat"][0].text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_console_script():
    script = Path(sys.executable).parent / "jelm"
    if not script.exists():
        pytest.skip("the jelm console script is not installed (pip install -e .)")
    r = subprocess.run([str(script), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--max-batch" in r.stdout and "hf:<dir>" in r.stdout


def test_cli_errors():
    assert cli_main(["serve", "--model", "/nonexistent/model"]) == 2
    with pytest.raises(SystemExit):
        cli_main(["serve", "--max-batch", "0"])
    with pytest.raises(SystemExit):
        cli_main([])


@pytest.mark.slow
def test_official_openai_client(server, expected):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    model = server.model_id
    assert [m.id for m in client.models.list()] == [model]
    r = client.completions.create(model=model, prompt=PROMPTS[0], max_tokens=8, temperature=0)
    want = expected["complete"][0]
    assert r.choices[0].text == want.text and r.choices[0].finish_reason == want.finish_reason
    assert r.model == model and r.object == "text_completion"
    assert r.usage.completion_tokens == want.tokens
    assert r.usage.prompt_tokens == want.prompt_tokens
    assert r.usage.total_tokens == want.tokens + want.prompt_tokens
    # a list of prompts, n=2 each: choices in order, greedy so both samples agree
    r = client.completions.create(model=model, prompt=PROMPTS[:2], max_tokens=8, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    texts = [c.text for c in expected["complete"][:2]]
    assert [c.text for c in r.choices] == [texts[0], texts[0], texts[1], texts[1]]
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=8,
        temperature=0,
    )
    assert r.choices[0].message.content == expected["chat"][0].text
    assert r.choices[0].message.role == "assistant" and r.object == "chat.completion"
    # streaming: server-sent events the client reassembles
    stream = client.completions.create(
        model=model, prompt=PROMPTS[0], max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == want.finish_reason
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["chat"][0].text
    assert chunks[-1].usage.completion_tokens == expected["chat"][0].tokens
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)


def test_micro_batching(server, expected):
    calls_before = len(server.backend.calls)
    n = len(PROMPTS)
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        body = {"model": server.model_id, "prompt": PROMPTS[i], "max_tokens": 8, "temperature": 0}
        results[i] = _post(f"{server.url}/v1/completions", body, timeout=60).json()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    calls = server.backend.calls[calls_before:]
    assert sum(calls) == n
    assert len(calls) < n and max(calls) > 1, calls
    texts = [r["choices"][0]["text"] for r in results]
    assert texts == [c.text for c in expected["complete"]]


def test_bad_requests_get_openai_errors(server, expected):
    url = server.url
    cases = [
        (b"{not json", "/v1/completions", 400, None),
        (b"[1, 2]", "/v1/completions", 400, None),
        ({"model": server.model_id}, "/v1/completions", 400, "prompt"),
        ({"prompt": [1, 2, 3]}, "/v1/completions", 400, "prompt"),
        ({"prompt": "x", "temperature": "hot"}, "/v1/completions", 400, "temperature"),
        ({"prompt": "x", "max_tokens": 0}, "/v1/completions", 400, "max_tokens"),
        ({"prompt": "x", "stop": [1]}, "/v1/completions", 400, "stop"),
        ({"prompt": "x", "logprobs": 2}, "/v1/completions", 400, "logprobs"),
        ({"prompt": "x", "model": "gpt-4"}, "/v1/completions", 404, "model"),
        ({"messages": []}, "/v1/chat/completions", 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "/v1/chat/completions", 400, None),
        ({"prompt": "x"}, "/v1/nothing", 404, None),
    ]
    with httpx.Client(timeout=30) as client:  # one keep-alive connection for all of them
        for body, path, status, param in cases:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            r = client.post(url + path, content=data)
            assert r.status_code == status, (body, r.text)
            err = r.json()["error"]
            assert err["message"] and err["type"] == "invalid_request_error", err
            if param:
                assert err["param"] == param, err
        r = client.get(url + "/v2/whatever")
        assert r.status_code == 404 and r.json()["error"]["message"]
        assert client.get(url + f"/v1/models/{server.model_id}").json()["id"] == server.model_id
        assert client.get(url + "/v1/models/other").status_code == 404
        # still serving, on the same connection
        r = client.post(
            url + "/v1/completions",
            json={"prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0},
        )
        assert r.status_code == 200
        assert r.json()["choices"][0]["text"] == expected["complete"][0].text


def test_model_failure_is_a_500_with_the_message():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    # a real backend that fails: a proxy to a server that is not there
    proxy = OpenAIBackend(f"http://127.0.0.1:{dead}/v1", "m", max_retries=0, name="proxy")
    with Server(proxy, port=0) as server:
        r = _post(f"{server.url}/v1/completions", {"prompt": "x"}, timeout=30)
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["type"] == "server_error" and "ConnectError" in err["message"]
        assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
    proxy.close()


def test_identical_prompts_get_distinct_seeds(backend):
    """OpenAIBackend sends seed + i with prompt i: a server that answers each request with
    its own seed (here: no batching) does not return one completion for a parent drawn
    several times, and a second call with the same seed replays the first."""
    with Server(backend, port=0, max_batch=1) as s:
        client = OpenAIBackend(s.url + "/v1", s.model_id, concurrency=2, timeout_s=30)
        with client:
            kw = dict(max_new_tokens=12, temperature=1.0, top_p=1.0, seed=7)
            first = client.complete(["def make_walker"] * 6, **kw)
            again = client.complete(["def make_walker"] * 6, **kw)
    assert all(c.error is None for c in first), first[0].error
    assert len({c.text for c in first}) > 1
    assert [c.text for c in first] == [c.text for c in again]
