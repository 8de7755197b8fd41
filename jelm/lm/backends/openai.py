"""Backend of kind ``openai``: any OpenAI-compatible HTTP server (ELM §3.1's diff model
served elsewhere: vLLM, llama.cpp, a hosted API, or ``jelm serve``).

:class:`OpenAIBackend` sends one request per prompt from a thread pool, retries
connection errors, timeouts, 408/409/429 and 5xx with exponential backoff and jitter
(honouring ``Retry-After``), keeps a client-side rate limit (:class:`RateLimiter`) and
bounds every attempt's total time.
"""

from __future__ import annotations

import email.utils
import inspect
import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jelm.lm.backends.base import BackendKind, Completion, cut_at_stop, error_completion

__all__ = [
    "OPENAI_KIND",
    "HTTPStatusError",
    "OpenAIBackend",
    "RateLimiter",
    "ResponseError",
    "TotalTimeout",
    "option_problems",
]

#: The API routes ``endpoint`` chooses between.
ENDPOINTS = ("completions", "chat")


class RateLimiter:
    """A token bucket shared by threads: ``rate`` requests a second on average, bursts of at
    most ``burst``. ``acquire`` reserves a slot and sleeps until it is due (so waiting
    threads are served in arrival order and the long-run rate never exceeds ``rate``)."""

    def __init__(self, rate_per_s: float, burst: float = 1.0) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping if the bucket is empty; returns the seconds waited."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


class _RetryableError(Exception):
    """An HTTP answer worth retrying (429, 408, 409, 5xx); ``retry_after`` from the header."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HTTPStatusError(Exception):
    """The server answered with an error status (after retries, or one not worth retrying)."""


class ResponseError(Exception):
    """The server's answer is not an OpenAI-shaped completion."""


class TotalTimeout(Exception):
    """One attempt took longer than ``timeout_s`` in total (a server trickling bytes)."""


