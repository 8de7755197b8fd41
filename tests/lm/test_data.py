"""jelm.lm.data: the diff model's training examples in the ELM format (§3.1), the loss
on the diff only, and static-shape batches."""

from __future__ import annotations

import numpy as np
import pytest

from jelm.domains.base import CorpusExample
from jelm.lm import data as D
from jelm.lm.tokenizer import Tokenizer

EXAMPLE = CorpusExample(
    parent="def make_walker():\n    return 1\n",
    child="def make_walker():\n    return 2\n",
    message="Changed make_walker function.",
    diff="--- w.py\n+++ w.py\n@@ -2 +2 @@\n-    return 1\n+    return 2\n",
)


def test_training_text_is_the_elm_format():
    prompt, target = D.training_text(EXAMPLE, "w.py")
    assert prompt == (
        "<NME> w.py\n<BEF> def make_walker():\n    return 1\n"
        "<MSG> Changed make_walker function.\n<DFF> "
    )
    assert target == EXAMPLE.diff


def test_encode_puts_the_loss_on_the_diff_and_eos_only():
    prompt, target = D.training_text(EXAMPLE, "w.py")
    tok = Tokenizer.train([prompt + target] * 4, vocab_size=300)
    (enc,) = D.encode([EXAMPLE], tok, n_ctx=512, file_name="w.py")
    n_prompt, n_target = len(tok.encode(prompt)), len(tok.encode(target))
    assert enc.tokens.tolist() == [*tok.encode(prompt), *tok.encode(target), tok.eos_id]
    assert enc.mask.tolist() == [0.0] * n_prompt + [1.0] * (n_target + 1)
    assert D.encode([EXAMPLE], tok, n_ctx=n_prompt + n_target, file_name="w.py") == []


def test_bucket_of_and_batches_have_static_shapes():
    assert D.bucket_of(1, (8, 16)) == 8 and D.bucket_of(9, (8, 16)) == 16
    with pytest.raises(ValueError, match="exceed the largest bucket"):
        D.bucket_of(17, (8, 16))
    lengths = (3, 5, 8, 9, 12, 16, 2, 7)
    data = [  # token ids from 1: 0 is the padding
        D.Encoded(np.arange(1, n + 1, dtype=np.int32), (np.arange(n) >= n // 2).astype(np.float32))
        for n in lengths
    ]
    batches = D.make_batches(data, (8, 16), 32, pad_id=0, rng=np.random.default_rng(0))
    assert {tokens.shape for tokens, _ in batches} == {(4, 8), (2, 16)}
    # rows per batch = 32 // bucket: 4 of the 5 short examples make one batch, 2 of the 3
    # long ones another; the examples left over wait for the next epoch's shuffle
    real = {tokens.shape[1]: int((tokens > 0).sum()) for tokens, _ in batches}
    assert real[8] in {25 - n for n in (3, 5, 8, 2, 7)}
    assert real[16] in {37 - n for n in (9, 12, 16)}
    for tokens, mask in batches:
        assert not mask[tokens == 0].any()  # padding is never trained on
        assert tokens.shape == mask.shape
