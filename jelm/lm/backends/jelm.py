"""Backends of kinds ``jelm`` and ``hf``: a model sampled on the JAX device (ELM §3.1).

:class:`JelmBackend` samples a jelm checkpoint (``jelm.lm.checkpoint``; the small diff
model jelm ships in ``jelm/lm/shipped``) or a local Hugging Face checkpoint
(``jelm.lm.hf.load_hf``) in batches with :func:`jelm.lm.sampling.generate` (KV cache,
jit, padded shape buckets).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jelm.lm.backends.base import (
    PLAIN_CHAT_STOP,
    SHIPPED_DIR,
    BackendKind,
    Completion,
    cut_at_stop,
    error_completion,
    render_chat_plain,
)

__all__ = ["HF_KIND", "JELM_KIND", "CompletionStream", "JelmBackend"]


class JelmBackend:
    """A jelm (or converted Hugging Face) model sampled on the JAX device.

    Prompts are encoded with the model's tokenizer and sampled by
    ``jelm.lm.sampling.generate`` (continuous batching of at most ``max_batch`` rows, shared
    prefixes, jit; shapes are padded to buckets, so a long ELM run compiles a handful of
    programs once).
    A prompt longer than ``n_ctx - max_new_tokens`` tokens keeps its *last* tokens (the
    ``<MSG>``/``<DFF>`` tail of an ELM prompt matters most); ``Completion.truncated`` says
    how many were dropped. Stop strings that are single tokens (``<|endoftext|>``,
    ``<NME>``, ...) stop rows on the device (EOS always does); every stop string also cuts
    the decoded text on the host at its first occurrence. With ``copy_from``,
    :meth:`complete` samples diffs whose context and removed lines are the given parent's
    (:mod:`jelm.lm.sampling.copy`; a byte-level BPE tokenizer, see :attr:`copies`). Not
    thread-safe: one caller at a time (``jelm serve`` funnels requests through one
    batching thread).
    """

    def __init__(
        self,
        params: Any,
        config: Any,
        tokenizer: Any,
        *,
        name: str = "jelm",
        max_batch: int = 32,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch = int(max_batch)
        self._copy_vocab: Any = None
        self._copy_error: str | None = None
        from jelm.lm.sampling import Shapes

        self.shapes = Shapes()  # shapes compiled for earlier calls, reused when cheap

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], **kwargs: Any) -> JelmBackend:
        """A jelm checkpoint directory written by ``jelm.lm.checkpoint.save_model`` (raises
        ``jelm.lm.checkpoint.ModelLoadError`` naming the problem if it is not one)."""
        from jelm.lm.checkpoint import load_model

        path = Path(path)
        params, config, tokenizer = load_model(path)  # ModelLoadError says what is wrong
        kwargs.setdefault("name", f"jelm:{path.resolve().name}")
        return cls(params, config, tokenizer, **kwargs)

    @classmethod
    def shipped(cls, **kwargs: Any) -> JelmBackend:
        """The small diff model shipped with jelm in ``jelm/lm/shipped``."""
        if not (SHIPPED_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"jelm's shipped diff model is not installed ({SHIPPED_DIR} has no "
                "config.json); train one with jelm.lm.train, or use --model <dir> / hf:<dir>"
            )
        kwargs.setdefault("name", "jelm:shipped")
        return cls.from_dir(SHIPPED_DIR, **kwargs)

    @classmethod
    def from_hf(cls, path: str | os.PathLike[str], **kwargs: Any) -> JelmBackend:
        """A local Hugging Face checkpoint of a supported family (``jelm.lm.hf``)."""
        from jelm.lm.hf import load_hf

        path = Path(path)
        params, config, tokenizer = load_hf(path)
        kwargs.setdefault("name", f"hf:{path.resolve().name}")
        return cls(params, config, tokenizer, **kwargs)

    # ---- sampling ---------------------------------------------------------------------

    @property
    def copies(self) -> bool:
        """Whether :meth:`complete` can constrain diffs to copy their parents (the model's
        tokenizer is a byte-level BPE)."""
        return self.copy_vocab() is not None

    def copy_vocab(self) -> Any:
        """The tokens' bytes for copy-constrained sampling (built once), or ``None``."""
        if self._copy_vocab is None and self._copy_error is None:
            from jelm.lm.sampling.copy import copy_vocab

            try:
                self._copy_vocab = copy_vocab(self.tokenizer, int(self.config.vocab_size))
            except ValueError as exc:
                self._copy_error = str(exc)
        return self._copy_vocab

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (an empty prompt becomes a lone EOS, GPT-2's BOS)."""
        ids = list(self.tokenizer.encode(text))
        return ids or [int(self.tokenizer.eos_id)]

    def max_new(self, max_new_tokens: int) -> int:
        """``max_new_tokens`` within the model's context (at least 1)."""
        return max(1, min(int(max_new_tokens), int(self.config.n_ctx) - 1))

    def encode_within(self, text: str, max_new: int) -> tuple[list[int], int]:
        """Token ids of ``text`` that leave room for ``max_new`` tokens (its last ones) and
        how many were dropped from the front."""
        ids = self.encode(text)
        dropped = max(0, len(ids) - (int(self.config.n_ctx) - max_new))
        return ids[dropped:], dropped

    def stop_token_ids(self, stop: Sequence[str]) -> tuple[list[int], list[str]]:
        """Device-side stop ids (EOS, then every stop string that is a single token) and the
        stop strings the host cuts the decoded text at (all of them: a single-token stop
        like ``"\n"`` can also occur inside a merged BPE token, which the device misses)."""
        ids = [int(self.tokenizer.eos_id)]
        for s in stop:
            tid = self.tokenizer.token_id(s) if s else None
            if tid is not None and int(tid) not in ids:
                ids.append(int(tid))
        return ids, [s for s in stop if s]

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
        seed: int = 0,
        copy_from: Sequence[str | None] | None = None,
    ) -> list[Completion]:
        """Sample one completion per prompt (on the device, at most ``max_batch`` rows at
        once; prompt ``i`` samples with ``fold_in(fold_in(key(seed), 0), i)``).
        ``copy_from``: per prompt, the parent program its diff must copy, or ``None``
        (raises ``ValueError`` if the tokenizer cannot, see :attr:`copies`)."""
        import jax

        if copy_from is not None:
            if len(copy_from) != len(prompts):
                raise ValueError(f"{len(copy_from)} parents for {len(prompts)} prompts")
            if not self.copies:
                raise ValueError(self._copy_error or "this backend cannot copy parents")

        if isinstance(stop, str):
            stop = (stop,)
        max_new = self.max_new(max_new_tokens)
        stop_ids, host_stop = self.stop_token_ids(stop)
        out: list[Completion | None] = [None] * len(prompts)
        encoded: list[tuple[int, list[int], int]] = []
        for i, p in enumerate(prompts):
            try:
                ids, dropped = self.encode_within(p, max_new)
            except Exception as exc:  # a prompt the tokenizer rejects fails alone
                out[i] = error_completion(exc)
                continue
            encoded.append((i, ids, dropped))
        # one call: generate keeps at most max_batch rows sampling and refills their slots
        key = jax.random.fold_in(jax.random.key(int(seed)), 0)
        copy = None if copy_from is None else [copy_from[i] for i, _, _ in encoded]
        results = self._generate(
            [ids for _, ids, _ in encoded], key, max_new, temperature, top_p, stop_ids, copy
        )
        for (i, ids, dropped), comp in zip(encoded, results, strict=True):
            if isinstance(comp, BaseException):
                out[i] = error_completion(comp)
            else:
                tokens, reason = comp
                out[i] = self.finish(tokens, reason, stop_ids, host_stop, len(ids), dropped)
        return [c for c in out if c is not None]

    def stream(
        self,
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
    ) -> CompletionStream:
        """A :class:`CompletionStream`: prompts added at any time join the running batch
        (``jelm serve``'s continuous batching); all share these sampling settings."""
        return CompletionStream(self, max_new_tokens, temperature, top_p, stop)

    def _generate(
        self,
        prompts: list[list[int]],
        key: Any,
        max_new: int,
        temperature: float,
        top_p: float,
        stop_ids: list[int],
        copy: list[str | None] | None = None,
    ) -> list[tuple[list[int], str] | BaseException]:
        """Generate every prompt (at most ``max_batch`` rows at once); if the call fails,
        retry each prompt alone so that one bad prompt only fails itself."""
        import jax

        from jelm.lm.sampling import generate

        def run(
            batch: list[list[int]], k: Any, parents: list[str | None] | None
        ) -> list[tuple[list[int], str]]:
            gens = generate(
                self.params,
                self.config,
                batch,
                k,
                max_new_tokens=max_new,
                temperature=float(temperature),
                top_p=float(top_p),
                stop_token_ids=stop_ids,
                pad_id=int(self.tokenizer.pad_id),
                max_batch=self.max_batch,
                copy=parents,
                copy_vocab=self._copy_vocab if parents is not None else None,
                shapes=self.shapes,
            )
            return [(list(map(int, g.tokens)), str(g.finish_reason)) for g in gens]

        try:
            return list(run(prompts, key, copy))
        except Exception as exc:
            if len(prompts) == 1:
                return [exc]
        results: list[tuple[list[int], str] | BaseException] = []
        for j, p in enumerate(prompts):
            try:
                results.extend(
                    run([p], jax.random.fold_in(key, j), None if copy is None else [copy[j]])
                )
            except Exception as exc:
                results.append(exc)
        return results

    def finish(
        self,
        tokens: list[int],
        reason: str,
        stop_ids: list[int],
        host_stop: list[str],
        prompt_tokens: int,
        dropped: int,
    ) -> Completion:
        n = len(tokens)
        if tokens and tokens[-1] in stop_ids:
            tokens = tokens[:-1]
            reason = "stop"
        else:  # in case generate keeps going past a stop token in its output
            for j, t in enumerate(tokens):
                if t in stop_ids:
                    tokens, reason = tokens[:j], "stop"
                    break
        text = self.tokenizer.decode(tokens)
        text, found = cut_at_stop(text, host_stop)
        if found:
            reason = "stop"
        return Completion(
            text=text,
            finish_reason=reason,
            tokens=n,
            prompt_tokens=prompt_tokens,
            truncated=dropped,
        )

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> tuple[str, tuple[str, ...]]:
        """The prompt for a chat and the extra stop strings it needs: the HF tokenizer's chat
        template when it has one, else :func:`render_chat_plain`."""
        # jelm.lm.tokenizer.Tokenizer keeps the wrapped HF tokenizer (if any) in ``_hf``
        hf = getattr(self.tokenizer, "hf", None) or getattr(self.tokenizer, "_hf", None)
        if hf is not None and getattr(hf, "chat_template", None):
            text = hf.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
            )
            return str(text), ()
        return render_chat_plain(messages), PLAIN_CHAT_STOP

    def chat(
        self,
        messages_per_prompt: Sequence[Sequence[Mapping[str, str]]],
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        stop: Sequence[str] = (),
        seed: int = 0,
    ) -> list[Completion]:
        """Render each chat to a prompt (:meth:`render_chat`) and complete it."""
        if isinstance(stop, str):
            stop = (stop,)
        out: list[Completion | None] = [None] * len(messages_per_prompt)
        groups: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        for i, messages in enumerate(messages_per_prompt):
            try:
                prompt, extra = self.render_chat(messages)
            except Exception as exc:
                out[i] = error_completion(exc)
                continue
            groups.setdefault(extra, []).append((i, prompt))
        for extra, items in groups.items():
            comps = self.complete(
                [p for _, p in items],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                stop=(*stop, *extra),
                seed=seed,
            )
            for (i, _), c in zip(items, comps, strict=True):
                out[i] = c
        return [c for c in out if c is not None]


