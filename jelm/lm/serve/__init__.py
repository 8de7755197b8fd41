"""``jelm serve``: any backend behind an OpenAI-compatible HTTP API (ELM §3.1's sampling,
shared by other processes, machines and off-the-shelf clients).

- ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``;
- ``POST /v1/completions`` (``prompt``: a string or a list of strings) and
  ``POST /v1/chat/completions`` with ``max_tokens``, ``temperature``, ``top_p``, ``stop``,
  ``seed``, ``n``; ``stream: true`` answers with server-sent events (the completion is
  computed whole, then sent as one content chunk and a finish chunk);
- errors are OpenAI-shaped JSON: 400 for a bad request, 404 for an unknown route or model,
  413 for an oversized body, 500 (with the model's message) when sampling fails.

One job a module: :mod:`~jelm.lm.serve.protocol` turns OpenAI request bodies into
sampling parameters and completions into OpenAI responses, :mod:`~jelm.lm.serve.batcher`
batches concurrent prompts (micro-batching; or continuously for a model sampled here, where
a request joins the rows already sampling), :mod:`~jelm.lm.serve.server` is the HTTP
server.
"""

from jelm.lm.serve.batcher import ContinuousBatcher, MicroBatcher
from jelm.lm.serve.protocol import BadRequest
from jelm.lm.serve.server import Server, serve

__all__ = ["BadRequest", "ContinuousBatcher", "MicroBatcher", "Server", "serve"]
