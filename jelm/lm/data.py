"""The diff model's training data (ELM §3.1): examples in the diff format, tokenized, with
the loss on the diff only, grouped into static-shape batches.

Each example becomes ``<NME> {file} <BEF> {parent} <MSG> {message} <DFF>`` (the prompt)
and its unified diff plus EOS (the target, the only tokens with loss). Sequences are
grouped by length into a few buckets, each with its own static batch shape (tokens per
batch constant), so the training step compiles once per bucket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from jelm.lm.tokenizer import EOS_TOKEN, Tokenizer
from jelm.programs.diff import elm_example

if TYPE_CHECKING:
    from jelm.domains.base import CorpusExample

__all__ = ["Encoded", "bucket_of", "encode", "make_batches", "train_tokenizer", "training_text"]


def training_text(example: CorpusExample, file_name: str) -> tuple[str, str]:
    """``(prompt, target)``: the example's ELM prompt and its diff (the trainer adds EOS)."""
    return elm_example(example.parent, example.message, example.diff, file_name)


@dataclasses.dataclass
class Encoded:
    """One tokenized example: tokens and the loss mask (1 on diff tokens and the EOS)."""

    tokens: np.ndarray
    mask: np.ndarray


def encode(
    examples: Sequence[CorpusExample], tokenizer: Tokenizer, n_ctx: int, file_name: str
) -> list[Encoded]:
    """Tokenize examples in the diff format; examples longer than ``n_ctx`` are dropped."""
    out = []
    for example in examples:
        prompt, target = training_text(example, file_name)
        p = tokenizer.encode(prompt)
        t = [*tokenizer.encode(target), tokenizer.eos_id]
        if len(p) + len(t) > n_ctx:
            continue
        tokens = np.asarray(p + t, np.int32)
        mask = np.zeros(len(tokens), np.float32)
        mask[len(p) :] = 1.0
        out.append(Encoded(tokens, mask))
    return out


def bucket_of(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``length`` tokens."""
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"{length} tokens exceed the largest bucket {buckets[-1]}")


def make_batches(
    data: Sequence[Encoded],
    buckets: Sequence[int],
    tokens_per_batch: int,
    pad_id: int,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffle, group by bucket and cut into static-shape batches (tokens, mask) of
    ``tokens_per_batch // bucket`` rows; the examples left over wait for the next call."""
    shuffled = [data[int(k)] for k in rng.permutation(len(data))]
    batches = []
    for length, items in by_bucket(shuffled, buckets).items():
        rows = max(1, tokens_per_batch // length)
        for start in range(0, len(items) - rows + 1, rows):
            batches.append(batch_of(items[start : start + rows], rows, length, pad_id))
    order = rng.permutation(len(batches))
    return [batches[int(k)] for k in order]


def by_bucket(data: Sequence[Encoded], buckets: Sequence[int]) -> dict[int, list[Encoded]]:
    """``data`` grouped by the bucket each example's length falls in, in order."""
    out: dict[int, list[Encoded]] = {}
    for item in data:
        out.setdefault(bucket_of(len(item.tokens), buckets), []).append(item)
    return out


def batch_of(
    items: Sequence[Encoded], rows: int, length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """``items`` as one static-shape batch (tokens, mask) of ``rows`` rows of ``length``
    tokens; rows past the items are padding that carries no loss."""
    tokens = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), np.float32)
    for r, item in enumerate(items):
        tokens[r, : len(item.tokens)] = item.tokens
        mask[r, : len(item.mask)] = item.mask
    return tokens, mask


def train_tokenizer(
    corpus: Sequence[CorpusExample],
    file_name: str,
    vocab_size: int = 4096,
    max_examples: int = 4000,
) -> Tokenizer:
    """A byte-level BPE trained on ``corpus``: each example's ELM prompt (``<NME>
    {file_name}`` header, parent, message), diff and child (§3.1 format).

    A corpus repeats the same few programs with small edits, so the merges settle on a few
    thousand examples; at most ``max_examples`` (the first ones) are used.
    """

    def texts() -> Iterable[str]:
        for e in corpus[:max_examples]:
            prompt, target = training_text(e, file_name)
            yield prompt + target + EOS_TOKEN
            yield e.child

    return Tokenizer.train(texts(), vocab_size=vocab_size)