class CompletionStream:
    """Prompts completed by one continuously batched :class:`jelm.lm.sampling.Sampler`,
    all with the same settings: ``jelm serve`` adds each request's prompts as it arrives,
    and they join the rows already sampling (ELM §3.1's sampling at scale).

    :meth:`add` queues a prompt (its key is that of prompt ``index`` of a
    :meth:`JelmBackend.complete` call with ``seed``, so a request gets the same completion
    alone or beside others); :meth:`run` samples until some prompts finish (or
    ``max_steps`` decode steps pass) and returns their completions by id.
    """

    def __init__(
        self,
        backend: JelmBackend,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str],
    ) -> None:
        from jelm.lm.sampling import Sampler

        if isinstance(stop, str):
            stop = (stop,)
        self.backend = backend
        self.max_new = backend.max_new(max_new_tokens)
        self.stop_ids, self.host_stop = backend.stop_token_ids(stop)
        self.sampler = Sampler(
            backend.params,
            backend.config,
            max_new_tokens=self.max_new,
            temperature=float(temperature),
            top_p=float(top_p),
            stop_token_ids=self.stop_ids,
            pad_id=int(backend.tokenizer.pad_id),
            max_batch=backend.max_batch,
        )
        self._meta: dict[int, tuple[int, int]] = {}

    @property
    def busy(self) -> bool:
        """Whether prompts are still sampling."""
        return self.sampler.busy

    def add(self, prompt: str, seed: int, index: int = 0) -> int | Completion:
        """Queue ``prompt``; returns its id, or at once a failed :class:`Completion` for a
        prompt that cannot be sampled (the tokenizer rejects it)."""
        import jax
        import numpy as np

        try:
            ids, dropped = self.backend.encode_within(prompt, self.max_new)
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(seed)), 0), index)
            (i,) = self.sampler.add([ids], np.asarray(jax.random.key_data(key))[None])
        except Exception as exc:
            return error_completion(exc)
        self._meta[i] = (len(ids), dropped)
        return i

    def run(self, max_steps: int | None = None) -> list[tuple[int, Completion]]:
        """Sample until some prompts finish (or ``max_steps`` decode steps pass); their
        completions by id."""
        out = []
        for i, gen in self.sampler.run(max_steps):
            prompt_tokens, dropped = self._meta.pop(i)
            comp = self.backend.finish(
                list(map(int, gen.tokens)),
                gen.finish_reason,
                self.stop_ids,
                self.host_stop,
                prompt_tokens,
                dropped,
            )
            out.append((i, comp))
        return out


