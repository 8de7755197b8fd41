"""Continuous batching: the host loop of :func:`generate` (ELM §3.1's mutation step).

The prompts of a call are planned into groups (:mod:`jelm.lm.sampling.plan`), and at most
``plan.slots`` groups sample at once. Whenever a group finishes while others wait, its
slot is refilled with the next waiting group (prefilled in a batch with any others that
fit); when none wait and at most a quarter of the slots are live, the live groups are
packed into fewer slots, so that finished rows stop costing decode steps. A row's cache
holds 64 generated tokens at first and doubles when a live row needs more.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jelm.lm.model import ModelConfig, Params
from jelm.lm.sampling import device as D
from jelm.lm.sampling.plan import Group, Plan, bucket_batch, make_plan

STOP_SLOTS = 8  # stop ids are padded to a multiple of this (fixed shapes, fewer compiles)
#: Default number of rows sampled at once.
MAX_ROWS = 32
#: Generated tokens a row's cache holds at first; it doubles when a row needs more.
FIRST_WINDOW = 64
#: Live groups are packed into fewer slots once at most 1/PACK of the slots are live (each
#: slot count is one more compiled decode program).
PACK = 4
#: Fewer slots than this are not packed (small calls: a compile costs more than it saves).
MIN_PACK = 8


@dataclasses.dataclass(frozen=True)
class Generation:
    """One sampled continuation: its new tokens and why it ended.

    ``tokens`` excludes the prompt and the stop token; ``finish_reason`` is ``"stop"`` when
    a token of ``stop_token_ids`` was produced, ``"length"`` when ``max_new_tokens`` ran out.
    """

    tokens: list[int]
    finish_reason: str


def _check(
    config: ModelConfig,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        if len(p) + max_new_tokens > config.n_ctx:
            raise ValueError(
                f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} it "
                f"needs {len(p) + max_new_tokens} positions but the model has "
                f"n_ctx={config.n_ctx}"
            )


def _arrays(
    plan: Plan, groups: Sequence[Group], n: int, keys: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Left-padded prefix and suffix arrays (and their masks and row keys) of ``groups``,
    padded to ``n`` groups (the padding groups have no rows)."""
    r, pp, ps = plan.rows, plan.prefix_len, plan.suffix_len
    prefix = np.zeros((n, pp), np.int32)
    prefix_mask = np.zeros((n, pp), bool)
    suffix = np.zeros((n, r, ps), np.int32)
    suffix_mask = np.zeros((n, r, ps), bool)
    row_keys = np.zeros((n, r, keys.shape[1]), keys.dtype)
    for g, group in enumerate(groups):
        if group.prefix:
            prefix[g, pp - len(group.prefix) :] = group.prefix
            prefix_mask[g, pp - len(group.prefix) :] = True
        for j, (s, m) in enumerate(zip(group.suffixes, group.members, strict=True)):
            suffix[g, j, ps - len(s) :] = s
            suffix_mask[g, j, ps - len(s) :] = True
            row_keys[g, j] = keys[m]
    return prefix, prefix_mask, suffix, suffix_mask, row_keys


