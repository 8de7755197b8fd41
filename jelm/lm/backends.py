"""Where ELM's mutation operators get their completions from.

ELM (Lehman et al. 2022, §3.1) samples diffs from a language model: the prompt is a parent
program in the diff format (``<NME>``/``<BEF>``/``<MSG>``/``<DFF>``) and the completion is a
diff. The operators in ``jelm.mutation`` only need *text in, text out*, so every source of
completions implements one small interface, :class:`Backend`:

- :class:`JelmBackend`: a jelm checkpoint (``jelm.lm.model``, the small diff model jelm
  ships in ``jelm/lm/shipped``) or a local Hugging Face checkpoint (``jelm.lm.hf``), sampled
  in batches on the JAX device (KV cache, jit, padded buckets);
- :class:`OpenAIBackend`: any OpenAI-compatible HTTP server (vLLM, llama.cpp, a hosted API,
  or ``jelm serve`` itself), with retries, backoff, a client-side rate limit and timeouts.

A backend never raises for one bad prompt: that prompt's :class:`Completion` carries
``finish_reason="error"`` and ``error``, the others are returned as usual, in order. The
ELM loop treats an error like a diff that does not apply (the child is discarded).
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

#: Where the lead's trained diff model lives (``JelmBackend.shipped``).
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


@dataclasses.dataclass(frozen=True)
class Completion:
    """One completion of one prompt.

    ``text`` is the generated text with any stop string (and everything after it) removed;
    ``finish_reason`` is ``"stop"`` (a stop string or stop token ended it), ``"length"``
    (``max_new_tokens`` reached) or ``"error"`` (then ``text`` is empty and ``error`` says
    ``"<ExceptionClass>: <message>"``). ``tokens`` counts generated tokens. The last two
    fields are extras beyond the shared interface: ``prompt_tokens`` is the prompt's length
    as the model saw it (for usage counts) and ``truncated`` how many tokens were cut from
    the left of the prompt to fit the context window.
    """

    text: str
    finish_reason: str
    tokens: int
    error: str | None = None
    prompt_tokens: int = 0
    truncated: int = 0

    @property
    def ok(self) -> bool:
        """Whether this prompt produced a completion (possibly empty) rather than an error."""
        return self.error is None


def error_completion(exc: BaseException) -> Completion:
    """The completion standing for a prompt that failed with ``exc``."""
    return Completion(text="", finish_reason="error", tokens=0, error=_describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@runtime_checkable
class Backend(Protocol):
    """Text in, text out: a batch of prompts to one completion each, in order."""

    name: str

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
        """One :class:`Completion` per prompt; never raises for one bad prompt."""
        ...

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
        """Like :meth:`complete` for chat conversations (lists of ``{"role", "content"}``)."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first occurrence of any stop string, and whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def render_chat_plain(messages: Sequence[Mapping[str, str]]) -> str:
    """The plain chat template for models without one: ``role: content`` lines, then
    ``assistant:`` for the model to continue."""
    lines = [f"{m['role']}: {m['content']}" for m in messages]
    return "\n".join([*lines, "assistant:"])


#: Stop strings added to plain-template chats so the model does not write the next turn.
PLAIN_CHAT_STOP = ("\nuser:", "\nsystem:")


# --------------------------------------------------------------------------------------
# jelm's own models (and local HF checkpoints) on the JAX device
# --------------------------------------------------------------------------------------


