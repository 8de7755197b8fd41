"""Shared test helper: a tiny random jelm diff model saved to a directory.

The model is real (``jelm.lm.model.init_params``, ``jelm.lm.checkpoint.save_model``) but
untrained: it writes random text in the vocabulary of a byte-level BPE trained here on the
seed walkers and an ELM diff example (Lehman et al. 2022, §3.1 format), so what it writes
looks like code and diffs token by token but never applies. Small enough that generating
a batch takes milliseconds once compiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jelm.domains.sodarace.prompts import COMMIT_MESSAGES
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.lm.checkpoint import save_model
from jelm.lm.model import ModelConfig, init_params
from jelm.lm.tokenizer import Tokenizer
from jelm.mutation.base import unified_diff
from jelm.programs.diff import elm_example

WRITER_MAX_NEW = 96  # the writer model's diff is 85 tokens, then EOS
#: What a writer model (make_writer_model) of these texts writes: a diff setting the radial
#: seed's radius to 7, 8 or 9 (drawn by the sampler). It applies to the radial seed only.
WRITTEN_DIFFS = [
    "--- walker.py\n+++ walker.py\n@@ -13 +13 @@\n"
    "-RADIUS = 6.0  # distance from the centre to the rim\n"
    f"+RADIUS = {radius}.0  # distance from the centre to the rim\n"
    for radius in (7, 8, 9)
]

#: Texts a backend test model's tokenizer is trained on: ELM diff-format pieces and prose.
BACKEND_TEXTS = [
    "<NME> walker.py\n<BEF> def make_walker():\n    wc = walker_creator()\n",
    "<MSG> Changed make_walker function.\n<DFF> --- walker.py\n+++ walker.py\n",
    "@@ -1,3 +1,3 @@\n-    j0 = wc.add_joint(0, 0)\n+    j0 = wc.add_joint(1, 0)\n",
    "the quick brown fox jumps over the lazy dog " * 3,
]


def tokenizer_texts() -> list[str]:
    """Texts to train the tiny tokenizer on: the seed programs and one ELM diff example."""
    square = seed_source("square")
    child = square.replace("10", "7", 1)
    prompt, diff = elm_example(
        square, COMMIT_MESSAGES[0][0], unified_diff(square, child, "walker.py"), "walker.py"
    )
    return [seed_source(name) for name in SEED_NAMES] + [prompt + diff]


def make_tiny_model(
    directory: str | Path,
    *,
    seed: int = 0,
    n_ctx: int = 128,
    d_model: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    vocab_size: int = 400,
    texts: Sequence[str] | None = None,
) -> Path:
    """Write a tiny random GPT-2-style jelm model (config.json, tokenizer.json, params/) to
    ``directory`` and return it; ``seed`` picks the random weights, ``texts`` what the
    tokenizer is trained on (default: :func:`tokenizer_texts`)."""
    tok = Tokenizer.train(tokenizer_texts() if texts is None else texts, vocab_size=vocab_size)
    config = ModelConfig(
        vocab_size=tok.vocab_size, n_ctx=n_ctx, d_model=d_model, n_layer=n_layer, n_head=n_head
    )
    params = init_params(config, jax.random.key(seed))
    path = Path(directory)
    save_model(path, params, config, tok)
    return path


def make_writer_model(
    directory: str | Path,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    n_ctx: int = 192,
    d_model: int = 128,
    seed: int = 0,
) -> Path:
    """Write a jelm model that, asked by :class:`jelm.lm.backends.JelmBackend` with this
    ``max_new_tokens`` to continue any prompt of at least ``n_ctx - max_new_tokens`` tokens,
    writes one of ``texts`` (equally likely) and then ``<|endoftext|>``.

    ``texts`` must tokenize to the same number of tokens and differ in one token (e.g. a
    digit); there the model's logits are equal for each text's token, elsewhere it writes the
    common token with a margin of tens of nats. With ``top_p <= 0.95`` and temperatures up to
    about 1 a completion is always one of ``texts``, picked by the sampling key (so it
    replays exactly for a given seed); greedy decoding always picks the same one.

    The weights are set, not trained: unit-norm token embeddings, the blocks' output
    projections zeroed (each block adds nothing to the residual stream), and the position
    embedding of each position that predicts a token set along that token's embedding (or
    along the direction equally close to each candidate's), minus the embedding of the
    token before it when that one is known, so the tied output head reads the position.
    JelmBackend keeps the last ``n_ctx - max_new_tokens`` tokens of a longer prompt, so the
    first new token is always predicted at the same position. Everything else (the
    tokenizer, the model code, sampling, stop tokens, save/load) is the real thing.
    """
    if not texts:
        raise ValueError("give at least one text to write")
    tok = Tokenizer.train([*tokenizer_texts(), *texts, *texts], vocab_size=400)
    encoded = [[*tok.encode(text), int(tok.eos_id)] for text in texts]
    length = len(encoded[0])
    if any(len(e) != length for e in encoded):
        raise ValueError(f"the texts tokenize to different lengths: {[len(e) for e in encoded]}")
    if length > max_new_tokens or max_new_tokens >= n_ctx:
        raise ValueError(f"{length} tokens to write need max_new_tokens >= {length} and < n_ctx")
    config = ModelConfig(
        vocab_size=tok.vocab_size, n_ctx=n_ctx, d_model=d_model, n_layer=1, n_head=2
    )
    params = jax.tree_util.tree_map(np.array, init_params(config, jax.random.key(seed)))
    rng = np.random.default_rng(seed)
    wte = rng.normal(size=(config.vocab_size, d_model))
    wte -= wte.mean(axis=1, keepdims=True)  # LayerNorm removes the mean anyway
    wte /= np.linalg.norm(wte, axis=1, keepdims=True)
    params["wte"]["embedding"] = wte.astype(np.float32)
    wpe = np.zeros((n_ctx, d_model), np.float32)
    first = n_ctx - max_new_tokens - 1  # the last prompt token's position
    for j in range(length):
        candidates = wte[sorted({e[j] for e in encoded})]
        # the direction with equal dot products with every candidate (least norm)
        direction = candidates.T @ np.linalg.solve(
            candidates @ candidates.T, np.ones(len(candidates))
        )
        wpe[first + j] = 8.0 * direction / np.linalg.norm(direction)
        previous = {e[j - 1] for e in encoded} if j else set()
        if len(previous) == 1:  # cancel the known previous token's embedding
            wpe[first + j] -= wte[previous.pop()]
    params["wpe"]["embedding"] = wpe
    for name, block in params.items():
        if name.startswith("h_"):
            for layer in (block["attn"]["out"], block["mlp"]["fc_out"]):
                layer["kernel"][...] = 0.0
                layer["bias"][...] = 0.0
    params["ln_f"]["scale"][...] = 20.0
    params["ln_f"]["bias"][...] = 0.0
    path = Path(directory)
    save_model(path, jax.tree_util.tree_map(jnp.asarray, params), config, tok)
    return path
