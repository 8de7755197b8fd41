"""The stage-3 policy: it starts as its reference exactly, its KV-cached sampler draws
from the distribution its full pass scores, and its responses end at their stop token."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.rl import policy
from jelm.rl.policy import PolicyConfig, init_policy, response_mask, sample
from tests.lm.tiny import ARCHS, scaled_params

# jitted as stage 3 uses them (op by op, each pass compiles every op on its own)
score = jax.jit(policy.score, static_argnames="cfg")
reference_logp = jax.jit(policy.reference_logp, static_argnames="cfg")

PROMPT = jnp.asarray([5, 17, 42, 9], jnp.int32)


def _policy(arch: str, encoder: str = "codes", temperature: float = 1.0):
    mc = ARCHS[arch]
    cfg = PolicyConfig(
        model=mc, encoder=encoder, n_terrains=3, prefix_len=4, temperature=temperature
    )
    lm = scaled_params(mc)
    params = init_policy(cfg, lm, jnp.zeros((1,), jnp.int32), jax.random.key(1))
    return cfg, lm, params


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_at_initialisation_the_policy_is_its_reference(arch):
    """A closed gate: the policy's log-probabilities are the stage-2 model's exactly, on
    every terrain (KL zero), and its values start at zero."""
    cfg, lm, params = _policy(arch)
    responses = jnp.asarray(np.random.default_rng(0).integers(0, 211, (3, 7)), jnp.int32)
    ids = jnp.asarray([0, 1, 2], jnp.int32)
    logp, values = score(params, cfg, ids, PROMPT, responses)
    ref = reference_logp(lm, cfg, PROMPT, responses)
    np.testing.assert_array_equal(logp, ref)
    np.testing.assert_array_equal(values, np.zeros((3, 7)))
    # an open gate conditions on the terrain
    opened = {**params, "gate": params["gate"] + 1.0}
    logp_open, _ = score(opened, cfg, ids, PROMPT, jnp.broadcast_to(responses[:1], (3, 7)))
    assert np.abs(np.asarray(logp_open[0] - logp_open[1])).max() > 1e-3


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_cached_sampler_draws_what_the_full_pass_scores(arch):
    """At a temperature near 0 the sampler's every token is the full pass's most likely one
    (log-probability near 0), with an open gate: cache and soft prompt agree."""
    cfg, _, params = _policy(arch, temperature=1e-4)
    params = {**params, "gate": params["gate"] + 0.7}
    ids = jnp.asarray([0, 1, 2, 1], jnp.int32)
    drawn = sample(
        params, cfg, ids, PROMPT, jax.random.key(3), jnp.asarray([-1], jnp.int32), jnp.int32(0), 12
    )
    assert drawn.tokens.shape == (4, 12) and bool(drawn.mask.all())
    logp, _ = score(params, cfg, ids, PROMPT, drawn.tokens)
    assert float(jnp.min(logp)) > -1e-3
    # rows on different terrains wrote different responses
    assert not np.array_equal(np.asarray(drawn.tokens[0]), np.asarray(drawn.tokens[1]))
    again = sample(
        params, cfg, ids, PROMPT, jax.random.key(3), jnp.asarray([-1], jnp.int32), jnp.int32(0), 12
    )
    np.testing.assert_array_equal(again.tokens, drawn.tokens)


def test_a_growing_cache_draws_the_tokens_of_a_full_one():
    """The row cache grows 3 -> 6 -> 12 -> 13 slots: at the same key, the rows (some
    stopping inside a phase, some running to the budget) draw the tokens they draw with
    one cache of all 13 slots."""
    cfg, _, params = _policy("gpt2")
    params = {**params, "gate": params["gate"] + 0.7}
    ids = jnp.asarray([0, 1, 2, 1, 0, 2], jnp.int32)
    stops = jnp.asarray([11, 12], jnp.int32)
    args = (params, cfg, ids, PROMPT, jax.random.key(5), stops, jnp.int32(0), 13)
    assert policy.cache_sizes(13, 3) == [3, 6, 12, 13]
    grown = sample(*args, first_cache=3)
    whole = sample(*args, first_cache=13)
    np.testing.assert_array_equal(grown.tokens, whole.tokens)
    np.testing.assert_array_equal(grown.mask, whole.mask)
    lengths = np.asarray(whole.mask).sum(axis=1)
    assert lengths.min() < 13 and lengths.max() > 6  # rows end in different phases


def test_rows_stop_at_their_first_stop_token_and_pad_after_it():
    cfg, _, params = _policy("gpt2")
    ids = jnp.zeros((16,), jnp.int32)
    stops = jnp.arange(0, 211, 7, dtype=jnp.int32)  # a seventh of the vocabulary stops a row
    drawn = sample(params, cfg, ids, PROMPT, jax.random.key(0), stops, jnp.int32(3), 20)
    tokens, mask = np.asarray(drawn.tokens), np.asarray(drawn.mask)
    stopped = 0
    for row, m in zip(tokens, mask, strict=True):
        hits = np.flatnonzero(np.isin(row, np.asarray(stops)))
        if hits.size:
            stopped += 1
            first = hits[0]
            assert m[: first + 1].all() and not m[first + 1 :].any()
            assert (row[first + 1 :] == 3).all()
        else:
            assert m.all()
    assert stopped >= 8
    np.testing.assert_array_equal(
        response_mask(jnp.asarray([[1, 7, 2, 7]]), jnp.asarray([7])), [[True, True, False, False]]
    )