class JelmBackend:
    """A jelm (or converted Hugging Face) model sampled on the JAX device.

    Prompts are encoded with the model's tokenizer and sampled in batches of at most
    ``max_batch`` with ``jelm.lm.model.generate`` (KV cache, jit; prompt lengths and batch
    sizes are padded to buckets, so a long ELM run compiles a handful of shapes once).
    A prompt longer than ``n_ctx - max_new_tokens`` tokens keeps its *last* tokens (the
    ``<MSG>``/``<DFF>`` tail of an ELM prompt matters most); ``Completion.truncated`` says
    how many were dropped. Stop strings that are single tokens (``<|endoftext|>``,
    ``<NME>``, ...) stop rows on the device (EOS always does); every stop string also cuts
    the decoded text on the host at its first occurrence. Not thread-safe: one caller at a
    time (``jelm serve`` funnels requests through one batching thread).
    """

    def __init__(
        self,
        params: Any,
        config: Any,
        tokenizer: Any,
        *,
        name: str = "jelm",
        max_batch: int = 32,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch = int(max_batch)

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], **kwargs: Any) -> JelmBackend:
        """A jelm checkpoint directory written by ``jelm.lm.model.save_model`` (raises
        ``jelm.lm.model.ModelLoadError`` naming the problem if it is not one)."""
        from jelm.lm.model import load_model

        path = Path(path)
        params, config, tokenizer = load_model(path)  # ModelLoadError says what is wrong
        kwargs.setdefault("name", f"jelm:{path.resolve().name}")
        return cls(params, config, tokenizer, **kwargs)

    @classmethod
    def shipped(cls, **kwargs: Any) -> JelmBackend:
        """The small diff model shipped with jelm in ``jelm/lm/shipped``."""
        if not (SHIPPED_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"jelm's shipped diff model is not installed ({SHIPPED_DIR} has no "
                "config.json); train one with jelm.lm.train, or use --model <dir> / hf:<dir>"
            )
        kwargs.setdefault("name", "jelm:shipped")
        return cls.from_dir(SHIPPED_DIR, **kwargs)

    @classmethod
    def from_hf(cls, path: str | os.PathLike[str], **kwargs: Any) -> JelmBackend:
        """A local Hugging Face checkpoint of a supported family (``jelm.lm.hf``)."""
        from jelm.lm.hf import load_hf

        path = Path(path)
        params, config, tokenizer = load_hf(path)
        kwargs.setdefault("name", f"hf:{path.resolve().name}")
        return cls(params, config, tokenizer, **kwargs)

    # ---- sampling ---------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (an empty prompt becomes a lone EOS, GPT-2's BOS)."""
        ids = list(self.tokenizer.encode(text))
        return ids or [int(self.tokenizer.eos_id)]

    def stop_token_ids(self, stop: Sequence[str]) -> tuple[list[int], list[str]]:
        """Device-side stop ids (EOS, then every stop string that is a single token) and the
        stop strings the host cuts the decoded text at (all of them: a single-token stop
        like ``"\n"`` can also occur inside a merged BPE token, which the device misses)."""
        ids = [int(self.tokenizer.eos_id)]
        for s in stop:
            tid = self.tokenizer.token_id(s) if s else None
            if tid is not None and int(tid) not in ids:
                ids.append(int(tid))
        return ids, [s for s in stop if s]

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
        """Sample one completion per prompt (batched on the device, ``max_batch`` at a
        time; chunk ``i`` uses ``fold_in(key(seed), i)``)."""
        import jax

        if isinstance(stop, str):
            stop = (stop,)
        n_ctx = int(self.config.n_ctx)
        max_new = max(1, min(int(max_new_tokens), n_ctx - 1))
        keep = n_ctx - max_new
        stop_ids, host_stop = self.stop_token_ids(stop)
        out: list[Completion | None] = [None] * len(prompts)
        encoded: list[tuple[int, list[int], int]] = []
        for i, p in enumerate(prompts):
            try:
                ids = self.encode(p)
            except Exception as exc:  # a prompt the tokenizer rejects fails alone
                out[i] = error_completion(exc)
                continue
            dropped = max(0, len(ids) - keep)
            encoded.append((i, ids[dropped:], dropped))
        base = jax.random.key(int(seed))
        for c, start in enumerate(range(0, len(encoded), self.max_batch)):
            chunk = encoded[start : start + self.max_batch]
            key = jax.random.fold_in(base, c)
            for (i, ids, dropped), comp in zip(
                chunk,
                self._generate_chunk(
                    [ids for _, ids, _ in chunk], key, max_new, temperature, top_p, stop_ids
                ),
                strict=True,
            ):
                if isinstance(comp, BaseException):
                    out[i] = error_completion(comp)
                else:
                    tokens, reason = comp
                    out[i] = self._finish(tokens, reason, stop_ids, host_stop, len(ids), dropped)
        return [c for c in out if c is not None]

    def _generate_chunk(
        self,
        prompts: list[list[int]],
        key: Any,
        max_new: int,
        temperature: float,
        top_p: float,
        stop_ids: list[int],
    ) -> list[tuple[list[int], str] | BaseException]:
        """Generate a chunk; if the batch fails, retry each prompt alone so one bad prompt
        only fails itself."""
        import jax

        from jelm.lm.model import generate

        def run(batch: list[list[int]], k: Any) -> list[tuple[list[int], str]]:
            gens = generate(
                self.params,
                self.config,
                batch,
                k,
                max_new_tokens=max_new,
                temperature=float(temperature),
                top_p=float(top_p),
                stop_token_ids=stop_ids,
                pad_id=int(self.tokenizer.pad_id),
            )
            return [(list(map(int, g.tokens)), str(g.finish_reason)) for g in gens]

        try:
            return list(run(prompts, key))
        except Exception as exc:
            if len(prompts) == 1:
                return [exc]
        results: list[tuple[list[int], str] | BaseException] = []
        for j, p in enumerate(prompts):
            try:
                results.extend(run([p], jax.random.fold_in(key, j)))
            except Exception as exc:
                results.append(exc)
        return results

    def _finish(
        self,
        tokens: list[int],
        reason: str,
        stop_ids: list[int],
        host_stop: list[str],
        prompt_tokens: int,
        dropped: int,
    ) -> Completion:
        n = len(tokens)
        if tokens and tokens[-1] in stop_ids:
            tokens = tokens[:-1]
            reason = "stop"
        else:  # in case generate keeps going past a stop token in its output
            for j, t in enumerate(tokens):
                if t in stop_ids:
                    tokens, reason = tokens[:j], "stop"
                    break
        text = self.tokenizer.decode(tokens)
        text, found = cut_at_stop(text, host_stop)
        if found:
            reason = "stop"
        return Completion(
            text=text,
            finish_reason=reason,
            tokens=n,
            prompt_tokens=prompt_tokens,
            truncated=dropped,
        )

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> tuple[str, tuple[str, ...]]:
        """The prompt for a chat and the extra stop strings it needs: the HF tokenizer's chat
        template when it has one, else :func:`render_chat_plain`."""
        # jelm.lm.tokenizer.Tokenizer keeps the wrapped HF tokenizer (if any) in ``_hf``
        hf = getattr(self.tokenizer, "hf", None) or getattr(self.tokenizer, "_hf", None)
        if hf is not None and getattr(hf, "chat_template", None):
            text = hf.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
            return str(text), ()
        return render_chat_plain(messages), PLAIN_CHAT_STOP

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
        """Render each chat to a prompt (:meth:`render_chat`) and complete it."""
        if isinstance(stop, str):
            stop = (stop,)
        out: list[Completion | None] = [None] * len(messages_per_prompt)
        groups: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        for i, messages in enumerate(messages_per_prompt):
            try:
                prompt, extra = self.render_chat(messages)
            except Exception as exc:
                out[i] = error_completion(exc)
                continue
            groups.setdefault(extra, []).append((i, prompt))
        for extra, items in groups.items():
            comps = self.complete(
                [p for _, p in items],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=(*stop, *extra),
                seed=seed,
            )
            for (i, _), c in zip(items, comps, strict=True):
                out[i] = c
        return [c for c in out if c is not None]


