"""Terrain embedding networks: shapes, determinism, jit, gradients and the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.rl import encoders, terrains
from jelm.rl.encoders import (
    ENCODERS,
    CodeEncoder,
    ConvEncoder,
    encoder_inputs,
    make_encoder,
)
from jelm.rl.terrains import TerrainDistribution, distribution

PREFIX, D_MODEL = 4, 16
IDS = jnp.array([0, 1, 2, 0, 2], dtype=jnp.int32)


def _init(kind: str, dist: TerrainDistribution):
    model = make_encoder(kind, len(dist), PREFIX, D_MODEL)
    inputs = encoder_inputs(kind, dist, IDS)
    params = jax.jit(model.init)(jax.random.key(0), inputs)
    return model, params, inputs


def test_the_registry_and_factory():
    assert sorted(ENCODERS) == ["cnn", "codes"]
    assert ENCODERS["codes"] is CodeEncoder and ENCODERS["cnn"] is ConvEncoder
    assert isinstance(make_encoder("codes", 3, PREFIX, D_MODEL), CodeEncoder)
    conv = make_encoder("cnn", 3, PREFIX, D_MODEL)
    assert isinstance(conv, ConvEncoder) and (conv.prefix_len, conv.d_model) == (PREFIX, D_MODEL)


def test_an_unknown_kind_names_the_kinds():
    with pytest.raises(ValueError, match=r"'cnn', 'codes'"):
        make_encoder("resnet", 3, PREFIX, D_MODEL)
    with pytest.raises(ValueError, match="codes"):
        encoder_inputs("resnet", distribution("walls_tunnel"), IDS)


@pytest.mark.parametrize("kind", ["codes", "cnn"])
@pytest.mark.parametrize("dist_name", ["walls_tunnel", "walls_bumpy"])
def test_prefixes_have_the_shape_and_tell_terrains_apart(kind, dist_name):
    model, params, inputs = _init(kind, distribution(dist_name))
    out = model.apply(params, inputs)
    assert out.shape == (IDS.shape[0], PREFIX, D_MODEL) and out.dtype == jnp.float32
    out = np.asarray(out)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], out[3])  # the same terrain, the same prefix
    np.testing.assert_array_equal(out[2], out[4])
    for i, j in [(0, 1), (0, 2), (1, 2)]:  # different terrains, different prefixes
        assert not np.allclose(out[i], out[j]), (i, j)


@pytest.mark.parametrize("kind", ["codes", "cnn"])
def test_jit_matches_eager(kind):
    dist = distribution("walls_tunnel")
    model, params, _ = _init(kind, dist)

    @jax.jit
    def prefix(params, ids):
        return model.apply(params, encoder_inputs(kind, dist, ids))

    eager = model.apply(params, encoder_inputs(kind, dist, IDS))
    np.testing.assert_allclose(np.asarray(prefix(params, IDS)), np.asarray(eager), atol=1e-6)


@pytest.mark.parametrize("kind", ["codes", "cnn"])
def test_gradients_reach_every_parameter(kind):
    dist = distribution("walls_tunnel")
    model, params, inputs = _init(kind, dist)
    target = jax.random.normal(jax.random.key(1), (IDS.shape[0], PREFIX, D_MODEL))

    def loss(p):
        return jnp.mean((model.apply(p, inputs) - target) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert leaves
    for path, g in leaves:
        assert np.isfinite(np.asarray(g)).all(), path
        assert float(jnp.abs(g).max()) > 0.0, path


def test_codes_start_at_the_scale_of_token_embeddings():
    model = CodeEncoder(n_terrains=8, prefix_len=16, d_model=64)
    params = model.init(jax.random.key(0), jnp.zeros((1,), jnp.int32))
    table = np.asarray(params["params"]["codes"]["embedding"])
    assert table.shape == (8, 16 * 64)
    assert 0.015 < table.std() < 0.025 and abs(table.mean()) < 0.005
    out = model.apply(params, jnp.arange(8))
    np.testing.assert_array_equal(np.asarray(out).reshape(8, -1), table)


def test_conv_encoder_layers_follow_its_fields():
    model = ConvEncoder(prefix_len=2, d_model=8, features=(4, 8, 8), hidden=32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((3, 32, 64)))["params"]
    assert [shapes[f"conv{i}"]["kernel"].shape for i in range(3)] == [
        (3, 3, 1, 4),
        (3, 3, 4, 8),
        (3, 3, 8, 8),
    ]
    # Three stride-2 convolutions: 32x64 -> 4x8, 8 channels.
    assert shapes["hidden"]["kernel"].shape == (4 * 8 * 8, 32)
    assert shapes["out"]["kernel"].shape == (32, 16)


def test_conv_prefixes_start_small():
    _, params, _ = _init("cnn", distribution("walls_tunnel"))
    out = np.asarray(params["params"]["out"]["kernel"])
    assert 0.015 < out.std() < 0.025
    assert not np.asarray(params["params"]["out"]["bias"]).any()


def test_encoder_inputs():
    dist = distribution("walls_bumpy")
    ids = encoder_inputs("codes", dist, [2, 0])
    assert ids.dtype == jnp.int32 and ids.tolist() == [2, 0]
    ims = encoder_inputs("cnn", dist, jnp.array([2, 0]))
    assert ims.shape == (2, 32, 64) and ims.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(ims), terrains.images(dist)[[2, 0]])


def test_images_are_rendered_once_per_distribution(monkeypatch):
    calls = []
    render = terrains.terrain_image

    def counting(t, **kw):
        calls.append(1)
        return render(t, **kw)

    monkeypatch.setattr(terrains, "terrain_image", counting)
    dist = TerrainDistribution("test_render_once", ("flat", "hills"))
    first = encoder_inputs("cnn", dist, jnp.array([0, 1]))
    assert len(calls) == 2
    again = jax.jit(lambda ids: encoder_inputs("cnn", dist, ids))(jnp.array([1, 1, 0]))
    encoder_inputs("cnn", dist, jnp.array([1]))
    assert len(calls) == 2
    np.testing.assert_array_equal(np.asarray(again[2]), np.asarray(first[0]))
    assert encoders._images(dist) is encoders._images(dist)


def test_image_cache_filled_under_jit_holds_no_tracer():
    dist = TerrainDistribution("test_cache_under_jit", ("tunnel", "flat"))
    traced = jax.jit(lambda ids: encoder_inputs("cnn", dist, ids))(jnp.array([0]))
    cached = encoders._images(dist)
    assert not isinstance(cached, jax.core.Tracer)
    np.testing.assert_array_equal(np.asarray(traced[0]), np.asarray(cached[0]))
