"""The OpenAI API as ``jelm serve`` speaks it: request bodies to sampling parameters,
completions to response objects and server-sent events (ELM §3.1's diff sampling over
HTTP). Every refused request is a :class:`BadRequest` carrying its HTTP status and the
OpenAI error fields.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from jelm.lm.backends.base import Completion

__all__ = [
    "MAX_N",
    "BadRequest",
    "chat_request",
    "chat_response",
    "completion_request",
    "completion_response",
]

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


def completion_request(
    body: Mapping[str, Any], default_max_tokens: int
) -> tuple[list[str], dict[str, Any]]:
    """The prompts and sampling parameters of a ``/v1/completions`` body."""
    prompts = _prompts(body)
    params = _sampling_params(body, default_max_tokens)
    for key in ("echo", "suffix"):
        if body.get(key):
            raise BadRequest(f"'{key}' is not supported by jelm serve", param=key)
    best_of = body.get("best_of")
    if best_of is not None and best_of != params["n"]:
        raise BadRequest("'best_of' is not supported by jelm serve", param="best_of")
    return prompts, params


def chat_request(
    body: Mapping[str, Any], default_max_tokens: int
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The conversation and sampling parameters of a ``/v1/chat/completions`` body."""
    return _messages(body), _sampling_params(body, default_max_tokens)


def _usage(results: Sequence[Completion], n: int) -> dict[str, int]:
    prompt = sum(c.prompt_tokens for c in results[::n])
    completion = sum(c.tokens for c in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_response(
    results: Sequence[Completion], n: int, model_id: str, body: Mapping[str, Any]
) -> tuple[dict, list[dict]]:
    """The ``text_completion`` object for ``results`` (``n`` per prompt) and its stream
    events."""
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "object": "text_completion", "created": created, "model": model_id}
    choices = [
        {"text": c.text, "index": i, "logprobs": None, "finish_reason": c.finish_reason}
        for i, c in enumerate(results)
    ]
    usage = _usage(results, n)
    events: list[dict] = []
    for ch in choices:
        events.append({**head, "choices": [{**ch, "finish_reason": None}]})
        events.append({**head, "choices": [{**ch, "text": ""}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**head, "choices": [], "usage": usage})
    return {**head, "choices": choices, "usage": usage}, events


def chat_response(
    results: Sequence[Completion], n: int, model_id: str, body: Mapping[str, Any]
) -> tuple[dict, list[dict]]:
    """The ``chat.completion`` object for ``results`` and its stream events."""
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "created": created, "model": model_id}
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": None,
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(results)
    ]
    usage = _usage(results, n)
    chunk = {**head, "object": "chat.completion.chunk"}
    events: list[dict] = []
    for i, c in enumerate(results):
        delta = {"role": "assistant", "content": c.text}
        events.append({**chunk, "choices": [{"index": i, "delta": delta, "finish_reason": None}]})
        events.append(
            {**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": c.finish_reason}]}
        )
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**chunk, "choices": [], "usage": usage})
    response = {**head, "object": "chat.completion", "choices": choices, "usage": usage}
    return response, events
