"""jelm.lm.sampling: batched KV-cache generation (ELM §3.1's mutation step).

The central check: greedy generation with the KV cache (left-padded batch of prompts of
different lengths) gives exactly the tokens of re-running the full forward pass on the
growing sequence without a cache, for both architectures (GPT-2 and CodeGen/GPT-J), and a
row's result does not depend on the other rows in the batch. The shipped model's tokens
on one prompt are pinned, greedy and sampled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.lm import model as M
from jelm.lm import sampling as S
from jelm.lm.sampling import device as D
from jelm.lm.sampling import engine as E
from jelm.lm.sampling.sample import sample_tokens
from tests.lm.tiny import ARCHS, CODEGEN, GPT2
from tests.lm.tiny import random_prompts as _prompts
from tests.lm.tiny import scaled_params as _params

_forward = jax.jit(M.forward, static_argnums=1)


def _greedy_reference(params, config, prompt, n, width=32):
    """Greedy decoding without a cache: the full forward pass over the growing sequence at
    every step (right-padded to one fixed width, so it compiles once)."""
    seq = list(prompt)
    assert len(prompt) + n <= width
    for _ in range(n):
        t = len(seq)
        tokens = np.zeros((1, width), np.int32)
        tokens[0, :t] = seq
        mask = np.arange(width)[None] < t
        logits = _forward(
            params,
            config,
            jnp.asarray(tokens),
            jnp.arange(width, dtype=jnp.int32)[None],
            jnp.asarray(mask),
        )
        seq.append(int(jnp.argmax(logits[0, t - 1])))
    return seq[len(prompt) :]


# ----------------------------------------------------------------------------- generate


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param("gpt2", marks=pytest.mark.slow),
        pytest.param("codegen", marks=pytest.mark.slow),
        pytest.param("llama", marks=pytest.mark.slow),
    ],
)
def test_greedy_generate_matches_uncached_forward(arch):
    cfg = ARCHS[arch]
    params = _params(cfg)
    prompts = _prompts(4, [3, 17, 9])
    n = 10
    gens = S.generate(params, cfg, prompts, jax.random.key(0), max_new_tokens=n, temperature=0)
    for prompt, gen in zip(prompts, gens, strict=True):
        assert gen.finish_reason == "length"
        assert gen.tokens == _greedy_reference(params, cfg, prompt, n)
    assert len({tuple(g.tokens) for g in gens}) == 3
    # A row does not depend on the other rows: alone, or among other prompts.
    alone = S.generate(
        params, cfg, prompts[1:2], jax.random.key(5), max_new_tokens=n, temperature=0
    )
    assert alone[0].tokens == gens[1].tokens
    others = _prompts(5, [30, 2, 5, 12, 1])
    mixed = S.generate(
        params, cfg, [*others, prompts[2]], jax.random.key(0), max_new_tokens=n, temperature=0
    )
    assert mixed[-1].tokens == gens[2].tokens
    for prompt, gen in zip(others[1:], mixed[1:-1], strict=True):
        assert gen.tokens == _greedy_reference(params, cfg, prompt, n)


@pytest.mark.slow  # ~10 s
def test_chunked_prefill_gives_the_same_tokens(monkeypatch):
    """Long prompts in big batches prefill in row chunks (bounded attention-score memory);
    forcing one row per chunk changes nothing."""
    cfg = CODEGEN
    params = _params(cfg)
    prompts = _prompts(4, [3, 17, 9])
    kw = dict(max_new_tokens=10, temperature=0.9, top_p=0.9)
    whole = S.generate(params, cfg, prompts, jax.random.key(0), **kw)
    monkeypatch.setattr(D, "PREFILL_SCORE_ELEMENTS", 1)
    chunked = S.generate(params, cfg, prompts, jax.random.key(0), **kw)
    assert chunked == whole


def test_caches_that_grow_change_no_token(monkeypatch):
    """A row's cache holds ``FIRST_WINDOW`` generated tokens at first and grows to the
    budget when a row needs more, and a refill's fresh slots grow to the running window:
    sampling with a small first window gives the tokens of whole caches from the start."""
    cfg = CODEGEN
    params = _params(cfg)
    prompts = _prompts(6, [3, 17, 9, 5, 12, 7])
    kw = dict(max_new_tokens=24, temperature=0.9, top_p=0.9, max_batch=2)
    whole = S.generate(params, cfg, prompts, jax.random.key(3), **kw)
    grown = []
    real_grow = D.grow

    def grow(slots, window):
        grown.append(window)
        return real_grow(slots, window)

    monkeypatch.setattr(E, "FIRST_WINDOW", 8)
    monkeypatch.setattr(D, "grow", grow)
    assert S.generate(params, cfg, prompts, jax.random.key(3), **kw) == whole
    assert grown and set(grown) == {24 + E.MAX_DRAFTS}


@pytest.mark.slow
def test_stop_tokens_per_row():
    cfg = CODEGEN
    params = _params(cfg)
    prompts = _prompts(6, [4, 8])
    full = S.generate(params, cfg, prompts, jax.random.key(0), max_new_tokens=12, temperature=0)
    stop_tok = full[0].tokens[5]
    k = full[0].tokens.index(stop_tok)
    gens = S.generate(
        params,
        cfg,
        prompts,
        jax.random.key(0),
        max_new_tokens=12,
        temperature=0,
        stop_token_ids=[stop_tok, 10_000],
    )
    assert gens[0] == S.Generation(full[0].tokens[:k], "stop")
    if stop_tok in full[1].tokens:
        k1 = full[1].tokens.index(stop_tok)
        assert gens[1] == S.Generation(full[1].tokens[:k1], "stop")
    else:
        assert gens[1] == full[1]
    # Stop on the very first token.
    first = S.generate(
        params,
        cfg,
        prompts[:1],
        jax.random.key(0),
        max_new_tokens=12,
        temperature=0,
        stop_token_ids=[full[0].tokens[0]],
    )
    assert first[0] == S.Generation([], "stop")


def test_sampling_deterministic_and_row_independent():
    cfg = GPT2
    params = _params(cfg)
    prompts = _prompts(7, [5, 13, 6])
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95)
    a = S.generate(params, cfg, prompts, jax.random.key(1), **kw)
    b = S.generate(params, cfg, prompts, jax.random.key(1), **kw)
    c = S.generate(params, cfg, prompts, jax.random.key(2), **kw)
    assert a == b
    assert a != c
    # Row 0 keeps its sample whatever follows it in the batch.
    d = S.generate(params, cfg, [prompts[0], *_prompts(8, [16, 1, 4])], jax.random.key(1), **kw)
    assert d[0] == a[0]
    # A nucleus smaller than the top token is greedy decoding.
    g = S.generate(params, cfg, prompts, jax.random.key(3), max_new_tokens=16, temperature=0)
    tiny = S.generate(
        params, cfg, prompts, jax.random.key(3), max_new_tokens=16, temperature=0.7, top_p=1e-6
    )
    assert g == tiny


def test_top_p_keeps_the_nucleus():
    logits = jnp.log(jnp.asarray([[0.05, 0.5, 0.15, 0.3]] * 4000))
    keys = jax.random.split(jax.random.key(0), 4000)
    toks = np.asarray(
        sample_tokens(
            logits,
            keys,
            jnp.int32(0),
            jnp.float32(1.0),
            jnp.float32(0.7),
            greedy=False,
            use_top_p=True,
        )
    )
    assert set(np.unique(toks)) == {1, 3}  # 0.5 + 0.3 >= 0.7: the nucleus is {1, 3}
    np.testing.assert_allclose(np.mean(toks == 1), 0.5 / 0.8, atol=0.03)
    plain = np.asarray(
        sample_tokens(
            logits,
            keys,
            jnp.int32(0),
            jnp.float32(1.0),
            jnp.float32(1.0),
            greedy=False,
            use_top_p=False,
        )
    )
    np.testing.assert_allclose(
        np.bincount(plain, minlength=4) / 4000, [0.05, 0.5, 0.15, 0.3], atol=0.03
    )


@pytest.mark.slow
def test_generate_does_not_recompile_for_similar_prompts():
    cfg = M.ModelConfig(vocab_size=211, n_ctx=96, d_model=32, n_layer=1, n_head=4)
    params = _params(cfg)
    kw = dict(max_new_tokens=7, temperature=0.8, top_p=0.9, stop_token_ids=[3])

    def compiled():
        return sum(f._cache_size() for f in (D.prefill, D.decode, D.insert, D.take))

    S.generate(params, cfg, _prompts(9, [20, 25, 30]), jax.random.key(0), **kw)
    before = compiled()
    # Other prompts, lengths in the same bucket (17..32), batch 3 -> 4 in the same bucket,
    # other key, temperature, top_p and stop ids: no new compilation.
    S.generate(
        params,
        cfg,
        _prompts(10, [31, 18, 22, 29]),
        jax.random.key(1),
        max_new_tokens=7,
        temperature=0.5,
        top_p=0.8,
        stop_token_ids=[3, 4, 5],
    )
    assert compiled() == before
    # A longer prompt bucket compiles its programs once.
    S.generate(params, cfg, _prompts(11, [40]), jax.random.key(1), **kw)
    longer = compiled()
    assert longer > before
    S.generate(params, cfg, _prompts(12, [50]), jax.random.key(2), **kw)
    assert compiled() == longer


def test_refills_of_any_size_share_one_prefill_program():
    """Groups are prefilled one at a time: a call whose rows finish at different steps, so
    that slots free up and refill in ones and twos, and whose first fill is eight groups,
    compiles no prefill program beyond the one a lone prompt of its shape compiled."""
    cfg = M.ModelConfig(vocab_size=211, n_ctx=96, d_model=32, n_layer=1, n_head=4)
    params = _params(cfg)
    # eight stop ids (one padded size); rows stop after a few tokens, each at its own step
    kw = dict(max_new_tokens=24, temperature=1.0, share_prefixes=False)
    kw["stop_token_ids"] = list(range(5, 211, 26))
    prompts = _prompts(21, [20, 24, 28, 30, 22, 26] * 3)  # one prefix bucket
    S.generate(params, cfg, prompts[:1], jax.random.key(0), max_batch=1, **kw)
    before = D.prefill._cache_size()
    out = S.generate(params, cfg, prompts, jax.random.key(1), max_batch=8, **kw)
    assert len({len(g.tokens) for g in out}) > 2  # the rows did finish apart
    assert D.prefill._cache_size() == before


@pytest.mark.slow
def test_a_known_larger_shape_changes_no_token():
    """With a record of shapes (an ELM run's backend), a call of short prompts samples at
    a longer prefix compiled before, and its tokens are those of its own shape."""
    cfg = M.ModelConfig(vocab_size=211, n_ctx=160, d_model=32, n_layer=1, n_head=4)
    params = _params(cfg)
    kw = dict(max_new_tokens=64, temperature=0.8, top_p=0.9, stop_token_ids=[3])
    prompts = _prompts(13, [20, 25, 30])  # prefix bucket 32
    ref = S.generate(params, cfg, prompts, jax.random.key(5), **kw)
    before = D.prefill._cache_size()
    shapes = S.Shapes(known=[(1, 64, 1)])  # (64 + 33) / (32 + 33) <= 1.5
    assert S.generate(params, cfg, prompts, jax.random.key(5), shapes=shapes, **kw) == ref
    assert D.prefill._cache_size() > before  # it did sample at the known prefix of 64
    assert shapes.known == [(1, 64, 1)]


def _family(seed: int, parents: int, children: int, parent_len: int = 40):
    """Prompts that are ``children`` children of each of ``parents`` parents (the parent's
    tokens and a short tail of their own), shuffled."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(parents):
        parent = rng.integers(5, 211, parent_len).tolist()
        prompts += [
            parent + rng.integers(5, 211, int(rng.integers(1, 6))).tolist() for _ in range(children)
        ]
    return [prompts[i] for i in rng.permutation(len(prompts))]


@pytest.mark.parametrize(
    ("arch", "cases"),
    [
        pytest.param("codegen", [(True, 2)], marks=pytest.mark.slow),
        pytest.param("codegen", [(False, 1)], marks=pytest.mark.slow),
        pytest.param("llama", [(True, 2)], marks=pytest.mark.slow),  # grouped-query attention
    ],
)
def test_shared_prefixes_and_slot_refills_change_no_token(arch, cases):
    """Children of one parent share the parent's keys and values; a call with fewer rows
    than prompts refills finished rows' slots. Neither changes a row's tokens, greedy or
    sampled, and the greedy ones are the uncached forward pass's."""
    cfg = ARCHS[arch]
    params = _params(cfg)
    prompts = _family(3, parents=3, children=3)
    from jelm.lm.sampling.plan import make_plan

    assert make_plan(prompts, 8, 8).rows > 1  # the calls below do share prefixes
    for kw in (dict(temperature=0), dict(temperature=0.9, top_p=0.9)):
        ref = S.generate(
            params, cfg, prompts, jax.random.key(4), max_new_tokens=8, share_prefixes=False, **kw
        )
        for share, max_batch in cases:
            got = S.generate(
                params,
                cfg,
                prompts,
                jax.random.key(4),
                max_new_tokens=8,
                max_batch=max_batch,
                share_prefixes=share,
                **kw,
            )
            assert got == ref, (kw, share, max_batch)
        if kw["temperature"] == 0:
            for prompt, gen in zip(prompts[:3], ref[:3], strict=True):
                assert gen.tokens == _greedy_reference(params, cfg, prompt, 8, width=64)


@pytest.mark.slow
def test_rows_of_different_lengths_finish_on_their_own():
    """Stop tokens end rows at different steps; the live rows are packed into fewer slots
    as the others finish, and every row gets exactly what it gets alone."""
    cfg = CODEGEN
    params = _params(cfg)
    prompts = _prompts(12, [5, 9, 14, 3, 7, 11, 6, 8])
    full = S.generate(params, cfg, prompts, jax.random.key(0), max_new_tokens=20, temperature=0)
    stop = [g.tokens[2 + i] for i, g in enumerate(full[:4])]
    gens = S.generate(
        params,
        cfg,
        prompts,
        jax.random.key(0),
        max_new_tokens=20,
        temperature=0,
        stop_token_ids=stop,
    )
    lengths = {len(g.tokens) for g in gens}
    assert len(lengths) > 1  # rows did end at different steps
    for prompt, gen in list(zip(prompts, gens, strict=True))[:3]:
        (alone,) = S.generate(
            params,
            cfg,
            [prompt],
            jax.random.key(0),
            max_new_tokens=20,
            temperature=0,
            stop_token_ids=stop,
        )
        assert gen == alone


def test_generate_errors():
    params = M.init_params(GPT2, jax.random.key(0))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        S.generate(params, GPT2, [[1, 2], []], jax.random.key(0), max_new_tokens=4)
    with pytest.raises(ValueError, match="n_ctx=96"):
        S.generate(params, GPT2, [[1] * 90], jax.random.key(0), max_new_tokens=10)
    with pytest.raises(ValueError, match="top_p"):
        S.generate(params, GPT2, [[1]], jax.random.key(0), max_new_tokens=4, top_p=0.0)
    assert S.generate(params, GPT2, [], jax.random.key(0)) == []


# ----------------------------------------------------------------------------- shipped model

#: The shipped model's first 24 tokens on the radial seed with the first commit message:
#: greedy, and sampled (key 3, temperature 0.8, top-p 0.95) on the square seed with the
#: second message and cppn_fixed with the third, in one batch.
_COMMON = [548, 368, 18, 523, 203, 830, 368, 18, 523, 203, 612, 332]  # the three share these
SHIPPED_GREEDY = [*_COMMON, 1451, 16, 24, 298, 1451, 16, 27, 803, 1170, 349, 274, 303]
SHIPPED_SAMPLED = [
    [*_COMMON, 1427, 16, 27, 298, 1427, 16, 27, 803, 601, 308, 521, 373],
    [*_COMMON, 1496, 16, 27, 298, 1486, 16, 27, 803, 601, 303, 1038, 16],
]


@pytest.mark.parametrize("drafts", [None, pytest.param(0, marks=pytest.mark.slow)])
def test_shipped_model_tokens_are_pinned(drafts):
    """Greedy and seeded sampling of the shipped checkpoint give exactly these tokens,
    whatever the number of guessed tokens per decode step (the default, or none)."""
    from jelm.domains import make_domain
    from jelm.lm.backends import SHIPPED_DIR
    from jelm.lm.checkpoint import load_model
    from jelm.programs.diff import elm_prompt

    if not (SHIPPED_DIR / "config.json").is_file():
        pytest.skip("the shipped model is not installed")
    params, config, tok = load_model(SHIPPED_DIR)
    domain = make_domain("sodarace")
    messages = [m for m, _ in domain.prompts.commit_messages]

    def prompt(seed: str, message: str) -> list[int]:
        return tok.encode(elm_prompt(domain.seed_program(seed), message, "walker.py"))

    kw = dict(max_new_tokens=24, stop_token_ids=[tok.eos_id], pad_id=tok.pad_id, drafts=drafts)
    (greedy,) = S.generate(
        params, config, [prompt("radial", messages[0])], jax.random.key(0), temperature=0, **kw
    )
    assert greedy.tokens == SHIPPED_GREEDY
    sampled = S.generate(
        params,
        config,
        [prompt("square", messages[1]), prompt("cppn_fixed", messages[2])],
        jax.random.key(3),
        temperature=0.8,
        top_p=0.95,
        **kw,
    )
    assert [g.tokens for g in sampled] == SHIPPED_SAMPLED


def test_draft_tokens_look_up_the_latest_earlier_occurrence():
    """Guesses are what followed the latest earlier occurrence of the row's last tokens,
    the longest pattern first, never past the last known token."""
    hist = jnp.asarray(
        [
            [[5, 6, 7, 1, 2, 5, 6, 8, 9, -1, 5, 6, -1, -1, -1]],  # "5 6" twice: the latest wins
            [[1, 2, 3, 4, 7, 3, 8, 5, 9, 1, 2, 3, -1, -1, -1]],  # "1 2 3" beats a later "3"
            [[-1, -1, 4, 4, 4, 4, -1, -1, -1, -1, -1, -1, -1, -1, -1]],  # runs to the end
            [[-1, -1, -1, 7, 8, 9, -1, -1, -1, -1, -1, -1, -1, -1, -1]],  # "9" never seen
        ],
        jnp.int32,
    )
    end = jnp.asarray([[11], [11], [5], [5]], jnp.int32)
    got = np.asarray(D.draft_tokens(hist, end, 3))[:, 0]
    np.testing.assert_array_equal(got, [[8, 9, -1], [4, 7, 3], [4, -1, -1], [-1, -1, -1]])


@pytest.mark.slow
@pytest.mark.parametrize("max_new", [9, 40])
def test_guessed_tokens_change_no_token(max_new):
    """Checking guessed tokens in one step gives the tokens of one token per step, with
    stop tokens and the length limit falling inside a step's guesses, greedy and sampled,
    and guesses that are right (prompts repeating themselves)."""
    cfg = CODEGEN
    params = _params(cfg)
    rng = np.random.default_rng(5)
    motif = [int(x) for x in rng.integers(4, cfg.vocab_size, 6)]
    prompts = [motif * 4, motif * 3 + motif[:2], *_prompts(3, [9, 17])]
    # A greedy random model repeats itself: its own outputs make guesses come true.
    ref = S.generate(
        params, cfg, prompts, jax.random.key(0), max_new_tokens=max_new, temperature=0, drafts=0
    )
    stop = [ref[2].tokens[5]]
    for kw in (dict(temperature=0), dict(temperature=0.9, top_p=0.9)):
        base = S.generate(
            params,
            cfg,
            prompts,
            jax.random.key(7),
            max_new_tokens=max_new,
            stop_token_ids=stop,
            drafts=0,
            **kw,
        )
        for drafts in (1, 3):
            got = S.generate(
                params,
                cfg,
                prompts,
                jax.random.key(7),
                max_new_tokens=max_new,
                stop_token_ids=stop,
                drafts=drafts,
                **kw,
            )
            assert got == base, (kw, drafts)
            if kw["temperature"] == 0:  # the repeating rows took fewer steps than tokens
                assert sum(g.steps for g in got[:2]) < sum(g.steps for g in base[:2])


@pytest.mark.slow  # the path of `jelm serve --continuous`
def test_prompts_added_while_others_sample_get_their_own_tokens():
    """A :class:`Sampler` takes prompts while others sample: they join the running batch
    (more slots, caches fitted to their longer prompts) and every prompt gets the tokens
    of one call with all of them, greedy and sampled."""
    cfg = CODEGEN
    params = _params(cfg)
    first = _prompts(13, [5, 9])
    later = _prompts(14, [30, 3, 17, 2])  # longer prompts, and more than the free slots
    key = jax.random.key(3)

    def keys(start: int, n: int) -> np.ndarray:
        folded = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(start, start + n))
        return np.asarray(jax.random.key_data(folded))

    for kw in (dict(temperature=0), dict(temperature=0.9, top_p=0.9)):
        ref = S.generate(params, cfg, first + later, key, max_new_tokens=24, **kw)
        sampler = S.Sampler(params, cfg, max_new_tokens=24, **kw)
        ids = sampler.add(first, keys(0, len(first)))
        got = dict(sampler.run(max_steps=1))
        assert not got and sampler.busy  # the first prompts are sampling
        ids += sampler.add(later, keys(len(first), len(later)))
        while sampler.busy:
            got.update(sampler.run(max_steps=2))
        assert [got[i] for i in ids] == ref, kw
