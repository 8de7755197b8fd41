"""``jelm serve``: any :class:`~jelm.lm.backends.Backend` behind an OpenAI-compatible API.

ELM (Lehman et al. 2022, §3.1) spends most of its compute sampling diffs. Serving jelm's
diff model over HTTP lets other processes, other machines and off-the-shelf clients (the
``openai`` package, ``jelm.lm.backends.OpenAIBackend``) share one model:

- ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``;
- ``POST /v1/completions`` (``prompt``: a string or a list of strings) and
  ``POST /v1/chat/completions`` with ``max_tokens``, ``temperature``, ``top_p``, ``stop``,
  ``seed``, ``n``; ``stream: true`` answers with server-sent events (the completion is
  computed whole, then sent as one content chunk and a finish chunk);
- errors are OpenAI-shaped JSON: 400 for a bad request, 404 for an unknown route or model,
  413 for an oversized body, 500 (with the model's message) when sampling fails.

Requests that arrive together are micro-batched: handler threads put their prompts on a
queue, and one batching thread waits ``batch_window_s`` after the first prompt for more (up
to ``max_batch``), groups them by sampling parameters and makes one ``backend.complete``
call per group, which a :class:`~jelm.lm.backends.JelmBackend` samples as one padded batch
on the device. The batching thread is also the only caller of the backend, so backends
need not be thread-safe.

The standard library's ``ThreadingHTTPServer`` is enough here: requests are small JSON
bodies, the work is in the model, and it adds no dependency.
"""

from __future__ import annotations

import json
import queue
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jelm.lm.backends import Backend, Completion

#: Largest request body accepted (bytes).
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Largest ``n`` (choices per prompt) accepted.
MAX_N = 16
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


