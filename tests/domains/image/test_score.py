"""Tests for jelm.domains.image.score: fitness and descriptors, by hand and by reference."""

from __future__ import annotations

import colorsys
import math

import jax
import numpy as np
import pytest

from jelm.domains.image.score import (
    INVALID_FITNESS,
    LUMA,
    NEUTRAL,
    hue_and_chroma,
    image_mean,
    score_images,
)

_score = jax.jit(score_images)


def score(images, target, mask=None):
    """Score up to 4 images (padded to 4 rows, so that one compiled shape serves most tests)."""
    images = np.asarray(images, np.float32)
    n = len(images)
    mask = np.ones(n, bool) if mask is None else np.asarray(mask)
    padded = np.zeros((4, *images.shape[1:]), np.float32)
    padded[:n] = images
    ev = _score(padded, np.pad(mask, (0, 4 - n)), np.asarray(target, np.float32))
    return jax.tree.map(lambda a: np.asarray(a)[:n], ev)


def halves(top, bottom, size=8):
    image = np.zeros((size, size, 3))
    image[: size // 2] = top
    image[size // 2 :] = bottom
    return image


def circular_distance(a, b):
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def test_half_red_half_green_against_grey_by_hand():
    image = halves([1, 0, 0], [0, 1, 0])
    ev = score([image], np.full((8, 8, 3), 0.5))
    # Every channel is 0.5 away from the grey target.
    assert ev.fitness[0] == pytest.approx(-0.25, abs=1e-7)
    assert ev.extras["mse"][0] == pytest.approx(0.25, abs=1e-7)
    # Red is hue 0, green 1/3, with equal chroma 1: their circular mean is yellow, 1/6.
    assert ev.descriptors[0, 0] == pytest.approx(1 / 6, abs=1e-6)
    assert ev.descriptors[0, 1] == pytest.approx((0.299 + 0.587) / 2, abs=1e-6)
    assert ev.extras["chroma"][0] == pytest.approx(1.0)
    assert ev.valid[0]


def test_one_colour_by_hand():
    image = np.tile([0.2, 0.4, 0.6], (8, 8, 1))
    ev = score([image], image)
    assert ev.fitness[0] == 0.0 and math.copysign(1.0, ev.fitness[0]) == 1.0
    # Blue is highest, red lowest: hue = (4 + (r - g) / chroma) / 6 = (4 - 0.5) / 6.
    assert ev.descriptors[0, 0] == pytest.approx(3.5 / 6, abs=1e-6)
    assert ev.descriptors[0, 1] == pytest.approx(0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6, abs=1e-6)
    assert ev.extras["chroma"][0] == pytest.approx(0.4, abs=1e-6)


def test_grey_and_cancelling_hues_have_hue_zero():
    grey = np.full((8, 8, 3), 0.25)
    red_cyan = halves([1, 0, 0], [0, 1, 1])
    ev = score([grey, red_cyan], grey)
    assert ev.descriptors[0, 0] == 0.0
    assert ev.descriptors[0, 1] == pytest.approx(0.25, abs=1e-6)
    assert ev.descriptors[1, 0] == pytest.approx(0.0, abs=1e-6)


def test_hue_mean_is_circular():
    a = colorsys.hsv_to_rgb(0.95, 1.0, 1.0)
    b = colorsys.hsv_to_rgb(0.05, 1.0, 1.0)
    c = colorsys.hsv_to_rgb(0.9, 1.0, 1.0)
    ev = score([halves(a, b), halves(a, c)], np.zeros((8, 8, 3)))
    hue = ev.descriptors[:, 0]
    assert 0.0 <= hue[0] < 1.0 and circular_distance(hue[0], 0.0) < 1e-5  # not 0.5
    assert hue[1] == pytest.approx(0.925, abs=1e-5)


def test_per_pixel_hue_matches_colorsys():
    rng = np.random.default_rng(7)
    pixels = rng.random((500, 3))
    pixels[:20] = pixels[:20, :1]  # greys
    pixels[20:40, 1] = pixels[20:40, 0]  # ties between channels
    pixels[40:60, 2] = pixels[40:60, 1]
    hue, chroma = (np.asarray(a) for a in jax.jit(hue_and_chroma)(pixels.astype(np.float32)))
    for p, h, c in zip(pixels, hue, chroma, strict=True):
        ref = colorsys.rgb_to_hsv(*p)
        assert circular_distance(h, ref[0]) < 1e-5
        assert c == pytest.approx(ref[1] * ref[2], abs=1e-6)


def test_descriptors_match_a_float64_reference():
    rng = np.random.default_rng(11)
    images = rng.random((4, 16, 16, 3))
    images[1] *= [1.0, 0.2, 0.1]  # reddish
    images[2] *= [0.1, 0.3, 1.0]  # bluish
    target = rng.random((16, 16, 3))
    ev = score(images, target)
    for image, fitness, (hue, brightness) in zip(images, ev.fitness, ev.descriptors, strict=True):
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in image.reshape(-1, 3)])
        weight = hsv[:, 1] * hsv[:, 2]  # chroma
        angle = 2 * np.pi * hsv[:, 0]
        ref_hue = math.atan2((weight * np.sin(angle)).sum(), (weight * np.cos(angle)).sum())
        assert circular_distance(hue, (ref_hue / (2 * np.pi)) % 1.0) < 1e-5
        assert brightness == pytest.approx((image @ np.array(LUMA)).mean(), abs=1e-6)
        assert fitness == pytest.approx(-((image - target) ** 2).mean(), abs=1e-6)


def test_invalid_rows():
    good = np.full((8, 8, 3), 0.5)
    nan = good.copy()
    nan[3, 3, 1] = np.nan
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    ev = score([good, good, nan, inf], good, mask=[True, False, True, True])
    np.testing.assert_array_equal(ev.valid, [True, False, False, False])
    np.testing.assert_array_equal(ev.fitness, [0.0, INVALID_FITNESS, INVALID_FITNESS, -1.0])
    np.testing.assert_array_equal(ev.descriptors[1:], 0.0)


def test_channels_are_clipped():
    target = np.full((8, 8, 3), 0.5)
    wild = halves([2.0, -1.0, 0.5], [1e6, -1e6, 0.0])
    tame = halves([1.0, 0.0, 0.5], [1.0, 0.0, 0.0])
    a, b = score([wild, tame], target).descriptors
    np.testing.assert_array_equal(a, b)
    fit = score([wild, tame], target).fitness
    assert fit[0] == fit[1] and -1.0 <= fit[0] <= 0.0


def test_a_faint_net_colour_has_a_hue_and_noise_has_none():
    faint = np.full((8, 8, 3), 0.5)
    faint[..., 2] += 0.002  # half an 8-bit level of blue
    fainter = np.full((8, 8, 3), 0.5)
    fainter[..., 2] += NEUTRAL / 2
    ev = score([faint, fainter], faint)
    assert ev.descriptors[0, 0] == pytest.approx(2 / 3, abs=1e-4)
    assert ev.descriptors[1, 0] == 0.0


@pytest.mark.parametrize("shape", [(1,), (5, 5, 3), (32, 32, 3)])
def test_image_mean(shape):
    values = np.random.default_rng(2).random((3, *shape)).astype(np.float32)
    got = np.asarray(jax.jit(image_mean)(values))
    np.testing.assert_allclose(got, values.reshape(3, -1).mean(axis=1, dtype=np.float64), rtol=1e-6)
