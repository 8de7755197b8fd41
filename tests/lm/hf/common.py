"""Shared parts of the jelm.lm.hf tests: the texts of the tokenizer, and torch's and
jelm's logits with explicit positions (left padding)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jelm.lm import model as M

TEXTS = [
    "def make_walker():\n    wc = walker_creator()\n",
    "    j0 = wc.add_joint(0, 0)\n    j1 = wc.add_joint(1, 2)\n",
    "    wc.add_muscle(j0, j1, 3.0, 0.5)\n    return wc.get_walker()\n",
    "the quick brown fox jumps over the lazy dog\n",
] * 10
#: A text the round-trip tests encode with both tokenizers (special token included).
SAMPLE_TEXT = "def make_walker():\n    wc.add_muscle(j0, j1, 3.0, 0.5)<|endoftext|>"

_forward = jax.jit(M.forward, static_argnames="config")


def torch_logits(model, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits of a transformers model on left-padded ``tokens`` (positions over real ones)."""
    import torch

    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            position_ids=torch.tensor(positions, dtype=torch.long),
        ).logits.numpy()


def jelm_logits(params, config, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Logits of a jelm model on left-padded ``tokens``, the twin of :func:`torch_logits`;
    jitted as jelm runs it (op by op, a pass compiles each operation on its own)."""
    mask = jnp.asarray(mask)
    positions = M.positions_from_mask(mask)
    return np.asarray(_forward(params, config, jnp.asarray(tokens), positions, mask))
