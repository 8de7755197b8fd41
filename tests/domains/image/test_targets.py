"""Tests for jelm.domains.image.targets: the built-in target pictures."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from jelm.domains.image.codec import validate_image
from jelm.domains.image.targets import TARGETS, make_target
from jelm.registry import UnknownEntry

#: sha256 of the float32 bytes of each target at 32 x 32 (bit-identical everywhere).
PINNED = {
    "sunset": "8022cad142c6745048e0a5e99e201ea8bbd4ceb325f2da666cfe73520033ff92",
    "night": "2569651ffe7a93a50483e339cab340d1d5e1d18a2aabb9be4a58fa03484782e8",
}


def test_target_names():
    assert TARGETS.names() == ("sunset", "night")


@pytest.mark.parametrize("name", sorted(PINNED))
def test_targets_are_pinned(name):
    target = make_target(name, 32)
    assert hashlib.sha256(target.tobytes()).hexdigest() == PINNED[name]


def test_sunset_by_hand():
    t = make_target("sunset", 32)
    # Top-left pixel: sky at v = 0.5 / 32, a fraction v / 0.7 from deep blue to orange.
    f = (0.5 / 32) / 0.7
    expected = [0.1 + 0.9 * f, 0.2 + 0.4 * f, 0.55 - 0.3 * f]
    np.testing.assert_allclose(t[0, 0], np.round(expected, 4), atol=1e-7)
    np.testing.assert_allclose(t[20, 16], [1.0, 0.9, 0.35], atol=1e-7)  # inside the sun
    f = (31.5 / 32 - 0.7) / 0.3  # bottom row: the sea, nearly its darkest
    expected = [0.15 - 0.13 * f, 0.2 - 0.15 * f, 0.35 - 0.2 * f]
    np.testing.assert_allclose(t[31, 31], np.round(expected, 4), atol=1e-7)


@pytest.mark.parametrize("name", sorted(PINNED))
@pytest.mark.parametrize("size", [1, 7, 32, 64])
def test_targets_are_canonical_images(name, size):
    target = make_target(name, size)
    assert target.shape == (size, size, 3) and target.dtype == np.float32
    assert not target.flags.writeable
    assert float(target.min()) >= 0.0 and float(target.max()) <= 1.0
    # A program returning the target's values yields exactly the target.
    canonical = np.asarray(validate_image(target.tolist(), shape=(size, size)), np.float32)
    np.testing.assert_array_equal(canonical, target)


def test_make_target_is_cached_and_refuses_unknown_names():
    assert make_target("night", 16) is make_target("night", 16)
    with pytest.raises(UnknownEntry, match="unknown image target 'moon'; choose one of sunset"):
        make_target("moon", 32)
