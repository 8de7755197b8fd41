"""Continuous batching: the host loop of :class:`Sampler` and :func:`generate` (ELM §3.1's
mutation step).

Prompts are planned into groups (:mod:`jelm.lm.sampling.plan`) as they are added, and at
most ``max_batch`` rows sample at once. Whenever a group finishes while others wait, its
slot is refilled with the next waiting group (prefilled alone, or one a device, so that a
shape has one prefill program); prompts added while others sample join them (the slots
widen, and the caches make room for longer prompts); when none wait and at most a quarter
of the slots are live, the live groups are packed into fewer slots, so that finished rows
stop costing decode steps. A row's cache holds 64 generated tokens at first and grows
once, to ``max_new_tokens``, when a live row needs more (two cache sizes: two compiled
programs per shape instead of four).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jelm.lm import shard as lm_shard
from jelm.lm.model import ModelConfig, Params
from jelm.lm.sampling import copy as C
from jelm.lm.sampling import device as D
from jelm.lm.sampling.plan import Group, Shapes, bucket_batch, make_plan

STOP_SLOTS = 8  # stop ids are padded to a multiple of this (fixed shapes, fewer compiles)
#: Default number of rows sampled at once.
MAX_ROWS = 32
#: Generated tokens a row's cache holds at first; it grows to the whole budget when a row
#: needs more. Budgets up to this size start whole: each window is one more compiled
#: decode program for every shape (about 5 s here), and at ELM's budgets (256-384 tokens)
#: the smaller window saved no measurable time (jelm/lm/README.md).
FIRST_WINDOW = 512
#: Live groups are packed into fewer slots once at most 1/PACK of the slots are live (each
#: slot count is one more compiled decode program).
PACK = 4
#: Fewer slots than this are not packed (small calls: a compile costs more than it saves).
MIN_PACK = 8


#: Guessed tokens per step at most (the caches keep room for them).
MAX_DRAFTS = 4


def default_drafts(groups: int, rows: int) -> int:
    """Guessed tokens per row and decode step while ``groups`` groups of ``rows`` rows
    (children of one prompt) sample: a lone row's step is bound by reading the weights,
    so extra tokens are nearly free; a few rows of distinct prompts pay for every extra
    query in XLA's small batched products over their own prefixes, so they guess none;
    rows sharing a prefix, or many rows, gain from one or two (timed on a 2-core CPU,
    jelm/lm/README.md)."""
    total = groups * rows
    if total == 1:
        return MAX_DRAFTS
    if total <= 16:
        return 1 if rows > 1 else 0
    return 2


@dataclasses.dataclass(frozen=True)
class Generation:
    """One sampled continuation: its new tokens and why it ended.

    ``tokens`` excludes the prompt and the stop token; ``finish_reason`` is ``"stop"`` when
    a token of ``stop_token_ids`` was produced, ``"length"`` when ``max_new_tokens`` ran out.
    ``steps``: the decode steps the row took (fewer than its tokens when guessed tokens
    came true); it does not take part in comparisons.
    """

    tokens: list[int]
    finish_reason: str
    steps: int = dataclasses.field(default=0, compare=False)


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
    rows: int,
    prefix_len: int,
    suffix_len: int,
    groups: Sequence[Group],
    n: int,
    keys: dict[int, np.ndarray],
) -> tuple[np.ndarray, ...]:
    """Left-padded prefix and suffix arrays (and their masks and row keys) of ``groups``,
    padded to ``n`` groups (the padding groups have no rows)."""
    r, pp, ps = rows, prefix_len, suffix_len
    width = next(iter(keys.values())).shape[0]
    prefix = np.zeros((n, pp), np.int32)
    prefix_mask = np.zeros((n, pp), bool)
    suffix = np.zeros((n, r, ps), np.int32)
    suffix_mask = np.zeros((n, r, ps), bool)
    row_keys = np.zeros((n, r, width), next(iter(keys.values())).dtype)
    for g, group in enumerate(groups):
        if group.prefix:
            prefix[g, pp - len(group.prefix) :] = group.prefix
            prefix_mask[g, pp - len(group.prefix) :] = True
        for j, (s, m) in enumerate(zip(group.suffixes, group.members, strict=True)):
            suffix[g, j, ps - len(s) :] = s
            suffix_mask[g, j, ps - len(s) :] = True
            row_keys[g, j] = keys[m]
    return prefix, prefix_mask, suffix, suffix_mask, row_keys


class Sampler:
    """Continuous batching of prompts that may arrive while others sample (ELM §3.1).

    :meth:`add` queues prompts with their row keys and returns their ids; :meth:`run`
    samples until some prompts finish (or ``max_steps`` decode steps pass) and returns
    them as ``(id, Generation)``. Every prompt is sampled with the settings given here;
    a row's tokens depend on its prompt and key only, not on what it was batched with.
    ``drafts``: see :func:`generate`. With ``copy_vocab`` (:func:`jelm.lm.sampling.copy.
    copy_vocab`), prompts added with a parent program write diffs that copy it. ``shapes``:
    a record of shapes compiled for earlier calls, kept by the caller (:class:`jelm.lm.
    sampling.plan.Shapes`).

    On several local devices (:func:`jelm.lm.shard.local_mesh`; ``shard=False`` or
    ``$JELM_LM_SHARD=0`` keep one) the slots are split over the devices, the parameters
    replicated: every slot count is rounded up to a multiple of the device count with
    empty slots, and the tokens are those of one device (``jelm/lm/README.md``,
    "Devices").
    """

    def __init__(
        self,
        params: Params,
        config: ModelConfig,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_token_ids: Sequence[int] = (),
        pad_id: int = 0,
        max_batch: int = MAX_ROWS,
        share_prefixes: bool = True,
        drafts: int | None = None,
        copy_vocab: C.CopyVocab | None = None,
        shapes: Shapes | None = None,
        shard: bool | None = None,
    ) -> None:
        _check(config, [], max_new_tokens, temperature, top_p)
        self.mesh = lm_shard.local_mesh(shard)
        if drafts is not None and not 0 <= drafts <= MAX_DRAFTS:
            raise ValueError(f"drafts must be in [0, {MAX_DRAFTS}], got {drafts}")
        self.params, self.config = lm_shard.replicate(params, self.mesh), config
        self.max_new_tokens = int(max_new_tokens)
        self.max_rows = 1 << (max(1, max_batch).bit_length() - 1)  # a power of two
        self.share_prefixes = share_prefixes
        self.drafts = drafts
        n_stop = max(STOP_SLOTS, -(-len(stop_token_ids) // STOP_SLOTS) * STOP_SLOTS)
        stop = np.full((n_stop,), -1, np.int32)
        stop[: len(stop_token_ids)] = np.asarray(list(stop_token_ids), np.int32)
        self.sampling = lm_shard.replicate(
            D.Sampling(
                jnp.asarray(stop),
                jnp.float32(max(temperature, 1e-6)),
                jnp.float32(top_p),
                jnp.int32(pad_id),
                jnp.asarray(temperature == 0),
                jnp.asarray(top_p < 1.0),
            ),
            self.mesh,
        )
        # a step may look MAX_DRAFTS tokens past the last one
        self._most_window = self.max_new_tokens + MAX_DRAFTS
        self._first_window = min(FIRST_WINDOW, self._most_window)
        self.rows: int | None = None
        self.prefix_len = self.suffix_len = 0
        self._slots: D.Slots | None = None
        self._holder: list[Group | None] = []
        self._waiting: deque[Group] = deque()
        self._keys: dict[int, np.ndarray] = {}
        self._copy: dict[int, str] = {}
        self.copy_vocab = lm_shard.replicate(copy_vocab, self.mesh)
        self.shapes = shapes
        self._next = 0

    @property
    def busy(self) -> bool:
        """Whether prompts are waiting or sampling."""
        return bool(self._waiting) or any(h is not None for h in self._holder)

    def add(
        self,
        prompts: Sequence[Sequence[int]],
        keys: np.ndarray,
        copy: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Queue ``prompts`` (token ids) sampled with raw row keys ``keys`` [n, 2] (from
        ``jax.random.key_data``); returns their ids. ``copy``: per prompt, the parent
        program its diff must copy (``None``: unconstrained; needs ``copy_vocab``).
        Raises ``ValueError`` for an empty prompt or one that leaves no room for the new
        tokens within ``n_ctx``."""
        _check(self.config, prompts, self.max_new_tokens, 0.0, 1.0)
        if copy is not None:
            if self.copy_vocab is None:
                raise ValueError("copy-constrained prompts need a Sampler with copy_vocab")
            if len(copy) != len(prompts):
                raise ValueError(f"{len(copy)} parents for {len(prompts)} prompts")
        if not prompts:
            return []
        ids = list(range(self._next, self._next + len(prompts)))
        self._next += len(prompts)
        plan = make_plan(
            prompts,
            self.max_new_tokens,
            self.max_rows,
            self.share_prefixes,
            rows=self.rows,
            shapes=self.shapes,
        )
        self.rows = plan.rows
        self.prefix_len = max(self.prefix_len, plan.prefix_len)
        self.suffix_len = max(self.suffix_len, plan.suffix_len)
        for g in plan.groups:
            members = tuple(ids[m] for m in g.members)
            self._waiting.append(dataclasses.replace(g, members=members))
        for i, k in zip(ids, np.asarray(keys), strict=True):
            self._keys[i] = k
        for i, text in zip(ids, copy or (), strict=False):
            if text is not None:
                self._copy[i] = text
        return ids

    def _slot_count(self, groups: int) -> int:
        """Slots for ``groups`` groups: the next power of two, rounded up to a multiple of
        the device count."""
        return lm_shard.padded_rows(bucket_batch(groups), self.mesh)

    def _placed(self, slots: D.Slots) -> D.Slots:
        """``slots`` split over the devices by group (no copy when they already are)."""
        return lm_shard.split_rows(slots, self.mesh)

    def _prefill(self, groups: Sequence[Group], n: int) -> D.Slots:
        assert self.rows is not None
        arrays = _arrays(self.rows, self.prefix_len, self.suffix_len, groups, n, self._keys)
        arrays = lm_shard.split_rows(arrays, self.mesh)
        chunks = D.prefill_chunks(
            self.config, n, self.rows, self.prefix_len, self.suffix_len, self._first_window
        )
        copy = None
        if self.copy_vocab is not None:
            texts = [None] * (n * self.rows)
            for g, group in enumerate(groups):
                for j, m in enumerate(group.members):
                    texts[g * self.rows + j] = self._copy.get(m)
            *data, mode = C.copy_text(texts, (n, self.rows))
            copy = (C.CopyText(*map(jnp.asarray, data)), C.initial_state(mode))
            copy = lm_shard.split_rows(copy, self.mesh)
        slots = D.prefill(
            self.params,
            *map(jnp.asarray, arrays),
            self.sampling,
            copy,
            self.copy_vocab,
            new_tokens=self.max_new_tokens,
            window=self._first_window,
            chunks=chunks,
            config=self.config,
        )
        return self._placed(slots)

    def _harvest(self, done_slots: list[int]) -> list[tuple[int, Generation]]:
        state = self._slots
        assert state is not None
        out, count, stopped, steps = (
            np.asarray(a) for a in (state.out, state.count, state.stopped, state.steps)
        )
        results = []
        for g in done_slots:
            group = self._holder[g]
            assert group is not None
            for j, m in enumerate(group.members):
                reason = "stop" if stopped[g, j] else "length"
                gen = Generation(out[g, j, : count[g, j]].tolist(), reason, int(steps[g, j]))
                results.append((m, gen))
                del self._keys[m]
                self._copy.pop(m, None)
            self._holder[g] = None
        return results

    def _admit(self) -> None:
        """Waiting groups into free slots (widening the slots and fitting the caches to
        longer prompts first if needed).

        Groups are prefilled one at a time (one a device on several, :meth:`_slot_count`
        of one) and put into their slots, so that a shape needs one prefill program
        however many groups a refill brings. The work is the same as a batched prefill's:
        that one runs long prefixes a group at a time too
        (:func:`jelm.lm.sampling.device.prefill_chunks`)."""
        assert self.rows is not None
        max_slots = max(1, self.max_rows // self.rows)
        n_live = sum(h is not None for h in self._holder)
        want = self._slot_count(min(n_live + len(self._waiting), max_slots))
        step = self._slot_count(1)
        if self._slots is None:
            new = [self._waiting.popleft() for _ in range(min(step, len(self._waiting)))]
            slots = self._prefill(new, step)
            self._holder = [*new, *[None] * (step - len(new))]
        else:
            slots = self._slots
            if (slots.prefix_mask.shape[1], slots.suffix_mask.shape[2]) != (
                self.prefix_len,
                self.suffix_len,
            ):
                slots = self._placed(D.fit(slots, self.prefix_len, self.suffix_len))
        size = len(self._holder)
        if want > size:
            slots = self._placed(D.widen(slots, want))
            self._holder += [None] * (want - size)
            size = want
        free = [g for g in range(size) if self._holder[g] is None]
        while free and self._waiting:
            new = [self._waiting.popleft() for _ in range(min(step, len(free), len(self._waiting)))]
            at = np.full((step,), size, np.int32)  # padding entries point past the end
            at[: len(new)] = free[: len(new)]
            fresh = self._prefill(new, step)
            if D.window_of(slots) > self._first_window:
                fresh = self._placed(D.grow(fresh, D.window_of(slots)))
            slots = self._placed(D.insert(slots, fresh, jnp.asarray(at)))
            for g, group in zip(free, new, strict=False):
                self._holder[g] = group
            free = free[len(new) :]
        self._slots = slots

    def run(self, max_steps: int | None = None) -> list[tuple[int, Generation]]:
        """Sample until some prompts finish, or ``max_steps`` decode steps have run, or
        nothing is left; returns the finished prompts as ``(id, Generation)``."""
        results: list[tuple[int, Generation]] = []
        while self.busy:
            if self._slots is not None:
                live = np.asarray(self._slots.live)
                finished = [g for g, h in enumerate(self._holder) if h is not None and not live[g]]
                if finished:
                    results += self._harvest(finished)
            if results:
                return results
            if self._waiting and (
                self._slots is None
                or any(h is None for h in self._holder)
                or len(self._holder) < max(1, self.max_rows // (self.rows or 1))
            ):
                self._admit()
                continue
            slots = self._slots
            assert slots is not None
            size = len(self._holder)
            n_live = sum(h is not None for h in self._holder)
            smaller = self._slot_count(n_live)
            if not self._waiting and size >= MIN_PACK and n_live <= size // PACK and smaller < size:
                keep = [g for g in range(size) if self._holder[g] is not None]
                pad = [g for g in range(size) if self._holder[g] is None][: smaller - n_live]
                self._slots = self._placed(D.take(slots, jnp.asarray(keep + pad, jnp.int32)))
                self._holder = [self._holder[g] for g in keep] + [None] * len(pad)
                continue
            assert self.rows is not None
            drafts = default_drafts(size, self.rows) if self.drafts is None else self.drafts
            window = D.window_of(slots)
            active = np.asarray(slots.live)[:, None] & ~np.asarray(slots.done)
            if np.any(active & (np.asarray(slots.step) + drafts + 1 > window)):
                self._slots = self._placed(D.grow(slots, self._most_window))
                continue
            min_live = size // PACK if (not self._waiting and size >= MIN_PACK) else 0
            self._slots = D.decode(
                self.params,
                slots,
                self.sampling,
                jnp.asarray(bool(self._waiting)),
                jnp.int32(min_live),
                jnp.int32(2**30 if max_steps is None else max_steps),
                self.copy_vocab,
                config=self.config,
                drafts=drafts,
            )
            self._slots = self._placed(self._slots)
            if max_steps is not None:
                live = np.asarray(self._slots.live)
                finished = [g for g, h in enumerate(self._holder) if h is not None and not live[g]]
                return self._harvest(finished)
        return results


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
    drafts: int | None = None,
    copy: Sequence[str | None] | None = None,
    copy_vocab: C.CopyVocab | None = None,
    shapes: Shapes | None = None,
    shard: bool | None = None,
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

    Up to ``drafts`` tokens per row and step are guessed by prompt lookup and checked
    against the model's own samples (:func:`jelm.lm.sampling.device.decode`): the tokens
    are the same for any ``drafts``, which sets only the speed (``None``: by the rows
    sampling at once, :func:`default_drafts`; 0: one token per step).

    ``copy`` (with ``copy_vocab``, :func:`jelm.lm.sampling.copy.copy_vocab`): per prompt,
    the parent program whose diff the row writes, or ``None``; a row with a parent writes
    only context and removed lines that are the parent's, in order
    (:mod:`jelm.lm.sampling.copy`).

    ``shapes``: a :class:`jelm.lm.sampling.plan.Shapes` kept across calls; a call reuses a
    shape compiled before when it is nearly as cheap as its own (the tokens are the same
    either way).

    ``shard``: spread the rows over every local device (``None``: unless
    ``$JELM_LM_SHARD=0``; :class:`Sampler`); the tokens are the same either way.

    Raises ``ValueError`` for an empty prompt or one that leaves no room for
    ``max_new_tokens`` within ``config.n_ctx`` positions.
    """
    _check(config, prompts, max_new_tokens, temperature, top_p)
    if not prompts:
        return []
    sampler = Sampler(
        params,
        config,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop_token_ids=stop_token_ids,
        pad_id=pad_id,
        max_batch=max_batch,
        share_prefixes=share_prefixes,
        drafts=drafts,
        copy_vocab=copy_vocab if copy is not None else None,
        shapes=shapes,
        shard=shard,
    )
    keys = np.asarray(
        jax.random.key_data(
            jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(len(prompts)))
        )
    )
    ids = sampler.add(prompts, keys, copy)
    results: dict[int, Generation] = {}
    while sampler.busy:
        results.update(sampler.run())
    return [results[i] for i in ids]
