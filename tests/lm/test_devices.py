"""The language model on several devices (jelm.lm.shard): sampling spread over 4 forced
CPU devices in a subprocess gives one device's tokens; training, and stage 3's PPO step,
give one device's losses and parameters up to the rounding of a reordered sum over the
batch; the option that keeps one device; padding rows that weigh nothing."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from jelm.lm import shard
from jelm.lm.train import loss_fn, make_step
from tests.devices import (
    DEVICES,
    _tiny_lm,
    assert_same,
    lm_sample,
    lm_train,
    on_devices,
    rl_sample,
    rl_update,
)


def _spread(one: dict[str, np.ndarray], many: dict[str, np.ndarray]) -> None:
    assert int(many["meta.devices"]) == DEVICES
    assert int(many["meta.mesh"]) == DEVICES  # the rows really were spread
    assert int(one["meta.mesh"]) == 0


def _assert_close(one: dict[str, np.ndarray], many: dict[str, np.ndarray], atol: float) -> None:
    """Every array of ``one`` within float32 rounding of its namesake in ``many``."""
    _spread(one, many)
    assert sorted(one) == sorted(many)
    for name in one:
        if not name.startswith("meta."):
            np.testing.assert_allclose(many[name], one[name], rtol=1e-5, atol=atol, err_msg=name)


@pytest.mark.slow
def test_sampling_on_four_devices_gives_one_devices_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv(shard.ENV, "0")  # the reference: the one-device code path
    one = lm_sample()
    many = on_devices("lm.sample", tmp_path)
    _spread(one, many)
    assert_same(one, many)
    # the case is not trivial: rows stop at different lengths, sampled rows differ
    lengths = (one["sampled.8.tokens"] >= 0).sum(axis=1)
    assert one["sampled.8.stopped"].any() and len(set(lengths.tolist())) > 1
    assert not np.array_equal(one["sampled.8.tokens"], one["greedy.8.tokens"])


@pytest.mark.slow
def test_training_on_four_devices_equals_one_within_rounding(tmp_path, monkeypatch):
    monkeypatch.setenv(shard.ENV, "0")
    one = lm_train()
    many = on_devices("lm.train", tmp_path)
    _assert_close(one, many, atol=1e-6)
    # the steps did move the parameters (a vacuous comparison would pass too)
    _, start = _tiny_lm()
    moved = np.asarray(one["params['wte']['embedding']"]) - np.asarray(start["wte"]["embedding"])
    assert np.abs(moved).max() > 1e-3


def test_lm_sharding_follows_the_simulator_unless_told(monkeypatch):
    monkeypatch.delenv(shard.ENV, raising=False)
    monkeypatch.delenv(shard.SIM_ENV, raising=False)
    assert shard.enabled() and not shard.enabled(False)
    monkeypatch.setenv(shard.SIM_ENV, "0")
    assert not shard.enabled() and shard.local_mesh() is None
    monkeypatch.setenv(shard.ENV, "1")  # the LM's own variable wins
    assert shard.enabled()
    monkeypatch.setenv(shard.ENV, "0")
    monkeypatch.setenv(shard.SIM_ENV, "1")
    assert not shard.enabled() and shard.enabled(True)
    if len(jax.local_devices()) == 1:  # one device: the one-device code, whatever the option
        assert shard.local_mesh(True) is None


def test_padding_rounds_up_with_rows_that_weigh_nothing():
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), (shard.AXIS,))
    assert shard.padded_rows(0, mesh) == 1 and shard.padded_rows(7, mesh) == 7
    assert shard.padded_rows(7, None) == 7
    config, params = _tiny_lm()
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 400, size=(3, 9)).astype(np.int32)
    mask = np.ones((3, 9), bool)
    tokens5, mask5 = shard.pad_rows((tokens, mask), 5)
    assert tokens5.shape == (5, 9) and not mask5[3:].any()
    np.testing.assert_array_equal(tokens5[:3], tokens)
    loss = jax.jit(loss_fn, static_argnums=1)
    np.testing.assert_allclose(
        loss(params, config, tokens5, mask5), loss(params, config, tokens, mask), rtol=1e-6
    )
    # the step on one device (shard=False) takes the same path as before sharding existed
    step = make_step(config, optax.sgd(0.1), shard=False)
    _, _, value = step(params, optax.sgd(0.1).init(params), tokens, mask)
    np.testing.assert_allclose(value, loss(params, config, tokens, mask), rtol=1e-6)


@pytest.mark.slow  # a second process that compiles the policy's sampler
def test_stage3_sampling_on_four_devices_gives_one_devices_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv(shard.ENV, "0")
    one = rl_sample()
    many = on_devices("rl.sample", tmp_path)
    _spread(one, many)
    assert_same(one, many)
    assert not one["mask"].all()  # some rows stopped early


@pytest.mark.slow  # a second process that compiles the policy's PPO step
def test_stage3_update_on_four_devices_equals_one_within_rounding(tmp_path, monkeypatch):
    """The batch's scores, advantages and the two updates' parameters, minibatches of 3
    rows split over 4 devices, against one device."""
    monkeypatch.setenv(shard.ENV, "0")
    one = rl_update()
    many = on_devices("rl.update", tmp_path)
    # whitened advantages (values of about 1, divided by a std) round to about 2e-6
    _assert_close(one, many, atol=1e-5)
    # the updates did move the parameters, and the advantages are not all zero
    from tests.rl.test_policy import _policy

    _, _, start = _policy("gpt2")
    moved = one["params['lm']['wte']['embedding']"] - np.asarray(start["lm"]["wte"]["embedding"])
    assert np.abs(moved).max() > 1e-4
    assert np.abs(one["batch.advantages"]).max() > 0.1