# --------------------------------------------------------------------------------------
# OpenAI-compatible HTTP servers
# --------------------------------------------------------------------------------------


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

        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint must be 'completions' or 'chat', got {endpoint!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError(
                "need concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff_s >= 0"
            )
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
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
# configuration
# --------------------------------------------------------------------------------------

_OPENAI_KEYS = frozenset(
    {
        "base_url",
        "model",
        "api_key_env",
        "endpoint",
        "concurrency",
        "timeout_s",
        "max_retries",
        "backoff_s",
        "max_backoff_s",
        "requests_per_minute",
        "burst",
        "system",
        "name",
        "extra_body",
    }
)
_LOCAL_KEYS = frozenset({"path", "max_batch", "name"})


#: The kinds of backend ``make_backend`` builds.
BACKEND_KINDS = ("jelm", "hf", "openai")


def spec_problems(spec: Any) -> list[str]:
    """What is wrong with a backend spec (see :func:`make_backend`): an unknown kind, a
    missing key, an unknown option. Loads nothing, so a run's configuration can be checked
    before any work starts."""
    if not isinstance(spec, Mapping):
        return [f"a backend spec is a mapping with a 'kind', got {spec!r}"]
    options = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec.get("kind")
    if kind not in BACKEND_KINDS:
        return [f"backend kind must be one of {BACKEND_KINDS}, got {kind!r}"]
    allowed, required = (
        (_OPENAI_KEYS, ("base_url", "model")) if kind == "openai" else (_LOCAL_KEYS, ("path",))
    )
    problems = []
    missing = [k for k in required if options.get(k) in (None, "")]
    if missing:
        problems.append(f"backend kind {kind!r} needs {', '.join(missing)} (got {sorted(options)})")
    unknown = sorted(map(str, set(options) - allowed))
    if unknown:
        problems.append(
            f"unknown option(s) for backend kind {kind!r}: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    return problems


def backend_problems(spec: Any) -> list[str]:
    """:func:`spec_problems` and, for local models, whether the model directory exists:
    everything that can be checked before loading anything."""
    problems = spec_problems(spec)
    if problems or spec["kind"] == "openai":
        return problems
    path = SHIPPED_DIR if spec["kind"] == "jelm" and spec["path"] == "shipped" else spec["path"]
    if not Path(path, "config.json").is_file():
        return [f"{spec['kind']} model {path} is not a model directory (no config.json)"]
    return []


def make_backend(spec: Mapping[str, Any]) -> Backend:
    """A backend from a config mapping (Hydra's ``mutation.backend`` group, the CLI):

    - ``{"kind": "jelm", "path": "shipped" | <dir>, "max_batch": 32}``
    - ``{"kind": "hf", "path": <dir>, "max_batch": 32}``
    - ``{"kind": "openai", "base_url": ..., "model": ..., <OpenAIBackend options>}``

    Raises ``ValueError`` naming the problem for an unknown kind, a missing key or an
    unknown option.
    """
    problems = spec_problems(spec)
    if problems:
        raise ValueError("; ".join(problems))
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind == "openai":
        return OpenAIBackend(**spec)
    path = str(spec.pop("path"))
    if kind == "hf":
        return JelmBackend.from_hf(path, **spec)
    if path == "shipped":
        return JelmBackend.shipped(**spec)
    return JelmBackend.from_dir(path, **spec)
