"""jelm.lm.serve.protocol: OpenAI request bodies to sampling parameters and completions to
OpenAI responses and stream events (ELM §3.1's sampling over HTTP), without a server."""

from __future__ import annotations

import pytest

from jelm.lm.backends import Completion
from jelm.lm.serve.protocol import (
    BadRequest,
    chat_request,
    chat_response,
    completion_request,
    completion_response,
)


def test_completion_request_parameters_and_defaults():
    prompts, params = completion_request({"prompt": "x"}, default_max_tokens=16)
    assert prompts == ["x"]
    assert params == {
        "max_new_tokens": 16,
        "temperature": 1.0,
        "top_p": 1.0,
        "stop": (),
        "seed": None,
        "n": 1,
    }
    body = {
        "prompt": ["a", "b"],
        "max_completion_tokens": 5,
        "temperature": 0,
        "stop": ["\n", ""],
        "seed": -1,
        "n": 2,
        "best_of": 2,
    }
    prompts, params = completion_request(body, 16)
    assert prompts == ["a", "b"] and params["max_new_tokens"] == 5 and params["n"] == 2
    assert params["stop"] == ("\n",) and params["seed"] == 2**63 - 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": [1, 2]}, "prompt"),
        ({"prompt": "x", "n": 17}, "n"),
        ({"prompt": "x", "top_p": True}, "top_p"),
        ({"prompt": "x", "seed": 1.5}, "seed"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
    ],
)
def test_bad_completion_requests(body, param):
    with pytest.raises(BadRequest) as info:
        completion_request(body, 16)
    assert info.value.status == 400 and info.value.param == param


def test_chat_request_keeps_text_parts():
    body = {
        "messages": [
            {"role": "system", "content": None},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]},
        ]
    }
    messages, params = chat_request(body, 256)
    assert messages == [{"role": "system", "content": ""}, {"role": "user", "content": "a"}]
    assert params["max_new_tokens"] == 256
    with pytest.raises(BadRequest, match=r"only text parts") as info:
        chat_request({"messages": [{"role": "user", "content": [{"type": "image"}]}]}, 8)
    assert info.value.param == "messages[0].content"


def test_responses_and_stream_events():
    results = [Completion("x", "stop", 2, prompt_tokens=3), Completion("yz", "length", 4, 3)]
    body = {"stream_options": {"include_usage": True}}
    response, events = completion_response(results, 2, "m", body)
    assert response["object"] == "text_completion" and response["model"] == "m"
    assert [c["text"] for c in response["choices"]] == ["x", "yz"]
    assert response["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["x", "", "yz", ""]
    assert events[-1]["usage"] == response["usage"] and events[-1]["choices"] == []
    response, events = chat_response(results[:1], 1, "m", {})
    assert response["choices"][0]["message"] == {"role": "assistant", "content": "x"}
    assert [e["choices"][0]["finish_reason"] for e in events] == [None, "stop"]
