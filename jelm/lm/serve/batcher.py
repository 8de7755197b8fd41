"""Batching for ``jelm serve`` (ELM §3.1 sampling at scale): prompts of concurrent requests
share the device.

:class:`ContinuousBatcher` (for backends with a ``stream`` method, such as
:class:`~jelm.lm.backends.JelmBackend`): a request's prompts join the rows already
sampling within a few decode steps, and each prompt is answered as soon as it finishes.
:class:`MicroBatcher` (any backend): one batching thread waits ``window_s`` after the
first prompt for more (up to ``max_batch``), groups them by sampling parameters and makes
one ``backend.complete`` (or ``chat``) call per group. Either way one batching thread is
the only caller of the backend, so backends need not be thread-safe.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from jelm.lm.backends.base import Backend, Completion

__all__ = ["ContinuousBatcher", "MicroBatcher"]


class _Job:
    __slots__ = ("future", "group", "index", "payload")

    def __init__(self, group: tuple, payload: Any, index: int = 0) -> None:
        self.group = group
        self.payload = payload
        self.index = index  # the prompt's place in its request
        self.future: Future[Completion] = Future()


def _group(kind: str, params: Mapping[str, Any]) -> tuple:
    return (
        kind,
        int(params["max_new_tokens"]),
        float(params["temperature"]),
        float(params["top_p"]),
        tuple(params["stop"]),
        params["seed"],
    )


class _Batcher:
    """What both batchers share: a queue of jobs, one batching thread, ``submit`` and
    ``close``; a subclass's ``_run`` takes jobs off the queue until it reads ``None``."""

    join_timeout_s = 30.0

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._rng = random.Random()
        self._thread = threading.Thread(target=self._run, name="jelm-batcher", daemon=True)
        self._thread.start()

    def submit(self, kind: str, payloads: Sequence[Any], params: Mapping[str, Any]) -> list[Future]:
        """Queue prompts (``kind="complete"``) or chats (``kind="chat"``) sharing ``params``
        (max_new_tokens, temperature, top_p, stop, seed-or-None); one future per payload."""
        group = _group(kind, params)
        jobs = [_Job(group, p, i) for i, p in enumerate(payloads)]
        for job in jobs:
            self._queue.put(job)
        return [job.future for job in jobs]

    def close(self) -> None:
        """Stop the batching thread (jobs not answered fail with ``RuntimeError``)."""
        self._queue.put(None)
        self._thread.join(timeout=self.join_timeout_s)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.future.done():
                job.future.set_exception(RuntimeError("server shutting down"))

    def _run(self) -> None:
        raise NotImplementedError


class MicroBatcher(_Batcher):
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
        self.max_batch = int(max_batch)
        self.window_s = float(window_s)
        self.calls = 0
        self.batch_sizes: list[int] = []
        super().__init__(backend)

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


class ContinuousBatcher(_Batcher):
    """Continuous batching over a backend's ``stream`` (ELM §3.1 sampling at scale).

    ``submit`` queues one job per prompt and returns futures. The batching thread keeps
    one stream of prompts sampling; between every ``poll_steps`` decode steps it adds the
    queued prompts whose settings (kind, max_tokens, temperature, top_p, stop) are the
    stream's, and answers each prompt as it finishes. Prompts with other settings wait
    until the stream drains. A prompt's key is that of its place in its request and the
    request's seed (a fresh random seed per prompt without one), so a seeded request gets
    the same answer however it is batched. ``joined`` counts prompts that joined a
    stream while others were sampling in it.
    """

    join_timeout_s = 60.0  # a stream answers its running prompts before it stops

    def __init__(self, backend: Any, *, poll_steps: int = 8) -> None:
        if poll_steps < 1:
            raise ValueError(f"need poll_steps >= 1, got {poll_steps}")
        self.poll_steps = int(poll_steps)
        self.joined = 0
        super().__init__(backend)

    def _prompt(self, job: _Job) -> tuple[str, tuple[str, ...]]:
        """The prompt text of a job and its stop strings (a chat's template may add some)."""
        stop = job.group[4]
        if job.group[0] != "chat":
            return job.payload, stop
        prompt, extra = self.backend.render_chat(job.payload)
        return prompt, (*stop, *extra)

    def _run(self) -> None:
        stream: Any = None
        settings: tuple | None = None
        live: dict[int, _Job] = {}
        held: list[tuple[_Job, str, tuple]] = []  # jobs waiting for a stream of their own
        closing = False
        while True:
            incoming: list[_Job] = []
            if stream is None and not held:
                if closing:
                    return
                job = self._queue.get()
                if job is None:
                    return
                incoming.append(job)
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    break
                incoming.append(job)
            todo, held = held, []
            for job in incoming:
                try:
                    prompt, stop = self._prompt(job)
                except Exception as exc:
                    job.future.set_exception(exc)
                    continue
                todo.append((job, prompt, stop))
            for job, prompt, stop in todo:
                kind, max_new, temperature, top_p, _, seed = job.group
                want = (kind, max_new, temperature, top_p, stop)
                if stream is None:
                    try:
                        stream = self.backend.stream(
                            max_new_tokens=max_new, temperature=temperature, top_p=top_p, stop=stop
                        )
                    except Exception as exc:
                        job.future.set_exception(exc)
                        continue
                    settings = want
                if want != settings:
                    held.append((job, prompt, stop))
                    continue
                if live:
                    self.joined += 1
                seed = self._rng.randrange(2**31) if seed is None else seed
                got = stream.add(prompt, seed, job.index)
                if isinstance(got, Completion):
                    job.future.set_result(got)
                else:
                    live[got] = job
            if stream is None:
                continue
            try:
                done = stream.run(self.poll_steps)
            except Exception as exc:  # the device failed: every prompt of the stream fails
                for job in live.values():
                    job.future.set_exception(exc)
                live.clear()
                stream = None
                continue
            for i, comp in done:
                live.pop(i).future.set_result(comp)
            if not stream.busy:
                stream, settings = None, None