# --------------------------------------------------------------------------------------
# the registry's kinds
# --------------------------------------------------------------------------------------


def _local_problems(options: Mapping[str, Any]) -> list[str]:
    max_batch = options.get("max_batch")
    if max_batch is not None and (
        isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
    ):
        return [f"max_batch must be an integer >= 1, got {max_batch!r}"]
    return []


def _not_a_model(path: Any) -> list[str]:
    if Path(path, "config.json").is_file():
        return []
    return [f"{path} is not a model directory (no config.json)"]


def _jelm_backend(path: str | os.PathLike[str], **options: Any) -> JelmBackend:
    path = str(path)
    if path == "shipped":
        return JelmBackend.shipped(**options)
    return JelmBackend.from_dir(path, **options)


def _jelm_files(options: Mapping[str, Any]) -> list[str]:
    path = options["path"]
    return _not_a_model(SHIPPED_DIR if str(path) == "shipped" else path)


def _hf_backend(path: str | os.PathLike[str], **options: Any) -> JelmBackend:
    return JelmBackend.from_hf(str(path), **options)


#: ``{"kind": "jelm", "path": "shipped" | <dir>, "max_batch": 32, "name": ...}``
JELM_KIND = BackendKind(
    _jelm_backend,
    required=("path",),
    optional=("max_batch", "name"),
    check=_local_problems,
    files=_jelm_files,
)
#: ``{"kind": "hf", "path": <dir>, "max_batch": 32, "name": ...}``
HF_KIND = BackendKind(
    _hf_backend,
    required=("path",),
    optional=("max_batch", "name"),
    check=_local_problems,
    files=lambda options: _not_a_model(options["path"]),
)
