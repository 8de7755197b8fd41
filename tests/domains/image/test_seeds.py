"""Tests for the image domain's seed programs (jelm.domains.image.seeds)."""

from __future__ import annotations

import ast

import jax
import numpy as np
import pytest

from jelm.domains.image.codec import encode_image
from jelm.domains.image.domain import ImageDomain
from jelm.domains.image.seeds import SEED_NAMES, SEED_SIZE, seed_source
from jelm.programs.sandbox import check_source

#: Each seed's fitness and descriptors (hue, brightness) against the sunset target at 32.
EXPECTED = {
    "circle": (-0.158919, 0.166667, 0.274279),
    "gradient": (-0.089621, 0.004020, 0.359816),
    "stripes": (-0.273160, 0.903672, 0.547763),
    "checkerboard": (-0.236468, 0.356470, 0.645250),
}


def run_program(source: str, domain: ImageDomain):
    """Run a trusted program in this process as the sandbox would: its entry, then the
    domain's encoder (in the child) and validator (in the parent)."""
    spec = domain.program
    namespace: dict = {"__name__": "image_program"}
    exec(compile(source, spec.file_name, "exec"), namespace)
    return spec.validate(encode_image(namespace[spec.entry](), spec.encode_options))


def test_seed_names_and_unknown_seed():
    assert (
        ImageDomain().seed_names()
        == SEED_NAMES
        == ("circle", "gradient", "stripes", "checkerboard")
    )
    with pytest.raises(ValueError, match="unknown seed 'sun'; valid seeds: circle, gradient"):
        ImageDomain().seed_program("sun")


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_is_short_guarded_and_math_only(name):
    source = ImageDomain().seed_program(name)
    assert source == seed_source(name)
    assert len(source.splitlines()) <= 30
    assert check_source(source, ImageDomain().program.imports) is None
    imports = {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imports <= {"math"}
    assert not any(isinstance(node, ast.ImportFrom) for node in ast.walk(ast.parse(source)))


@pytest.mark.parametrize("size", [SEED_SIZE, 16, 5, 1])
def test_seeds_draw_valid_deterministic_images_at_any_size(size):
    domain = ImageDomain(size=size)
    for name in SEED_NAMES:
        source = domain.seed_program(name)
        assert f"SIZE = {size}\n" in source
        image = run_program(source, domain)
        assert np.shape(image) == (size, size, 3)
        assert domain.does_not_fit(image) is None
        assert run_program(source, domain) == image


def test_seed_fitness_and_descriptors():
    domain = ImageDomain()
    images = [run_program(domain.seed_program(name), domain) for name in SEED_NAMES]
    ev = domain.evaluate(domain.pack(images, len(images)), jax.random.key(0))
    assert np.asarray(ev.valid).all()
    for name, fitness, descriptors in zip(SEED_NAMES, ev.fitness, ev.descriptors, strict=True):
        expected = EXPECTED[name]
        assert float(fitness) == pytest.approx(expected[0], abs=1e-5), name
        np.testing.assert_allclose(descriptors, expected[1:], atol=1e-5, err_msg=name)
    # Brightness by hand: 317 yellow pixels of luma 0.886 in 1024; the gradient's mean colour
    # is halfway between its ends; three red, three white and two blue bands of stripes.
    brightness = [d[2] for d in EXPECTED.values()]
    assert brightness[0] == pytest.approx(0.886 * 317 / 1024, abs=1e-6)
    mean_colour = [0.5, 0.3, 0.3]  # up to the rounding of each channel to 4 decimals
    assert brightness[1] == pytest.approx(np.dot(mean_colour, [0.299, 0.587, 0.114]), abs=5e-5)
    red, blue = 0.299 * 0.8 + 0.587 * 0.1 + 0.114 * 0.1, 0.299 * 0.1 + 0.587 * 0.2 + 0.114 * 0.7
    assert brightness[2] == pytest.approx((3 * red + 3 * 1.0 + 2 * blue) / 8, abs=1e-6)
    # Four seeds, four different cells of a 10 x 10 grid over the descriptor space.
    cells = {tuple(np.floor(np.asarray(d) * 10).astype(int)) for d in ev.descriptors}
    assert len(cells) == len(SEED_NAMES)


def test_seed_source_needs_the_size_line(monkeypatch):
    import jelm.domains.image.seeds as seeds

    monkeypatch.setattr(seeds, "_SIZE_LINE", seeds.re.compile("^NO SUCH LINE$"))
    with pytest.raises(ValueError, match="seed 'circle' has no line 'SIZE = 32'"):
        seeds.seed_source("circle", 16)
