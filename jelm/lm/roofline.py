"""What this machine allows a sampling call: its measured matmul rate and memory
bandwidth (:func:`machine_peaks`), and the least time a ``generate`` call's work takes at
them (:func:`roofline`), the bound ``python -m jelm.lm.bench`` reports beside its timings
(ELM §3.1's mutation step is this sampling)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from jelm.lm.model import ModelConfig


def machine_peaks() -> dict[str, float]:
    """This machine's float32 matmul rate (GFLOP/s, a jitted [4096, 256] x [256, 1024]
    product) and memory bandwidth (GB/s, a jitted sum over 400 MB), best of 5."""
    import jax
    import jax.numpy as jnp

    a, w = jnp.ones((4096, 256), jnp.float32), jnp.ones((256, 1024), jnp.float32)
    x = jnp.ones((100 * 2**20,), jnp.float32)
    mm, total = jax.jit(jnp.dot), jax.jit(jnp.sum)
    best = {}
    for name, f, args, work in (
        ("matmul_gflops", mm, (a, w), 2 * 4096 * 256 * 1024 / 1e9),
        ("memory_gbps", total, (x,), x.nbytes / 1e9),
    ):
        jax.block_until_ready(f(*args))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t0)
        best[name] = round(work / min(times), 1)
    return best


def roofline(
    config: ModelConfig,
    n_params: int,
    prompts: Sequence[Sequence[int]],
    lengths: Sequence[int],
    max_new_tokens: int,
    max_batch: int,
    peaks: dict[str, float],
) -> dict[str, Any]:
    """Work of one ``generate`` call and the least time this machine needs for it.

    Prefill: ``2 * params`` FLOPs per prompt token of every distinct prefix and suffix,
    plus causal attention (``2 * n_layer * d_attn * L**2``). Decode, per generated token:
    ``2 * params`` plus ``4 * n_layer * d_attn * context`` FLOPs; bytes: the weights once
    per step (shared by the rows of the step) and the key/value slots the padded shapes
    of the plan read (:mod:`jelm.lm.sampling.plan`; rows' caches sized to the window that
    holds the mean completion). The bound is the FLOPs at the matmul
    rate plus, per decode step, the larger of its FLOPs and bytes at the measured peaks.
    It is the bound of a sampler that computes each token in a step of its own: checking
    guessed tokens (``tokens_per_step`` in the bench's entries) can beat it.
    """
    from jelm.lm.sampling.plan import bucket_batch, make_plan

    plan = make_plan(prompts, max_new_tokens, max_batch)
    d_attn = config.n_head * config.head_dim
    kv_bytes = 2 * config.n_layer * config.kv_heads * config.head_dim * 4  # per slot
    prefill_tokens = sum(len(g.prefix) + sum(map(len, g.suffixes)) for g in plan.groups)
    prefill_flops = 2 * n_params * prefill_tokens + sum(
        2 * config.n_layer * d_attn * (len(g.prefix) + len(s)) ** 2
        for g in plan.groups
        for s in g.suffixes
    )
    rows = plan.rows * plan.slots
    steps = max(lengths) if len(prompts) <= rows else -(-sum(lengths) // rows)
    per_step_tokens = sum(lengths) / max(steps, 1)
    context = np.mean([len(p) for p in prompts]) + np.mean(lengths) / 2
    step_flops = per_step_tokens * (2 * n_params + 4 * config.n_layer * d_attn * context)
    window = min(max_new_tokens, max(64, bucket_batch(int(np.mean(lengths)))))
    slots = plan.slots * plan.prefix_len + rows * (plan.suffix_len + window)
    step_bytes = 4 * n_params + kv_bytes * slots
    flops_s, bytes_s = peaks["matmul_gflops"] * 1e9, peaks["memory_gbps"] * 1e9
    bound = prefill_flops / flops_s + steps * max(step_flops / flops_s, step_bytes / bytes_s)
    return {
        "rows_per_group": plan.rows,
        "groups": len(plan.groups),
        "prefill_gflop": round(prefill_flops / 1e9, 2),
        "decode_gflop_per_token": round(float(step_flops / per_step_tokens / 1e9), 4),
        "decode_mb_per_token": round(float(step_bytes / per_step_tokens / 1e6), 2),
        "bound_s": round(bound, 3),
        "bound_tokens_per_s": round(sum(lengths) / bound, 1),
    }