_RETRY_STATUS = frozenset({408, 409, 429})


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    """Completions from an OpenAI-compatible server (``/v1/completions`` or
    ``/v1/chat/completions``), for users whose diff models are served by vLLM, llama.cpp,
    a hosted API or ``jelm serve``.

    ``base_url`` follows the ``openai`` client's convention and includes the API prefix
    (``http://127.0.0.1:8000/v1``); a bare ``http://host:port`` gets ``/v1`` appended.
    Prompts are sent ``concurrency`` at a time from a thread pool, each with ``n=1``.
    ``endpoint="chat"`` sends each prompt as a user message (after ``system`` if given).

    Each attempt is bounded by ``timeout_s`` (connect, each read, and the whole response).
    Connection errors, timeouts, 408/409/429 and 5xx are retried up to ``max_retries``
    times after ``backoff_s * 2**attempt`` seconds times a jitter in [0.5, 1] (at most
    ``max_backoff_s``), or the server's ``Retry-After`` when it sends one (capped at
    ``max_backoff_s``). ``requests_per_minute`` (with bursts of ``burst``) limits every
    attempt, retries included. A prompt that still fails gets an error
    :class:`Completion`; nothing raises for one prompt.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        endpoint: str = "completions",
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        requests_per_minute: float | None = None,
        burst: float = 1.0,
        system: str | None = None,
        name: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        import httpx

        problems = option_problems(
            {
                "base_url": base_url,
                "endpoint": endpoint,
                "concurrency": concurrency,
                "timeout_s": timeout_s,
                "max_retries": max_retries,
                "backoff_s": backoff_s,
                "max_backoff_s": max_backoff_s,
                "requests_per_minute": requests_per_minute,
                "burst": burst,
            }
        )
        if problems:
            raise ValueError("; ".join(problems))
        parsed = urllib.parse.urlsplit(base_url)
        self.base_url = base_url.rstrip("/") + ("/v1" if parsed.path in ("", "/") else "")
        self.model = model
        self.api_key_env = api_key_env
        self.endpoint = endpoint
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.system = system
        self.extra_body = dict(extra_body or {})
        self.name = name or f"openai:{model}"
        self.limiter = (
            RateLimiter(requests_per_minute / 60.0, burst) if requests_per_minute else None
        )
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            ),
        )
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="jelm-openai")
        self._rng = random.Random()

    def close(self) -> None:
        """Stop the worker threads and close the connections."""
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one request ------------------------------------------------------------------

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One attempt: POST, read the whole answer within ``timeout_s``, parse JSON."""
        t0 = time.monotonic()
        with self._client.stream("POST", self.base_url + path, json=body) as resp:
            chunks = []
            for chunk in resp.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() - t0 > self.timeout_s:
                    raise TotalTimeout(f"response took longer than {self.timeout_s} s")
            raw = b"".join(chunks)
            status = resp.status_code
            retry_after = _parse_retry_after(resp.headers.get("retry-after"))
        if status >= 400:
            msg = f"{status} from {path}: {_error_message(raw)}"
            if status in _RETRY_STATUS or status >= 500:
                raise _RetryableError(msg, retry_after)
            raise HTTPStatusError(msg)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ResponseError(f"not JSON: {raw[:200]!r}") from exc
        if not isinstance(data, dict):
            raise ResponseError(f"not a JSON object: {raw[:200]!r}")
        return data

    def _request(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST with retries and backoff; raises the last error when retries run out."""
        import httpx

        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                return self._post(path, body)
            except (httpx.TransportError, TotalTimeout, _RetryableError) as exc:
                if attempt >= self.max_retries:
                    if isinstance(exc, _RetryableError):
                        raise HTTPStatusError(str(exc)) from None
                    raise
                retry_after = getattr(exc, "retry_after", None)
                if retry_after is not None:
                    delay = min(retry_after, self.max_backoff_s)
                else:
                    delay = min(self.backoff_s * 2.0**attempt, self.max_backoff_s)
                    delay *= self._rng.uniform(0.5, 1.0)
                time.sleep(delay)
                attempt += 1

    def _one(
        self, messages: Sequence[Mapping[str, str]] | None, prompt: str | None, params: dict
    ) -> Completion:
        stop = list(params["stop"])
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params["max_new_tokens"],
            "temperature": params["temperature"],
            "top_p": params["top_p"],
            "seed": params["seed"],
            "n": 1,
            **self.extra_body,
        }
        if stop:
            body["stop"] = stop[:4]  # the OpenAI API takes at most 4; the rest are cut here
        try:
            if messages is None:
                body["prompt"] = prompt
                data = self._request("/completions", body)
                choice = _first_choice(data)
                text = choice.get("text")
            else:
                body["messages"] = [dict(m) for m in messages]
                data = self._request("/chat/completions", body)
                choice = _first_choice(data)
                text = (choice.get("message") or {}).get("content")
            if not isinstance(text, str):
                if text is None:
                    text = ""
                else:
                    raise ResponseError(f"completion text is not a string: {text!r}")
        except Exception as exc:
            return error_completion(exc)
        text, found = cut_at_stop(text, stop)
        reason = "stop" if found else str(choice.get("finish_reason") or "stop")
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=reason,
            tokens=int(usage.get("completion_tokens") or 0),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
        )

    def _map(self, jobs: list[tuple[Any, Any]], params: dict) -> list[Completion]:
        # Request i carries seed + i: a server that honours seeds would otherwise answer
        # identical prompts (the same parent drawn twice) with identical completions.
        futures = [
            self._pool.submit(self._one, m, p, {**params, "seed": params["seed"] + i})
            for i, (m, p) in enumerate(jobs)
        ]
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except Exception as exc:  # _one catches everything; belt and braces
                out.append(error_completion(exc))
        return out

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[Completion]:
        """One request per prompt, ``concurrency`` in flight; results in prompt order."""
        params = _params(max_new_tokens, temperature, top_p, stop, seed)
        if self.endpoint == "chat":
            return self._map([(self._as_chat(p), None) for p in prompts], params)
        return self._map([(None, p) for p in prompts], params)

    def chat(
        self,
        messages_per_prompt: Sequence[Sequence[Mapping[str, str]]],
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[Completion]:
        """One ``/chat/completions`` request per conversation."""
        params = _params(max_new_tokens, temperature, top_p, stop, seed)
        return self._map([(list(m), None) for m in messages_per_prompt], params)

    def _as_chat(self, prompt: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return [*messages, {"role": "user", "content": prompt}]


def _params(max_new_tokens, temperature, top_p, stop, seed) -> dict[str, Any]:
    return {
        "max_new_tokens": int(max_new_tokens),
        "temperature": float(temperature),
        "top_p": float(top_p),
        "stop": (stop,) if isinstance(stop, str) else tuple(stop),
        "seed": int(seed),
    }


def _first_choice(data: Mapping[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ResponseError(f"no choices in the answer: {json.dumps(data)[:200]}")
    return choices[0]


def _error_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, else the body's start."""
    try:
        data = json.loads(raw)
        msg = data["error"]["message"] if isinstance(data.get("error"), dict) else data["error"]
        return str(msg)[:500]
    except Exception:
        return raw[:200].decode("utf-8", "replace")


# --------------------------------------------------------------------------------------
# the registry's kind
# --------------------------------------------------------------------------------------

#: Lower bounds of the numeric options: (bound, whether the bound itself is allowed).
_BOUNDS: dict[str, tuple[float, bool]] = {
    "concurrency": (1, True),
    "max_retries": (0, True),
    "timeout_s": (0, False),
    "backoff_s": (0, True),
    "max_backoff_s": (0, True),
    "requests_per_minute": (0, True),  # 0 or None: no rate limit
    "burst": (1, True),
}
_INTEGERS = frozenset({"concurrency", "max_retries"})


def option_problems(options: Mapping[str, Any]) -> list[str]:
    """What is wrong with the values of :class:`OpenAIBackend` options (those present)."""
    problems = []
    if "base_url" in options:
        url = options["base_url"]
        parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            problems.append(f"base_url must be an http(s) URL, got {url!r}")
    if "endpoint" in options and options["endpoint"] not in ENDPOINTS:
        problems.append(f"endpoint must be 'completions' or 'chat', got {options['endpoint']!r}")
    for key, (bound, inclusive) in _BOUNDS.items():
        value = options.get(key)
        if value is None:
            continue
        kind = int if key in _INTEGERS else (int, float)
        ok = not isinstance(value, bool) and isinstance(value, kind)
        if not ok or (value < bound if inclusive else value <= bound):
            sign = ">=" if inclusive else ">"
            word = "an integer" if key in _INTEGERS else "a number"
            problems.append(f"{key} must be {word} {sign} {bound}, got {value!r}")
    return problems


#: ``{"kind": "openai", "base_url": ..., "model": ..., <OpenAIBackend options>}``
OPENAI_KIND = BackendKind(
    OpenAIBackend,
    required=("base_url", "model"),
    optional=tuple(
        name
        for name in inspect.signature(OpenAIBackend).parameters
        if name not in ("base_url", "model")
    ),
    check=option_problems,
)
