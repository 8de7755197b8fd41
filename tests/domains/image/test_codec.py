"""Tests for jelm.domains.image.codec: what an image program may return."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jelm.domains.image.codec import DEFAULT_SHAPE, ImageError, encode_image, validate_image


def image(height: int = 32, width: int = 32, value=(0.25, 0.5, 0.75)) -> list:
    return [[list(value) for _ in range(width)] for _ in range(height)]


def ramp() -> list:
    return [[[x / 31, 0.5, y / 31] for x in range(32)] for y in range(32)]


class Endless(list):
    """A list that claims a huge length and fails the test if anything walks it."""

    def __len__(self) -> int:
        return 10**9

    def __iter__(self):
        raise AssertionError("walked a value that is far too large")

    def __getitem__(self, index):
        raise AssertionError("indexed a value that is far too large")


def test_encode_returns_plain_lists_of_floats():
    raw = [tuple((x % 2, 1, 0.5) for x in range(32)) for _ in range(32)]  # ints and tuples
    out = encode_image(raw)
    assert type(out) is list and all(type(row) is list for row in out)
    assert all(type(p) is list and len(p) == 3 for row in out for p in row)
    assert all(type(c) is float for row in out for p in row for c in p)
    assert out[0][0] == [0.0, 1.0, 0.5] and out[0][1] == [1.0, 1.0, 0.5]
    assert json.loads(json.dumps(out)) == out


def test_encode_passes_channels_on_unclipped():
    raw = image(value=(-0.5, 1.5, 0.123456789))
    assert encode_image(raw)[3][4] == [-0.5, 1.5, 0.123456789]


@pytest.mark.parametrize(
    "value, kind",
    [
        (None, "NoneType"),
        ({"pixels": []}, "dict"),
        ("image", "str"),
        (0.5, "float"),
        (np.zeros((32, 32, 3)), "ndarray"),
    ],
)
def test_encode_refuses_a_wrong_type(value, kind):
    with pytest.raises(TypeError, match=rf"draw\(\) returned {kind}, not a list of rows"):
        encode_image(value)


@pytest.mark.parametrize(
    "value, message",
    [
        (image(height=31), "image has 31 rows, expected 32"),
        (image(width=33), "row 0 is 33 pixels, expected 32"),
        ([*image()[:-1], 0.5], "row 31 is float, expected 32 pixels"),
        (image(value=(0.1, 0.2)), r"pixel \(0, 0\) is 2 channels, expected \[r, g, b\]"),
        (image(value=(0.1, 0.2, 0.3, 1.0)), r"pixel \(0, 0\) is 4 channels"),
        ([[0.5] * 32] * 32, r"pixel \(0, 0\) is float, expected \[r, g, b\]"),
        ([], "image has 0 rows"),
    ],
)
def test_encode_and_validate_refuse_a_wrong_shape(value, message):
    for check in (encode_image, validate_image):
        with pytest.raises(ImageError, match=message) as info:
            check(value)
        assert info.value.code == "wrong_shape"


@pytest.mark.parametrize(
    "channel, code, message",
    [
        (math.nan, "non_finite", "is nan, not a finite number"),
        (math.inf, "non_finite", "is inf, not a finite number"),
        (-math.inf, "non_finite", "is -inf, not a finite number"),
        (10**400, "non_finite", "is inf, not a finite number"),
        ("0.5", "not_a_number", "is str, not a number"),
        (None, "not_a_number", "is NoneType, not a number"),
        ([0.5], "not_a_number", "is list, not a number"),
    ],
)
def test_encode_and_validate_refuse_a_bad_channel(channel, code, message):
    raw = image()
    raw[5][7] = [0.1, channel, 0.3]
    for check in (encode_image, validate_image):
        with pytest.raises(ImageError, match=rf"pixel \(5, 7\) channel 1 {message}") as info:
            check(raw)
        assert info.value.code == code


def test_far_too_large_values_are_refused_without_walking_them():
    with pytest.raises(ImageError, match="image has 1000000000 rows, expected 32"):
        encode_image(Endless())
    raw = image()
    raw[0] = Endless()
    with pytest.raises(ImageError, match="row 0 is 1000000000 pixels, expected 32"):
        encode_image(raw)
    raw = image()
    raw[0][0] = Endless()
    with pytest.raises(ImageError, match=r"pixel \(0, 0\) is 1000000000 channels"):
        encode_image(raw)


def test_image_error_is_a_value_error_with_a_code():
    # The PhenotypeError protocol (a ValueError with ``code``), from a stdlib-only module.
    error = ImageError("bad", "wrong_shape")
    assert isinstance(error, ValueError) and error.code == "wrong_shape"
    assert str(error) == "bad"
    assert DEFAULT_SHAPE == (32, 32)


def test_validate_clips_rounds_and_is_idempotent():
    raw = ramp()
    raw[0][0] = [-0.5, 1.5, 1e300]
    raw[0][1] = [-0.0, 0.123456, 0.99996]
    raw[0][2] = [-1e-300, 1 + 1e-12, 0.5]
    out = validate_image(raw)
    assert out[0][0] == [0.0, 1.0, 1.0]
    assert out[0][1] == [0.0, 0.1235, 1.0]
    assert math.copysign(1.0, out[0][1][0]) == 1.0  # no -0.0
    assert out[0][2] == [0.0, 1.0, 0.5]
    assert out[1][31] == [1.0, 0.5, round(1 / 31, 4)]
    assert all(0.0 <= c <= 1.0 for row in out for p in row for c in p)
    assert validate_image(out) == out
    assert validate_image(json.loads(json.dumps(encode_image(raw)))) == out


@pytest.mark.parametrize("raw, kind", [(None, "NoneType"), ("[[0]]", "str"), ({}, "dict")])
def test_validate_refuses_a_wrong_type_as_a_value_error(raw, kind):
    with pytest.raises(ImageError, match=f"image is {kind}, not a list of rows") as info:
        validate_image(raw)
    assert info.value.code == "wrong_type"


def test_other_shapes():
    raw = image(height=16, width=8)
    assert np.shape(validate_image(raw, shape=(16, 8))) == (16, 8, 3)
    with pytest.raises(ImageError, match="image has 16 rows, expected 8"):
        validate_image(raw, shape=(8, 16))
