"""Tests for jelm.domains.image.domain: options, programs, pack and evaluate."""

from __future__ import annotations

import pickle

import jax
import numpy as np
import pytest

from jelm.domains import DOMAINS, Domain, make_domain
from jelm.domains.image.codec import ImageError
from jelm.domains.image.domain import MAX_SIZE, ImageDomain
from jelm.domains.image.score import INVALID_FITNESS

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def domain() -> ImageDomain:
    return ImageDomain(size=8)


def images(domain: ImageDomain, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [
        domain.program.validate(rng.random((domain.size,) * 2 + (3,)).tolist()) for _ in range(n)
    ]


def as_numpy(ev):
    return jax.tree.map(np.asarray, ev)


def test_registered_and_built_by_name():
    assert "image" in DOMAINS.names()
    domain = make_domain("image", size=16, target="night")
    assert isinstance(domain, ImageDomain) and isinstance(domain, Domain)
    assert domain == ImageDomain(16, "night") and hash(domain) == hash(ImageDomain(16, "night"))
    assert domain.describe() == "Image: 16 x 16 pictures matched to the night target"
    assert ImageDomain() == ImageDomain(size=32, target="sunset")
    assert ImageDomain.descriptor_names == ("hue", "brightness")
    assert (ImageDomain.descriptor_lower, ImageDomain.descriptor_upper) == ((0, 0), (1, 1))
    assert ImageDomain.fitness_offset == INVALID_FITNESS == -1.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"size": 0}, "size must be an integer from 1 to 64, got 0"),
        ({"size": MAX_SIZE + 1}, "size must be an integer from 1 to 64, got 65"),
        ({"size": 8.0}, "size must be an integer from 1 to 64, got 8.0"),
        ({"size": True}, "size must be an integer from 1 to 64, got True"),
        ({"target": "moon"}, r"unknown target 'moon'; choose one of \['sunset', 'night'\]"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        ImageDomain(**options)


def test_program_spec(domain):
    spec = domain.program
    assert (spec.entry, spec.file_name, spec.phenotype) == ("draw", "image.py", "image")
    assert spec.invalid_status == "invalid_image"
    assert spec.encode == "jelm.domains.image.codec:encode_image"
    assert spec.encode_options == (8, 8) and pickle.loads(pickle.dumps(spec.encode_options))
    assert spec.api_module is None and spec.imports == ("math", "random")
    assert spec is ImageDomain(size=8, target="night").program  # one spec per size
    assert spec != ImageDomain(size=16).program
    with pytest.raises(ImageError, match="image has 32 rows, expected 8"):
        spec.validate(np.zeros((32, 32, 3)).tolist())


def test_prompts(domain):
    prompts = domain.prompts
    assert prompts.commit_messages == (
        ("Changed draw function.", 0.4),
        ("Changed parameters in draw function.", 0.3),
        ("Small change to draw function.", 0.3),
    )
    assert sum(p for _, p in prompts.commit_messages) == pytest.approx(1.0)
    assert prompts.instruction.startswith("# ") and prompts.instruction.endswith("\n")
    assert "draw" in prompts.instruction and "combining" in prompts.crossover_instruction


def test_genotype_template_is_one_empty_row(domain):
    template = domain.genotype_template()
    packed = domain.pack([], 1)
    assert set(template) == set(packed) == {"pixels", "mask"}
    for name, value in template.items():
        assert value.shape == packed[name].shape[1:] and value.dtype == packed[name].dtype
        np.testing.assert_array_equal(value, packed[name][0])


def test_pack(domain):
    a, b = images(domain, 2)
    packed = domain.pack([a, None, b], 5)
    assert packed["pixels"].shape == (5, 8, 8, 3) and packed["pixels"].dtype == np.float32
    np.testing.assert_array_equal(packed["mask"], [True, False, True, False, False])
    np.testing.assert_array_equal(packed["pixels"][2], np.asarray(b, np.float32))
    np.testing.assert_array_equal(packed["pixels"][[1, 3, 4]], 0.0)


def test_pack_refuses_what_does_not_fit(domain):
    (a,) = images(domain, 1)
    with pytest.raises(ValueError, match="2 images do not fit in 1 rows"):
        domain.pack([a, a], 1)
    big = np.zeros((9, 8, 3)).tolist()
    assert domain.does_not_fit(big) == "image of shape (9, 8, 3), expected (8, 8, 3)"
    assert domain.does_not_fit([[[0.0] * 3] * 8] * 7 + [[[0.0] * 2] * 8]).startswith("ragged")
    assert domain.does_not_fit(a) is None
    with pytest.raises(ValueError, match=r"image 1: image of shape \(9, 8, 3\)"):
        domain.pack([a, big], 2)


def test_target_is_the_maximum():
    domain = ImageDomain()
    target = domain.program.validate(domain.target_image.tolist())
    near = np.clip(domain.target_image + 0.01, 0, 1).tolist()
    others = [target, near, *images(domain, 3)]
    ev = as_numpy(domain.evaluate(domain.pack(others, 8), KEY))
    assert ev.fitness[0] == 0.0
    assert ev.fitness[0] > ev.fitness[1] > max(ev.fitness[2:5])
    assert ev.fitness[1] == pytest.approx(-1e-4, rel=0.05)  # one hundredth off, squared
    assert ev.valid[:5].all() and not ev.valid[5:].any()
    assert (ev.fitness >= -1.0).all() and (ev.fitness <= 0.0).all()
    assert ((ev.descriptors >= 0.0) & (ev.descriptors <= 1.0)).all()


def test_a_known_image_by_hand():
    domain = ImageDomain(size=4)
    grey = [[[0.5] * 3] * 4] * 4
    target = domain.target_image.astype(np.float64)
    ev = as_numpy(domain.evaluate(domain.pack([grey], 1), KEY))
    assert ev.fitness[0] == pytest.approx(-((target - 0.5) ** 2).mean(), abs=1e-7)
    np.testing.assert_allclose(ev.descriptors[0], [0.0, 0.5], atol=1e-6)


def test_empty_rows_are_invalid(domain):
    ev = as_numpy(domain.evaluate(domain.pack([None, None], 4), KEY))
    assert not ev.valid.any()
    np.testing.assert_array_equal(ev.fitness, INVALID_FITNESS)
    np.testing.assert_array_equal(ev.descriptors, 0.0)


def test_jit_matches_a_direct_call_and_ignores_the_key(domain):
    # QDax calls the scoring function inside its own jit; the domain jits it itself too.
    packed = domain.pack([*images(domain, 3), None], 4)
    jitted = as_numpy(jax.jit(domain.evaluate)(packed, KEY))
    direct = as_numpy(domain.evaluate(packed, jax.random.key(1)))
    np.testing.assert_array_equal(jitted.valid, direct.valid)
    np.testing.assert_allclose(jitted.fitness, direct.fitness, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jitted.descriptors, direct.descriptors, rtol=1e-6, atol=1e-6)
    for name in direct.extras:
        np.testing.assert_allclose(jitted.extras[name], direct.extras[name], rtol=1e-6, atol=1e-7)
    # ... and both agree with NumPy in float64.
    mse = ((packed["pixels"][:3].astype(np.float64) - domain.target_image) ** 2).mean(
        axis=(1, 2, 3)
    )
    np.testing.assert_allclose(direct.fitness[:3], -mse, rtol=1e-6)


def test_results_do_not_depend_on_the_batch(domain):
    some = images(domain, 3, seed=5)
    alone = [as_numpy(domain.evaluate(domain.pack([image], 1), KEY)) for image in some]
    for rows, where in ((3, (0, 1, 2)), (16, (15, 0, 9))):
        batch = [None] * rows
        for k, image in zip(where, some, strict=True):
            batch[k] = image
        ev = as_numpy(domain.evaluate(domain.pack(batch, rows), KEY))
        np.testing.assert_array_equal(ev.valid, [k in where for k in range(rows)])
        for k, one in zip(where, alone, strict=True):  # bit for bit
            np.testing.assert_array_equal(ev.fitness[k], one.fitness[0])
            np.testing.assert_array_equal(ev.descriptors[k], one.descriptors[0])
            for name in one.extras:
                np.testing.assert_array_equal(ev.extras[name][k], one.extras[name][0])