def generate(
    params: Params,
    config: ModelConfig,
    prompts: Sequence[Sequence[int]],
    key: jax.Array,
    *,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_token_ids: Sequence[int] = (),
    pad_id: int = 0,
    max_batch: int = MAX_ROWS,
    share_prefixes: bool = True,
) -> list[Generation]:
    """Sample continuations of token-id prompts (ELM's mutation step, §3.1).

    At most ``max_batch`` rows sample at once; a finished row's slot goes to the next
    waiting prompt. Prompts that begin with the same tokens (children of one parent) share
    one copy of that prefix's keys and values (``share_prefixes``). ``temperature == 0``
    is greedy decoding; otherwise logits are divided by ``temperature`` and, if
    ``top_p < 1``, cut to the nucleus. A row stops at the first token in
    ``stop_token_ids`` or after ``max_new_tokens``. Prompt ``i`` samples step ``t`` with
    the key ``fold_in(fold_in(key, i), t)``, so its tokens depend on the key and its own
    prompt only: not on the other prompts, the batch size or the sharing.

    Raises ``ValueError`` for an empty prompt or one that leaves no room for
    ``max_new_tokens`` within ``config.n_ctx`` positions.
    """
    _check(config, prompts, max_new_tokens, temperature, top_p)
    if not prompts:
        return []
    max_rows = 1 << (max(1, max_batch).bit_length() - 1)  # a power of two, at most max_batch
    plan = make_plan(prompts, max_new_tokens, max_rows, share_prefixes)
    keys = np.asarray(
        jax.random.key_data(
            jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(len(prompts)))
        )
    )
    n_stop = max(STOP_SLOTS, -(-len(stop_token_ids) // STOP_SLOTS) * STOP_SLOTS)
    stop = np.full((n_stop,), -1, np.int32)
    stop[: len(stop_token_ids)] = np.asarray(list(stop_token_ids), np.int32)
    sampling = D.Sampling(
        jnp.asarray(stop),
        jnp.float32(max(temperature, 1e-6)),
        jnp.float32(top_p),
        jnp.int32(pad_id),
        jnp.asarray(temperature == 0),
        jnp.asarray(top_p < 1.0),
    )

    def prefill(groups: Sequence[Group], n: int, window: int) -> D.Slots:
        arrays = _arrays(plan, groups, n, keys)
        chunks = D.prefill_chunks(config, n, plan.rows, plan.prefix_len, plan.suffix_len, window)
        return D.prefill(
            params,
            *map(jnp.asarray, arrays),
            sampling,
            new_tokens=max_new_tokens,
            window=window,
            chunks=chunks,
            config=config,
        )

    waiting = deque(plan.groups)
    first = [waiting.popleft() for _ in range(min(plan.slots, len(waiting)))]
    first_window = min(FIRST_WINDOW, max_new_tokens)
    slots = prefill(first, plan.slots, first_window)
    holder: list[Group | None] = [*first, *[None] * (plan.slots - len(first))]
    results: list[Generation | None] = [None] * len(prompts)

    def harvest(state: D.Slots, done_slots: list[int]) -> None:
        out, count, stopped = (np.asarray(a) for a in (state.out, state.count, state.stopped))
        for g in done_slots:
            group = holder[g]
            assert group is not None
            for j, m in enumerate(group.members):
                reason = "stop" if stopped[g, j] else "length"
                results[m] = Generation(out[g, j, : count[g, j]].tolist(), reason)
            holder[g] = None

    while True:
        size = len(holder)
        live = np.asarray(slots.live)
        finished = [g for g in range(size) if holder[g] is not None and not live[g]]
        if finished:
            harvest(slots, finished)
        if waiting and any(h is None for h in holder):
            free = [g for g in range(size) if holder[g] is None]
            new = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
            n = bucket_batch(len(new))
            at = np.full((n,), size, np.int32)  # padding entries point past the end
            at[: len(new)] = free[: len(new)]
            fresh = prefill(new, n, first_window)
            if D.window_of(slots) > first_window:
                fresh = D.grow(fresh, D.window_of(slots))
            slots = D.insert(slots, fresh, jnp.asarray(at))
            for g, group in zip(free, new, strict=False):
                holder[g] = group
            continue
        n_live = sum(h is not None for h in holder)
        if n_live == 0:
            break
        if not waiting and size >= MIN_PACK and n_live <= size // PACK:
            keep = [g for g in range(size) if holder[g] is not None]
            smaller = bucket_batch(n_live)
            pad = [g for g in range(size) if holder[g] is None][: smaller - n_live]
            slots = D.take(slots, jnp.asarray(keep + pad, jnp.int32))
            holder = [holder[g] for g in keep] + [None] * len(pad)
            continue
        window = D.window_of(slots)
        if window < max_new_tokens and np.any(live & (np.asarray(slots.step) >= window)):
            slots = D.grow(slots, min(2 * window, max_new_tokens))
            continue
        min_live = size // PACK if (not waiting and size >= MIN_PACK) else 0
        slots = D.decode(
            params, slots, sampling, jnp.asarray(bool(waiting)), jnp.int32(min_live), config=config
        )
    assert all(g is not None for g in results)
    return results  # type: ignore[return-value]
