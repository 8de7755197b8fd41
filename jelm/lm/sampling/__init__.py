"""Batched sampling from the language model under ``jit``: ELM's mutation step (§3.1).

``generate(params, config, prompts, key, ...)`` samples continuations of token-id prompts
with continuous batching (:mod:`.engine`): at most ``max_batch`` rows at once, a finished
row's slot refilled with a waiting prompt, live rows packed into fewer slots when most
have finished, rows' caches grown with their completions. Prompts that begin alike
(children of one parent) share one copy of the prefix's keys and values (:mod:`.plan`,
:mod:`jelm.lm.kv`). The device side (prefill, decode loop, slot moves) is
:mod:`.device`; token choice (greedy, temperature, nucleus) :mod:`.sample`; the constraint
that makes a diff's context and removed lines its parent's (``copy=``) :mod:`.copy`.
"""

from jelm.lm.sampling.engine import MAX_ROWS, Generation, Sampler, generate
from jelm.lm.sampling.plan import Shapes, bucket_batch, bucket_length

__all__ = [
    "MAX_ROWS",
    "Generation",
    "Sampler",
    "Shapes",
    "bucket_batch",
    "bucket_length",
    "generate",
]
