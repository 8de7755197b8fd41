"""Tests for jelm.lm.tokenizer: byte-level BPE for the ELM diff format (§3.1) and the
Hugging Face wrapper, on real tokenizers (no mocks): one trained here on a small corpus,
one GPT-2-style tokenizer built with ``tokenizers`` and saved by ``transformers``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jelm.domains import make_domain
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.lm import data
from jelm.lm.data import train_tokenizer
from jelm.lm.tokenizer import SPECIAL_TOKENS, Tokenizer

DOMAIN = make_domain("sodarace")
FILE_NAME = DOMAIN.program.file_name

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def corpus():
    return DOMAIN.corpus(400, 5)


@pytest.fixture(scope="module")
def tok(corpus) -> Tokenizer:
    return train_tokenizer(corpus, FILE_NAME, vocab_size=4096)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A GPT-2-style tokenizer (byte-level BPE, ``<|endoftext|>``) saved the way a Hugging
    Face checkpoint ships it, built here from the seed programs."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = tokenizers.Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator([seed_source(n) for n in SEED_NAMES] * 3, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    directory = tmp_path_factory.mktemp("gpt2ish")
    hf.save_pretrained(directory)
    return directory


TEXTS = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(
            st.sampled_from(SPECIAL_TOKENS),
            st.text(max_size=20),
            st.sampled_from(
                ["    ", "\n", "\t", " <NME", "<DFF >", "|>", "wc.add_muscle(", "é", "🎉"]
            ),
        ),
        max_size=12,
    ).map("".join),
)


def test_special_tokens_are_ids_0_to_4(tok):
    assert SPECIAL_TOKENS == ("<|endoftext|>", "<NME>", "<BEF>", "<MSG>", "<DFF>")
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_id(s) == i
        assert tok.encode(s) == [i]
        assert tok.decode([i]) == s
    assert tok.eos_id == 0 and tok.pad_id == 0
    assert tok.token_id("wc.add_muscle(corners[1]") is None


def test_special_tokens_survive_inside_text(tok, corpus):
    prompt, target = data.training_text(corpus[0], FILE_NAME)
    ids = tok.encode(prompt + target + "<|endoftext|>")
    assert ids[0] == 1  # <NME>
    assert ids.count(2) == 1 and ids.count(3) == 1 and ids.count(4) == 1 and ids[-1] == 0
    glued = "x<NME>y<|endoftext|><DFF>z"
    ids = tok.encode(glued)
    assert [i for i in ids if i < 5] == [1, 0, 4]
    assert tok.decode(ids) == glued


@PROPERTY
@given(TEXTS)
def test_round_trip_any_text(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_round_trip_corpus_and_seeds(tok, corpus):
    texts = [seed_source(n) for n in SEED_NAMES] + [
        "".join(data.training_text(e, FILE_NAME)) + "<|endoftext|>" for e in corpus[:100]
    ]
    batch = tok.encode_batch(texts)
    for text, ids in zip(texts, batch, strict=True):
        assert ids == tok.encode(text)
        assert tok.decode(ids) == text


def test_compression_and_context_fit(tok, corpus):
    chars = sum(len(seed_source(n)) for n in SEED_NAMES)
    tokens = sum(len(tok.encode(seed_source(n))) for n in SEED_NAMES)
    ratio = chars / tokens
    print(f"\nchars/token on the seeds: {ratio:.2f} (vocab {tok.vocab_size})")
    assert ratio > 3.0
    assert 261 <= tok.vocab_size <= 4096
    lengths = []
    for e in corpus:
        prompt, target = data.training_text(e, FILE_NAME)
        lengths.append(len(tok.encode(prompt)) + len(tok.encode(target)) + 1)
    print(f"prompt+diff tokens: p50 {np.median(lengths):.0f}, max {max(lengths)}")
    assert max(lengths) <= 2048


def test_save_and_load_are_equal(tok, corpus, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = Tokenizer.from_file(path)
    assert loaded.vocab_size == tok.vocab_size
    assert (loaded.eos_id, loaded.pad_id) == (tok.eos_id, tok.pad_id)
    text = "".join(data.training_text(corpus[1], FILE_NAME)) + "<|endoftext|> é🎉"
    assert loaded.encode(text) == tok.encode(text)
    assert loaded.decode(tok.encode(text)) == text
    # a directory works too; the file is plain tokenizers JSON with the specials first
    tok.save(tmp_path)
    assert Tokenizer.from_file(tmp_path).encode(text) == tok.encode(text)
    added = json.loads(path.read_text())["added_tokens"]
    assert [(t["id"], t["content"]) for t in added] == list(enumerate(SPECIAL_TOKENS))


def test_train_is_deterministic_and_checks_vocab_size():
    texts = [seed_source(n) for n in SEED_NAMES]
    a, b = Tokenizer.train(texts, vocab_size=500), Tokenizer.train(texts, vocab_size=500)
    assert a.vocab_size == b.vocab_size <= 500
    assert a.encode(texts[0]) == b.encode(texts[0])
    with pytest.raises(ValueError, match="vocab_size must be at least 261"):
        Tokenizer.train(texts, vocab_size=100)


def test_from_hf_wraps_a_local_gpt2_style_tokenizer(hf_dir, tmp_path):
    hf = Tokenizer.from_hf(hf_dir)
    eos = hf.token_id("<|endoftext|>")
    assert eos is not None and hf.eos_id == eos and hf.pad_id == eos
    text = seed_source("square") + "<|endoftext|>"
    ids = hf.encode(text)
    assert ids[-1] == eos and hf.decode(ids) == text
    assert hf.vocab_size >= max(ids) + 1
    # the ELM markers are not special tokens of this tokenizer: several tokens each
    assert hf.token_id("<NME>") is None
    hf.save(tmp_path / "tokenizer.json")
    assert Tokenizer.from_file(tmp_path / "tokenizer.json").encode(text) == ids
    with pytest.raises(OSError, match="missing"):
        Tokenizer.from_hf(tmp_path / "missing")


@PROPERTY
@given(TEXTS)
def test_from_hf_round_trip(hf_dir, text):
    hf = _HF.setdefault(str(hf_dir), Tokenizer.from_hf(hf_dir))
    assert hf.decode(hf.encode(text)) == text


_HF: dict[str, Tokenizer] = {}
