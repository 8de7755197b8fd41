"""The HTTP server of ``jelm serve``: routes, OpenAI-shaped answers, one backend.

The standard library's ``ThreadingHTTPServer`` is enough: requests are small JSON bodies,
the work is in the model (ELM §3.1's sampling), and it adds no dependency. Handler threads
parse requests (:mod:`jelm.lm.serve.protocol`) and wait on the batcher
(:mod:`jelm.lm.serve.batcher`), the backend's only caller: continuous batching for a model
sampled here if asked (``continuous=True``), micro-batching otherwise.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jelm.lm.backends.base import Backend, Completion
from jelm.lm.serve.batcher import ContinuousBatcher, MicroBatcher
from jelm.lm.serve.protocol import (
    BadRequest,
    chat_request,
    chat_response,
    completion_request,
    completion_response,
)

__all__ = ["MAX_BODY_BYTES", "Server", "serve"]

#: Largest request body accepted (bytes).
MAX_BODY_BYTES = 8 * 1024 * 1024


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
    calling thread (``jelm serve``); ``close()`` stops both and the batcher. Requests are
    micro-batched (``max_batch``, ``batch_window_s``); ``continuous=True`` batches them
    continuously instead (requests join the rows already sampling), for a backend with a
    ``stream`` method (a model sampled here). ``model_id``
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
        continuous: bool = False,
        default_max_tokens: int = 16,
        default_chat_max_tokens: int = 256,
        verbose: bool = False,
    ) -> None:
        if continuous and not callable(getattr(backend, "stream", None)):
            raise ValueError(
                f"continuous batching needs a model sampled here; {type(backend).__name__} "
                "has no stream()"
            )
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
        self.batcher: ContinuousBatcher | MicroBatcher = (
            ContinuousBatcher(backend)
            if continuous
            else MicroBatcher(backend, max_batch=max_batch, window_s=batch_window_s)
        )
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

    def completions(self, body: Mapping[str, Any]) -> tuple[dict, list[dict]]:
        """``/v1/completions``: the response object and the stream events."""
        self.check_model(body.get("model"))
        prompts, params = completion_request(body, self.default_max_tokens)
        n = params["n"]
        results = self._run("complete", prompts, params)
        return completion_response(results, n, self.model_id, body)

    def chat_completions(self, body: Mapping[str, Any]) -> tuple[dict, list[dict]]:
        """``/v1/chat/completions``: the response object and the stream events."""
        self.check_model(body.get("model"))
        messages, params = chat_request(body, self.default_chat_max_tokens)
        n = params["n"]
        results = self._run("chat", [messages], params)
        return chat_response(results, n, self.model_id, body)


def serve(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_batch: int = 32,
    batch_window_s: float = 0.01,
    model_id: str | None = None,
    verbose: bool = False,
    continuous: bool = False,
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
        continuous=continuous,
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
