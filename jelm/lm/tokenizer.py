"""jelm's tokenizer: byte-level BPE trained on the diff corpus, or a local Hugging Face one.

ELM's diff models (§3.1) read and write ``<NME> {file} <BEF> parent <MSG> message <DFF>
diff``. jelm trains its own byte-level BPE (the GPT-2 scheme, via ``tokenizers``) on its
domain's corpus, with the format's markers as special tokens at fixed ids::

    0 <|endoftext|>   1 <NME>   2 <BEF>   3 <MSG>   4 <DFF>

so each marker is always one token, also inside text. Byte-level means every string
round-trips: ``decode(encode(x)) == x``. :meth:`Tokenizer.from_hf` wraps the tokenizer of
a local Hugging Face checkpoint (local files only) behind the same interface, for models
loaded by :mod:`jelm.lm.hf`. A trained tokenizer is one ``tokenizer.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    pass

__all__ = ["SPECIAL_TOKENS", "Tokenizer"]

#: The ELM diff format's markers, at ids 0..4 of every tokenizer jelm trains.
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<NME>", "<BEF>", "<MSG>", "<DFF>")
EOS_TOKEN = SPECIAL_TOKENS[0]
_FILE = "tokenizer.json"


def _json_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/tokenizer.json`` when ``path`` is a directory."""
    p = Path(path)
    return p / _FILE if p.is_dir() else p


class Tokenizer:
    """Byte-level BPE (tokenizers library) or a Hugging Face tokenizer, one interface.

    Attributes:
        vocab_size: ids are ``0 .. vocab_size - 1`` (special and added tokens included).
        eos_id: the id of ``<|endoftext|>`` (or the HF tokenizer's EOS token).
        pad_id: the padding id: the HF tokenizer's pad token if it has one, else ``eos_id``
            (padding is always masked out, so sharing the id is harmless).
    """

    def __init__(self, backend: tokenizers.Tokenizer | None = None, *, hf: Any = None) -> None:
        if (backend is None) == (hf is None):
            raise ValueError("give exactly one of a tokenizers.Tokenizer or an HF tokenizer")
        self._tok = backend
        self._hf = hf
        if backend is not None:
            self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
            eos = backend.token_to_id(EOS_TOKEN)
            pad = None
        else:
            self.vocab_size = len(hf)
            eos = hf.convert_tokens_to_ids(EOS_TOKEN) if EOS_TOKEN in hf.get_vocab() else None
            eos = hf.eos_token_id if hf.eos_token_id is not None else eos
            pad = hf.pad_token_id
        if eos is None:
            raise ValueError(f"the tokenizer has no {EOS_TOKEN} / EOS token")
        self.eos_id: int = int(eos)
        self.pad_id: int = int(pad) if pad is not None else self.eos_id

    # construction ------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> Tokenizer:
        """Train a byte-level BPE of ``vocab_size`` tokens (specials at ids 0..4) on ``texts``."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)}")
        tok = tokenizers.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        for i, s in enumerate(SPECIAL_TOKENS):
            if tok.token_to_id(s) != i:  # pragma: no cover - the trainer's documented order
                raise RuntimeError(f"special token {s} got id {tok.token_to_id(s)}, not {i}")
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a ``tokenizer.json`` (or the one inside directory ``path``)."""
        return cls(tokenizers.Tokenizer.from_file(str(_json_path(path))))

    @classmethod
    def from_hf(cls, directory: str | Path) -> Tokenizer:
        """Wrap the tokenizer of a local Hugging Face checkpoint directory (no network)."""
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        return cls(hf=hf)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` to ``path`` (or into ``path`` if it is a directory)."""
        out = _json_path(path)
        if self._tok is not None:
            self._tok.save(str(out))
        elif getattr(self._hf, "backend_tokenizer", None) is not None:
            self._hf.backend_tokenizer.save(str(out))
        else:
            raise TypeError("a slow (non-fast) HF tokenizer cannot be saved as tokenizer.json")

    # use -----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added; special tokens in the text are kept as
        their single ids)."""
        if self._tok is not None:
            return self._tok.encode(text, add_special_tokens=False).ids
        return list(self._hf.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, in parallel where the backend can."""
        if self._tok is not None:
            return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens included (the inverse of :meth:`encode`)."""
        ids = [int(i) for i in ids]
        if self._tok is not None:
            return self._tok.decode(ids, skip_special_tokens=False)
        return self._hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` if it encodes to a single token (a special token, say),
        else ``None``."""
        ids = self.encode(token)
        return ids[0] if len(ids) == 1 else None

    def __repr__(self) -> str:
        kind = "bpe" if self._tok is not None else type(self._hf).__name__
        return f"Tokenizer({kind}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"
