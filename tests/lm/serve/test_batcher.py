"""jelm.lm.serve.batcher: prompts of concurrent requests become grouped backend calls
(ELM §3.1's sampling batched on the device), each answer back to its own future."""

from __future__ import annotations

import threading

import pytest

from jelm.lm.backends import Completion
from jelm.lm.serve import MicroBatcher

PARAMS = {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "stop": (), "seed": 1}


class Echo:
    """A backend that answers each prompt with ``prompt:seed`` and records its calls."""

    name = "echo"

    def __init__(self, fail: Exception | None = None, drop: bool = False) -> None:
        self.calls: list[tuple[str, list, dict]] = []
        self.fail, self.drop = fail, drop

    def _answer(self, kind: str, payloads, **kw) -> list[Completion]:
        self.calls.append((kind, list(payloads), kw))
        if self.fail is not None:
            raise self.fail
        out = [Completion(f"{p}:{kw['seed']}", "stop", 1) for p in payloads]
        return out[1:] if self.drop else out

    def complete(self, prompts, **kw):
        return self._answer("complete", prompts, **kw)

    def chat(self, messages_per_prompt, **kw):
        return self._answer("chat", [m[0]["content"] for m in messages_per_prompt], **kw)


def test_concurrent_prompts_are_grouped_by_parameters():
    backend = Echo()
    batcher = MicroBatcher(backend, max_batch=8, window_s=0.5)
    try:
        futures: dict[str, list] = {}
        barrier = threading.Barrier(3)

        def submit(name: str, kind: str, payloads, params) -> None:
            barrier.wait()
            futures[name] = batcher.submit(kind, payloads, params)

        jobs = [
            ("a", "complete", ["p0", "p1"], PARAMS),
            ("b", "complete", ["p2"], PARAMS),
            ("c", "complete", ["p3"], {**PARAMS, "temperature": 0.5}),
        ]
        threads = [threading.Thread(target=submit, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        texts = {k: [f.result(timeout=30).text for f in v] for k, v in futures.items()}
    finally:
        batcher.close()
    assert texts == {"a": ["p0:1", "p1:1"], "b": ["p2:1"], "c": ["p3:1"]}
    sizes = sorted(len(payloads) for _, payloads, _ in backend.calls)
    assert sizes == [1, 3] and batcher.calls == 2 and sorted(batcher.batch_sizes) == [1, 3]
    assert {kw["temperature"] for _, p, kw in backend.calls if len(p) == 1} == {0.5}


def test_a_call_without_seed_draws_one_and_chats_go_to_chat():
    backend = Echo()
    batcher = MicroBatcher(backend, window_s=0.0)
    try:
        chats = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "yo"}]]
        futures = batcher.submit("chat", chats, {**PARAMS, "seed": None})
        results = [f.result(timeout=30) for f in futures]
    finally:
        batcher.close()
    kinds = {kind for kind, _, _ in backend.calls}
    assert kinds == {"chat"}
    seeds = {kw["seed"] for _, _, kw in backend.calls}
    assert len(seeds) == 1 and isinstance(seeds.pop(), int)
    assert [r.text.split(":")[0] for r in results] == ["hi", "yo"]


@pytest.mark.parametrize(
    ("backend", "error"),
    [
        (Echo(fail=RuntimeError("device lost")), "device lost"),
        (Echo(drop=True), "backend returned 1 completions for 2 prompts"),
    ],
)
def test_a_failed_call_fails_every_future(backend, error):
    batcher = MicroBatcher(backend, window_s=0.2)
    try:
        futures = batcher.submit("complete", ["x", "y"], PARAMS)
        for f in futures:
            with pytest.raises(RuntimeError, match=error):
                f.result(timeout=30)
    finally:
        batcher.close()
    with pytest.raises(ValueError, match="max_batch >= 1"):
        MicroBatcher(backend, max_batch=0)