class BadRequest(Exception):
    """A request the server refuses, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.type = type_


# --------------------------------------------------------------------------------------
# micro-batching
# --------------------------------------------------------------------------------------


class _Job:
    __slots__ = ("future", "group", "payload")

    def __init__(self, group: tuple, payload: Any) -> None:
        self.group = group
        self.payload = payload
        self.future: Future[Completion] = Future()


class MicroBatcher:
    """Collects prompts from concurrent requests into batched backend calls.

    ``submit`` queues one job per prompt and returns futures. The batching thread takes the
    first queued job, keeps taking jobs until ``window_s`` has passed or ``max_batch`` jobs
    are in hand, then calls the backend once per group of jobs with equal parameters
    (``kind`` complete/chat, max_tokens, temperature, top_p, stop, seed). Requests without
    a seed share a fresh random seed per call. ``calls`` and ``batch_sizes`` count what
    reached the backend.
    """

    def __init__(self, backend: Backend, *, max_batch: int = 32, window_s: float = 0.01) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError(f"need max_batch >= 1 and window_s >= 0, got {max_batch}, {window_s}")
        self.backend = backend
        self.max_batch = int(max_batch)
        self.window_s = float(window_s)
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._rng = random.Random()
        self._thread = threading.Thread(target=self._run, name="jelm-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, payloads: Sequence[Any], params: Mapping[str, Any]) -> list[Future]:
        """Queue prompts (``kind="complete"``) or chats (``kind="chat"``) sharing ``params``
        (max_new_tokens, temperature, top_p, stop, seed-or-None); one future per payload."""
        group = (
            kind,
            int(params["max_new_tokens"]),
            float(params["temperature"]),
            float(params["top_p"]),
            tuple(params["stop"]),
            params["seed"],
        )
        jobs = [_Job(group, p) for p in payloads]
        for job in jobs:
            self._queue.put(job)
        return [job.future for job in jobs]

    def close(self) -> None:
        """Stop the batching thread (jobs still queued fail with ``RuntimeError``)."""
        self._queue.put(None)
        self._thread.join(timeout=30)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.future.done():
                job.future.set_exception(RuntimeError("server shutting down"))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            deadline = time.monotonic() + self.window_s
            stop = False
            while len(jobs) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else (self._queue.get_nowait())
                    )
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.group, []).append(job)
            for group, members in groups.items():
                self._call(group, members)
            if stop:
                return

    def _call(self, group: tuple, jobs: list[_Job]) -> None:
        kind, max_new, temperature, top_p, stop, seed = group
        if seed is None:
            seed = self._rng.randrange(2**31)
        self.calls += 1
        self.batch_sizes.append(len(jobs))
        fn = self.backend.chat if kind == "chat" else self.backend.complete
        try:
            results = fn(
                [j.payload for j in jobs],
                max_new_tokens=max_new,
                temperature=temperature,
                top_p=top_p,
                stop=stop,
                seed=seed,
            )
            if len(results) != len(jobs):
                raise RuntimeError(
                    f"backend returned {len(results)} completions for {len(jobs)} prompts"
                )
        except Exception as exc:
            for j in jobs:
                j.future.set_exception(exc)
            return
        for j, r in zip(jobs, results, strict=True):
            j.future.set_result(r)


# --------------------------------------------------------------------------------------
# request parsing
# --------------------------------------------------------------------------------------


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be a number in [{lo}, {hi}], got {value!r}", param=key)
    return float(value)


def _integer(
    body: Mapping[str, Any], key: str, default: int | None, lo: int, hi: int
) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"'{key}' must be an integer in [{lo}, {hi}], got {value!r}", param=key)
    return value


def _sampling_params(body: Mapping[str, Any], default_max_tokens: int) -> dict[str, Any]:
    """max_tokens, temperature, top_p, stop, seed, n from an OpenAI request body."""
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    max_tokens = _integer(
        {"max_tokens": max_tokens}, "max_tokens", default_max_tokens, 1, 1_000_000
    )
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stop = tuple(s for s in stop if s)
    else:
        raise BadRequest("'stop' must be a string or a list of strings", param="stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"'seed' must be an integer, got {seed!r}", param="seed")
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None:
        raise BadRequest("logprobs are not supported by jelm serve", param="logprobs")
    return {
        "max_new_tokens": max_tokens,
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0),
        "stop": stop,
        "seed": None if seed is None else int(seed) % 2**63,
        "n": _integer(body, "n", 1, 1, MAX_N),
    }


def _prompts(body: Mapping[str, Any]) -> list[str]:
    if "prompt" not in body:
        raise BadRequest("you must provide a 'prompt'", param="prompt")
    prompt = body["prompt"]
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise BadRequest("token-id prompts are not supported; send text", param="prompt")
    raise BadRequest("'prompt' must be a string or a non-empty list of strings", param="prompt")


def _messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise BadRequest(
                f"messages[{i}] must be an object with a 'role' in {sorted(_ROLES)}",
                param=f"messages[{i}]",
            )
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise BadRequest(
                    f"messages[{i}].content: only text parts are supported",
                    param=f"messages[{i}].content",
                )
            content = "".join(str(p.get("text", "")) for p in content)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise BadRequest(
                f"messages[{i}].content must be a string", param=f"messages[{i}].content"
            )
        out.append({"role": m["role"], "content": content})
    return out


# --------------------------------------------------------------------------------------
# the HTTP server
# --------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    app: Server

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer are normal; anything else is worth a line.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            print(f"jelm serve: error handling {client_address}: {exc!r}", file=sys.stderr)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    server_version = "jelm"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.verbose:
            super().log_message(format, *args)

    # ---- answers ----------------------------------------------------------------------

    def _send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, exc: BadRequest) -> None:
        self._send_json(
            exc.status,
            {
                "error": {
                    "message": str(exc),
                    "type": exc.type,
                    "param": exc.param,
                    "code": exc.code,
                }
            },
        )

    def _send_events(self, events: list[Any]) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for e in events:
            self.wfile.write(f"data: {json.dumps(e)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # ---- routes -----------------------------------------------------------------------

    def do_GET(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [app.model_card()]})
            elif path.startswith("/v1/models/"):
                app.check_model(path[len("/v1/models/") :])
                self._send_json(200, app.model_card())
            elif path == "/health":
                self._send_json(200, {"status": "ok", "model": app.model_id})
            else:
                raise BadRequest(f"unknown route GET {path}", status=404, code="not_found")
        except BadRequest as exc:
            self._send_error(exc)

    def do_POST(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_json()
            if path == "/v1/completions":
                self._answer(app.completions(body), body)
            elif path == "/v1/chat/completions":
                self._answer(app.chat_completions(body), body)
            else:
                raise BadRequest(f"unknown route POST {path}", status=404, code="not_found")
        except BadRequest as exc:
            self._send_error(exc)

    def _answer(self, result: tuple[dict, list[dict]], body: Mapping[str, Any]) -> None:
        response, events = result
        if body.get("stream"):
            self._send_events(events)
        else:
            self._send_json(200, response)

    def _read_json(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            self.close_connection = True
            raise BadRequest("a Content-Length header is required", status=411)
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise BadRequest(f"bad Content-Length {length!r}") from None
        if n < 0 or n > MAX_BODY_BYTES:
            self.close_connection = True
            raise BadRequest(f"request body over {MAX_BODY_BYTES} bytes", status=413)
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body


class Server:
    """An OpenAI-compatible HTTP server for one backend.

    ``Server(backend, port=0)`` binds at once (port 0 picks a free port, see ``url``);
    ``start()`` serves from a background thread (tests), ``serve_forever()`` in the
    calling thread (``jelm serve``); ``close()`` stops both and the batcher. ``model_id``
    (default ``backend.name``) is the one model ``/v1/models`` lists and requests must
    name (or omit). Without ``max_tokens`` a completion gets ``default_max_tokens`` (16,
    as in the OpenAI API) and a chat ``default_chat_max_tokens``.
    """

    def __init__(
        self,
        backend: Backend,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        model_id: str | None = None,
        max_batch: int = 32,
        batch_window_s: float = 0.01,
        default_max_tokens: int = 16,
        default_chat_max_tokens: int = 256,
        verbose: bool = False,
    ) -> None:
        self.backend = backend
        self.model_id = model_id or getattr(backend, "name", "jelm")
        self.default_max_tokens = int(default_max_tokens)
        self.default_chat_max_tokens = int(default_chat_max_tokens)
        self.verbose = verbose
        self.created = int(time.time())
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        self.httpd = cls((host, port), _Handler)
        self.httpd.app = self
        self.host = host
        self.port = int(self.httpd.server_address[1])
        self.batcher = MicroBatcher(backend, max_batch=max_batch, window_s=batch_window_s)
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``http://host:port`` (the OpenAI base URL is this plus ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Server:
        """Serve from a daemon thread; returns ``self``."""
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="jelm-serve", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``close()`` (or Ctrl-C in ``serve``)."""
        self.httpd.serve_forever()

    def close(self) -> None:
        """Stop serving, close the socket and stop the batcher."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=30)
        self.httpd.server_close()
        self.batcher.close()

    def __enter__(self) -> Server:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- API logic (called from handler threads) ----------------------------------------

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "jelm"}

    def check_model(self, model: Any) -> None:
        """404 unless ``model`` is this server's model (a missing model means this one)."""
        if model is None:
            return
        if model != self.model_id:
            raise BadRequest(
                f"the model '{model}' does not exist; this server serves '{self.model_id}'",
                status=404,
                param="model",
                code="model_not_found",
            )

    def _run(self, kind: str, payloads: list[Any], params: dict[str, Any]) -> list[Completion]:
        n = params.pop("n")
        futures = self.batcher.submit(kind, [p for p in payloads for _ in range(n)], params)
        results = []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as exc:
                raise BadRequest(
                    f"the model failed: {type(exc).__name__}: {exc}",
                    status=500,
                    type_="server_error",
                ) from None
        for c in results:
            if c.error is not None:
                raise BadRequest(f"the model failed: {c.error}", status=500, type_="server_error")
        return results

    @staticmethod
    def _usage(results: list[Completion], n: int) -> dict[str, int]:
        prompt = sum(c.prompt_tokens for c in results[::n])
        completion = sum(c.tokens for c in results)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def completions(self, body: Mapping[str, Any]) -> tuple[dict, list[dict]]:
        """``/v1/completions``: the response object and the stream events."""
        self.check_model(body.get("model"))
        prompts = _prompts(body)
        params = _sampling_params(body, self.default_max_tokens)
        for key in ("echo", "suffix"):
            if body.get(key):
                raise BadRequest(f"'{key}' is not supported by jelm serve", param=key)
        best_of = body.get("best_of")
        if best_of is not None and best_of != params["n"]:
            raise BadRequest("'best_of' is not supported by jelm serve", param="best_of")
        n = params["n"]
        results = self._run("complete", prompts, params)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": self.model_id}
        choices = [
            {"text": c.text, "index": i, "logprobs": None, "finish_reason": c.finish_reason}
            for i, c in enumerate(results)
        ]
        usage = self._usage(results, n)
        events: list[dict] = []
        for ch in choices:
            events.append({**head, "choices": [{**ch, "finish_reason": None}]})
            events.append({**head, "choices": [{**ch, "text": ""}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**head, "choices": [], "usage": usage})
        return {**head, "choices": choices, "usage": usage}, events

    def chat_completions(self, body: Mapping[str, Any]) -> tuple[dict, list[dict]]:
        """``/v1/chat/completions``: the response object and the stream events."""
        self.check_model(body.get("model"))
        messages = _messages(body)
        params = _sampling_params(body, self.default_chat_max_tokens)
        n = params["n"]
        results = self._run("chat", [messages], params)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": created, "model": self.model_id}
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(results)
        ]
        usage = self._usage(results, n)
        chunk = {**head, "object": "chat.completion.chunk"}
        events: list[dict] = []
        for i, c in enumerate(results):
            delta = {"role": "assistant", "content": c.text}
            events.append(
                {**chunk, "choices": [{"index": i, "delta": delta, "finish_reason": None}]}
            )
            events.append(
                {**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": c.finish_reason}]}
            )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        response = {**head, "object": "chat.completion", "choices": choices, "usage": usage}
        return response, events


def serve(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_batch: int = 32,
    batch_window_s: float = 0.01,
    model_id: str | None = None,
    verbose: bool = False,
) -> None:
    """Serve ``backend`` until interrupted; prints one ``listening on <url>`` line to stdout
    once the socket accepts connections."""
    server = Server(
        backend,
        host,
        port,
        model_id=model_id,
        max_batch=max_batch,
        batch_window_s=batch_window_s,
        verbose=verbose,
    )
    print(
        f"jelm serve: model {server.model_id} listening on {server.url} "
        f"(OpenAI base URL {server.url}/v1)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
