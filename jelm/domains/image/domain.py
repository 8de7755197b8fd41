"""Image evolution as a :class:`jelm.domains.base.Domain` (ELM, arXiv 2206.08896v1, §3).

As in OpenELM's image environment, a genotype is a program whose ``draw()`` returns a
picture; here it is scored against a built-in target (:mod:`.targets`) by
:func:`.score.score_images`: fitness is the negative mean squared error to the target,
the descriptors are the picture's mean hue and brightness. A packed genotype is the
picture as a float32 ``(size, size, 3)`` array and a ``mask`` flag (set for a filled row).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from jelm.domains.base import Domain, Evaluation, ProgramSpec, Prompts
from jelm.domains.image.codec import validate_image
from jelm.domains.image.prompts import PROMPTS
from jelm.domains.image.render import write_images
from jelm.domains.image.score import INVALID_FITNESS, score_images
from jelm.domains.image.seeds import SEED_NAMES, seed_source
from jelm.domains.image.targets import TARGETS, make_target

__all__ = ["MAX_SIZE", "ImageDomain", "program_spec"]

#: The largest image side: a 64 x 64 image is at most ~320 kB of JSON, within the
#: sandbox's default 1 MB result cap.
MAX_SIZE = 64

_score_jit = jax.jit(score_images)


@functools.cache
def program_spec(size: int) -> ProgramSpec:
    """How image programs of ``size`` x ``size`` pictures are written and run (one object
    per size, so equal domains have equal specs)."""
    shape = (size, size)
    return ProgramSpec(
        entry="draw",
        file_name="image.py",
        validate=functools.partial(validate_image, shape=shape),
        encode="jelm.domains.image.codec:encode_image",
        encode_options=shape,
        api_module=None,
        allowed_imports=("math", "random"),
        phenotype="image",
    )


@dataclasses.dataclass(frozen=True)
class ImageDomain(Domain):
    """Pictures drawn by programs, scored against a built-in target.

    Attributes:
        size: the side of every picture, in pixels (1 to :data:`MAX_SIZE`).
        target: the target picture, a name of :data:`jelm.domains.image.targets.TARGETS`.
    """

    size: int = 32
    target: str = "sunset"

    name: ClassVar[str] = "image"
    descriptor_names: ClassVar[tuple[str, ...]] = ("hue", "brightness")
    descriptor_lower: ClassVar[tuple[float, ...]] = (0.0, 0.0)
    descriptor_upper: ClassVar[tuple[float, ...]] = (1.0, 1.0)
    fitness_offset: ClassVar[float] = INVALID_FITNESS
    fitness_label: ClassVar[str] = "negative mean squared error to the target"
    default_seeds: ClassVar[tuple[str, ...]] = SEED_NAMES
    default_grid: ClassVar[tuple[int, ...]] = (10, 10)
    # The shipped diff model writes walkers, not drawings: GP by default.
    default_operator: ClassVar[str] = "gp"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with these options (empty when they can run)."""
        out = []
        size = self.size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
            out.append(f"size must be an integer from 1 to {MAX_SIZE}, got {size!r}")
        if self.target not in TARGETS.names():
            out.append(f"unknown target {self.target!r}; choose one of {list(TARGETS.names())}")
        return out

    # -- programs --------------------------------------------------------------------

    @property
    def program(self) -> ProgramSpec:
        return program_spec(self.size)

    @property
    def prompts(self) -> Prompts:
        return PROMPTS

    def seed_names(self) -> tuple[str, ...]:
        return SEED_NAMES

    def seed_program(self, name: str) -> str:
        return seed_source(name, self.size)

    # -- genotypes -------------------------------------------------------------------

    @property
    def target_image(self) -> np.ndarray:
        """The target picture, float32 ``(size, size, 3)`` (read-only)."""
        return make_target(self.target, self.size)

    def genotype_template(self) -> dict[str, np.ndarray]:
        return {
            "pixels": np.zeros((self.size, self.size, 3), np.float32),
            "mask": np.zeros((), bool),
        }

    def does_not_fit(self, phenotype: Any) -> str | None:
        try:
            shape = np.shape(phenotype)
        except ValueError:  # ragged nested lists
            return "ragged image (rows or pixels of unequal lengths)"
        expected = (self.size, self.size, 3)
        return None if shape == expected else f"image of shape {shape}, expected {expected}"

    def pack(self, phenotypes: Sequence[Any | None], rows: int) -> dict[str, np.ndarray]:
        if len(phenotypes) > rows:
            raise ValueError(f"{len(phenotypes)} images do not fit in {rows} rows")
        pixels = np.zeros((rows, self.size, self.size, 3), np.float32)
        mask = np.zeros((rows,), bool)
        for row, phenotype in enumerate(phenotypes):
            if phenotype is None:
                continue
            reason = self.does_not_fit(phenotype)
            if reason is not None:
                raise ValueError(f"image {row}: {reason}")
            pixels[row] = np.asarray(phenotype, np.float32)
            mask[row] = True
        return {"pixels": pixels, "mask": mask}

    def evaluate(
        self, genotypes: dict[str, Any], key: Any, devices: Sequence[Any] | None = None
    ) -> Evaluation:
        """Score a batch against the target (deterministic: ``key`` is not used; the
        batch is not spread, whatever ``devices``)."""
        return _score_jit(genotypes["pixels"], genotypes["mask"], self.target_image)

    # -- optional --------------------------------------------------------------------

    def render(self, genotypes: dict[str, Any], labels: Sequence[str], out: Path) -> list[Path]:
        """``out/<label>.png`` for the first ``len(labels)`` pictures of ``genotypes`` and
        ``out/grid.png`` of them all (see :mod:`.render`)."""
        pixels = np.asarray(genotypes["pixels"])[: len(labels)]
        return write_images(pixels, labels, out)

    def describe(self) -> str:
        return f"Image: {self.size} x {self.size} pictures matched to the {self.target} target"
