"""jelm.lm.backends.openai: OpenAIBackend's retries, backoff, rate limit and timeouts
against a real misbehaving HTTP server on localhost, and its option checks."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jelm.lm.backends import Completion, OpenAIBackend, RateLimiter
from jelm.lm.backends.openai import option_problems


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


def test_option_problems_name_each_bad_value():
    assert option_problems({"base_url": "http://h:1/v1", "endpoint": "chat", "burst": 2}) == []
    assert option_problems({"requests_per_minute": 0, "max_retries": 0}) == []
    problems = option_problems(
        {
            "base_url": "ftp://x",
            "endpoint": "edits",
            "concurrency": 0,
            "max_retries": 1.5,
            "timeout_s": 0,
            "backoff_s": -1,
            "requests_per_minute": -5,
            "burst": 0.5,
        }
    )
    assert problems == [
        "base_url must be an http(s) URL, got 'ftp://x'",
        "endpoint must be 'completions' or 'chat', got 'edits'",
        "concurrency must be an integer >= 1, got 0",
        "max_retries must be an integer >= 0, got 1.5",
        "timeout_s must be a number > 0, got 0",
        "backoff_s must be a number >= 0, got -1",
        "requests_per_minute must be a number >= 0, got -5",
        "burst must be a number >= 1, got 0.5",
    ]
    with pytest.raises(ValueError, match=r"concurrency must be an integer >= 1.*timeout_s"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", concurrency=0, timeout_s=-1)
