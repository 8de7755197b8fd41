"""Stage-3 terrain distributions: lookup, sampling and the occupancy images."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.rl.terrains import (
    DISTRIBUTIONS,
    TerrainDistribution,
    distribution,
    image_axes,
    images,
    sample_terrains,
    terrain_image,
)
from jelm.sim.terrain import make_terrain, stack


def _image(name: str) -> np.ndarray:
    return terrain_image(make_terrain(name))


def _spawn_column(name: str) -> int:
    xs, _ = image_axes(make_terrain(name))
    return int(np.argmin(np.abs(xs - float(make_terrain(name).spawn_x))))


# --- distributions ---------------------------------------------------------------------


def test_the_papers_distributions_are_registered():
    assert distribution("walls_tunnel").terrains == ("left_wall", "right_wall", "tunnel")
    assert distribution("walls_bumpy").terrains == ("left_wall", "right_wall", "bumpy")
    assert distribution("walls_tunnel") is DISTRIBUTIONS["walls_tunnel"]
    assert len(distribution("walls_bumpy")) == 3


def test_a_comma_separated_list_is_a_distribution_in_that_order():
    d = distribution("flat, tunnel,left-wall")
    assert d.terrains == ("flat", "tunnel", "left_wall")
    assert d.name == "flat,tunnel,left_wall"
    assert distribution("hills").terrains == ("hills",)
    assert distribution(["bumpy", "flat"]).terrains == ("bumpy", "flat")
    assert distribution(d) is d


@pytest.mark.parametrize("bad", ["nope", "flat,nope", "", "walls_tunnel,flat", []])
def test_an_unknown_distribution_names_the_choices(bad):
    with pytest.raises(ValueError) as err:
        distribution(bad)
    assert "walls_tunnel" in str(err.value) and "right_wall" in str(err.value)


def test_a_distribution_rejects_repeats_and_emptiness():
    with pytest.raises(ValueError, match="repeats"):
        distribution("flat,flat")
    with pytest.raises(ValueError, match="no terrains"):
        TerrainDistribution("empty", ())


def test_built_and_stacked_terrains_follow_the_ids():
    d = distribution("walls_tunnel")
    built = d.build()
    assert len(built) == 3
    s = d.stacked()
    assert s.is_batched and s.ground.shape[0] == 3
    np.testing.assert_array_equal(np.asarray(s.direction), [1.0, -1.0, 1.0])
    for i, name in enumerate(d.terrains):
        ref = make_terrain(name)
        for field in ("ground", "ceiling", "left_wall", "right_wall", "spawn_x", "direction"):
            np.testing.assert_array_equal(
                np.asarray(getattr(s, field))[i], np.asarray(getattr(ref, field))
            )
    # The stack can be indexed per walker exactly like jelm.sim.terrain.stack.
    idx = [2, 0, 0, 1]
    np.testing.assert_array_equal(
        np.asarray(stack(built, idx).ceiling), np.asarray(s.ceiling)[np.array(idx)]
    )


def test_the_built_terrains_stay_concrete_when_first_built_under_jit():
    d = TerrainDistribution("test_jit_build", ("hills", "tunnel"))
    total = jax.jit(lambda: d.stacked().ground.sum())()
    assert float(total) == pytest.approx(float(np.asarray(d.stacked().ground).sum()), rel=1e-6)
    assert isinstance(d.build()[0].ground, jax.Array)
    assert not isinstance(d.build()[0].ground, jax.core.Tracer)


# --- sampling --------------------------------------------------------------------------


def test_sample_terrains_covers_every_terrain_and_is_deterministic():
    key = jax.random.key(0)
    ids = sample_terrains(key, 3, 600)
    assert ids.shape == (600,) and ids.dtype == jnp.int32
    counts = np.bincount(np.asarray(ids), minlength=3)
    assert counts.size == 3 and counts.min() > 150  # uniform: about 200 each
    np.testing.assert_array_equal(np.asarray(sample_terrains(key, 3, 600)), np.asarray(ids))
    other = sample_terrains(jax.random.key(1), 3, 600)
    assert not np.array_equal(np.asarray(other), np.asarray(ids))


def test_sample_terrains_jits():
    f = jax.jit(sample_terrains, static_argnums=(1, 2))
    key = jax.random.key(7)
    np.testing.assert_array_equal(
        np.asarray(f(key, 5, 64)), np.asarray(sample_terrains(key, 5, 64))
    )
    assert set(np.asarray(f(key, 5, 400)).tolist()) == set(range(5))


# --- images ----------------------------------------------------------------------------


def test_images_are_binary_float32_of_the_requested_shape():
    d = distribution("walls_tunnel")
    ims = images(d)
    assert ims.shape == (3, 32, 64) and ims.dtype == np.float32
    assert set(np.unique(ims).tolist()) <= {0.0, 1.0}
    assert images(d, height=16, width=40).shape == (3, 16, 40)
    np.testing.assert_array_equal(ims[2], _image("tunnel"))


def test_flat_ground_fills_the_bottom_row_and_nothing_else():
    im = _image("flat")
    assert im[-1].all()
    assert not im[:-1].any()


def test_the_tunnel_ceiling_is_ahead_of_spawn_and_not_behind():
    im = _image("tunnel")
    c = _spawn_column("tunnel")
    assert im[0, c + 1 :].any()  # the ceiling, seen from the top row, right of spawn
    assert not im[0, : c + 1].any()  # open sky at the top left of spawn
    assert not im[1:-1, : c + 1].any()  # and nothing but ground there
    # Under the ceiling there is free space: the tunnel is open at walking height.
    assert not im[-2, -1] and im[0, -1]


def test_walls_appear_on_their_true_side():
    left, right = _image("left_wall"), _image("right_wall")
    cl, cr = _spawn_column("left_wall"), _spawn_column("right_wall")
    full_l = np.flatnonzero(left.all(axis=0))
    full_r = np.flatnonzero(right.all(axis=0))
    assert full_l.size and (full_l < cl).all()
    assert full_r.size and (full_r > cr).all()
    # Not mirrored into the direction of progress: the two differ, one the other's flip.
    assert not np.array_equal(left, right)
    np.testing.assert_array_equal(left, right[:, ::-1])


def test_the_window_leans_in_the_direction_of_progress():
    xs_l, _ = image_axes(make_terrain("left_wall"))
    xs_r, _ = image_axes(make_terrain("right_wall"))
    assert np.all(np.diff(xs_l) > 0) and np.all(np.diff(xs_r) > 0)  # world order
    assert xs_l[0] == pytest.approx(0.5 - 8.0) and xs_l[-1] == pytest.approx(0.5 + 24.0)
    assert xs_r[0] == pytest.approx(-0.5 - 24.0) and xs_r[-1] == pytest.approx(-0.5 + 8.0)


def test_bumpy_ground_varies_in_height():
    im = _image("bumpy")
    ground_rows = im.sum(axis=0)  # no ceiling or walls: each column's solid run is ground
    assert len(np.unique(ground_rows)) > 1
    assert im[-1].all() and not im[0].any()


def test_images_use_the_simulators_interpolation():
    """A ground pixel is solid exactly when its y is at or below jelm.sim's height there."""
    from jelm.sim.terrain import ground_height

    t = make_terrain("hills")
    xs, ys = image_axes(t)
    h, _ = ground_height(t, jnp.asarray(xs, dtype=jnp.float32))
    h = np.asarray(h, dtype=np.float64)
    im = terrain_image(t)
    expect = ys[:, None] <= h[None, :]
    near = np.abs(ys[:, None] - h[None, :]) < 1e-4  # float32 vs float64 at the boundary
    assert np.array_equal(im.astype(bool)[~near], expect[~near])
    assert len(np.unique(im.sum(axis=0))) > 1


def test_all_images_of_each_distribution_differ():
    for name, d in DISTRIBUTIONS.items():
        ims = images(d)
        for i, j in itertools.combinations(range(len(d)), 2):
            assert not np.array_equal(ims[i], ims[j]), (name, d.terrains[i], d.terrains[j])


def test_image_rejects_bad_arguments():
    t = make_terrain("flat")
    with pytest.raises(ValueError):
        terrain_image(t, height=1)
    with pytest.raises(ValueError):
        terrain_image(t, x_before=0.0, x_after=0.0)
    with pytest.raises(ValueError):
        terrain_image(t, y_max=0.0)
    with pytest.raises(ValueError, match="unbatched"):
        terrain_image(stack([t, t]))
