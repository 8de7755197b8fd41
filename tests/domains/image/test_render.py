"""Tests for jelm.domains.image.render and ImageDomain.render."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jelm.domains.image.domain import ImageDomain
from jelm.domains.image.render import GRID_NAME, scale_for, to_uint8


def test_to_uint8():
    image = np.array([[[0.0, 1.0, 0.5], [np.nan, 2.0, -1.0], [0.2, 0.999, 0.001]]])
    np.testing.assert_array_equal(to_uint8(image), [[[0, 255, 128], [0, 255, 0], [51, 255, 0]]])
    assert to_uint8(image).dtype == np.uint8
    assert [scale_for(w) for w in (1, 32, 33, 64, 128, 200)] == [128, 4, 4, 2, 1, 1]


def test_render_writes_each_image_and_a_grid(tmp_path):
    domain = ImageDomain()
    rng = np.random.default_rng(3)
    pictures = [rng.random((32, 32, 3)).tolist() for _ in range(5)]
    pictures.append(domain.target_image.tolist())
    packed = domain.pack([domain.program.validate(p) for p in pictures], 8)
    labels = ["a", "b", "c", "d", "e", "target"]
    paths = domain.render(packed, labels, tmp_path / "best")
    assert paths == [tmp_path / "best" / f"{x}.png" for x in labels] + [
        tmp_path / "best" / GRID_NAME
    ]
    for k, label in enumerate(labels):
        with Image.open(tmp_path / "best" / f"{label}.png") as png:
            assert png.size == (128, 128) and png.mode == "RGB"
            pixels = np.asarray(png)
        expected = to_uint8(packed["pixels"][k])
        np.testing.assert_array_equal(pixels[::4, ::4], expected)
        np.testing.assert_array_equal(pixels[3::4, 3::4], expected)
    with Image.open(tmp_path / "best" / GRID_NAME) as png:
        grid = np.asarray(png)
    # Six tiles of 128 x (128 + a 14-pixel caption), 3 columns, 2 rows, 4-pixel gaps.
    assert grid.shape == (2 * (128 + 14 + 4) + 4, 3 * (128 + 4) + 4, 3)
    left, top = 4 + 2 * (128 + 4), 4 + (128 + 14 + 4)  # the last tile: the target
    np.testing.assert_array_equal(
        grid[top : top + 128 : 4, left : left + 128 : 4], to_uint8(domain.target_image)
    )
    assert (grid[top + 129 : top + 142, left : left + 128] < 128).any()  # its caption


def test_render_of_nothing_writes_nothing(tmp_path):
    domain = ImageDomain(size=4)
    assert domain.render(domain.pack([], 2), [], tmp_path / "out") == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels", [["x", "x"], ["grid"]])
def test_render_refuses_clashing_labels(tmp_path, labels):
    domain = ImageDomain(size=4)
    with pytest.raises(ValueError, match="labels must be distinct and not 'grid'"):
        domain.render(domain.pack([], 2), labels, tmp_path)
