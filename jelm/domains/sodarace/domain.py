"""Sodarace as a :class:`jelm.domains.base.Domain` (ELM, arXiv 2206.08896v1, §4).

Adapts :mod:`jelm.sim`: a genotype is a walker packed into the run's fixed bucket (the
array fields of :class:`jelm.sim.walker.WalkerBatch` as a dict), fitness is the centre of
mass's x displacement over ``steps`` steps times the terrain's direction, and the
descriptors are the paper's initial height, width and mass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from jelm.domains.base import CorpusExample, Domain, Evaluation, ProgramSpec, Prompts
from jelm.domains.sodarace.program import PROGRAM
from jelm.domains.sodarace.prompts import PROMPTS
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.mutation import OPERATORS, OperatorEntry
from jelm.sim.base import DEFAULT_PARAMS, SurfaceSpec, as_arrays
from jelm.sim.physics import evaluate_jit
from jelm.sim.shard import local_mesh, mesh_of
from jelm.sim.terrain import TERRAINS, make_terrain
from jelm.sim.walker import (
    MAX_DEGREE,
    MAX_JOINTS,
    MAX_LINKS,
    BucketShape,
    WalkerBatch,
    WalkerDoesNotFit,
    pack,
)

__all__ = ["WALKER_FIELDS", "SodaraceDomain", "walkers_of"]

#: The WalkerBatch array fields a genotype carries.
WALKER_FIELDS: tuple[str, ...] = (
    "joints",
    "joint_mask",
    "link_i",
    "link_j",
    "muscle",
    "amplitude",
    "phase",
    "link_mask",
)


def walkers_of(genotypes: Mapping[str, Any], degree: int) -> WalkerBatch:
    """The :class:`WalkerBatch` of a batch of Sodarace genotypes."""
    return WalkerBatch(**{name: genotypes[name] for name in WALKER_FIELDS}, max_degree=degree)


@dataclasses.dataclass(frozen=True)
class SodaraceDomain(Domain):
    """Sodarace walkers on one terrain.

    Attributes:
        steps: simulated steps per evaluation (1/60 s each).
        terrain: a terrain of :data:`jelm.sim.terrain.TERRAINS`.
        bucket: the padded walker shape every candidate is packed into: joints, links,
            links per joint.
    """

    steps: int = 600
    terrain: str = "flat"
    bucket: tuple[int, int, int] = (32, 128, 8)

    name: ClassVar[str] = "sodarace"
    descriptor_names: ClassVar[tuple[str, ...]] = ("height", "width", "mass")
    # Measured seeds sit in the lower third of each axis; see jelm/domains/sodarace/README.md.
    descriptor_lower: ClassVar[tuple[float, ...]] = (0.0, 0.0, 0.0)
    descriptor_upper: ClassVar[tuple[float, ...]] = (30.0, 30.0, 400.0)
    fitness_offset: ClassVar[float] = -100.0
    fitness_label: ClassVar[str] = "COM x displacement"
    default_seeds: ClassVar[tuple[str, ...]] = ("square", "radial", "cppn_fixed", "cppn_mutable")
    default_grid: ClassVar[tuple[int, ...]] = (12, 12, 12)  # the paper's grid

    def __post_init__(self) -> None:
        object.__setattr__(self, "bucket", tuple(int(v) for v in self.bucket))
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        # Built here, on the host: evaluate() is traced, and the surface spec needs values.
        terrain = make_terrain(self.terrain)
        object.__setattr__(self, "_terrain", terrain)
        object.__setattr__(self, "_surfaces", SurfaceSpec.of(terrain))

    def problems(self) -> list[str]:
        """What is wrong with these options (empty when they can run)."""
        out = []
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            out.append(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.terrain not in TERRAINS:
            out.append(f"unknown terrain {self.terrain!r}; choose one of {sorted(TERRAINS)}")
        if len(self.bucket) != 3 or any(v < 1 for v in self.bucket):
            out.append(f"bucket must be [joints, links, links per joint], got {self.bucket!r}")
        elif (
            self.bucket[0] > MAX_JOINTS or self.bucket[1] > MAX_LINKS or self.bucket[2] > MAX_DEGREE
        ):
            out.append(
                f"bucket {list(self.bucket)} exceeds the caps ({MAX_JOINTS} joints, "
                f"{MAX_LINKS} links, {MAX_DEGREE} links per joint)"
            )
        return out

    # -- programs --------------------------------------------------------------------

    @property
    def program(self) -> ProgramSpec:
        return PROGRAM

    @property
    def prompts(self) -> Prompts:
        return PROMPTS

    def seed_names(self) -> tuple[str, ...]:
        return SEED_NAMES

    def seed_program(self, name: str) -> str:
        return seed_source(name)

    def corpus(self, size: int, seed: int, *, generated: float = 0.0) -> list[CorpusExample]:
        """The edit lineages of :func:`jelm.domains.sodarace.corpus.make_corpus`;
        ``generated`` is the share of lineages that start from a freshly written program
        instead of a seed."""
        from jelm.domains.sodarace.corpus import make_corpus

        return [
            CorpusExample(e.parent, e.child, e.message, e.diff)
            for e in make_corpus(size, seed=seed, generated=generated)
        ]

    # -- genotypes -------------------------------------------------------------------

    @property
    def shape(self) -> BucketShape:
        """The padded walker shape of every genotype."""
        return BucketShape(*self.bucket)

    @property
    def terrain_arrays(self) -> Any:
        """The :class:`jelm.sim.terrain.Terrain` walkers are scored on."""
        return self._terrain

    def genotype_template(self) -> dict[str, np.ndarray]:
        empty = pack([None], shape=self.shape, batch_size=1)
        return {name: np.asarray(getattr(empty, name))[0] for name in WALKER_FIELDS}

    def does_not_fit(self, phenotype: Any) -> str | None:
        try:
            pack([phenotype], shape=self.shape)
        except WalkerDoesNotFit as exc:
            return exc.reason
        return None

    def pack(self, phenotypes: Sequence[Any | None], rows: int) -> dict[str, Any]:
        batch = pack(list(phenotypes), shape=self.shape, batch_size=rows)
        return {name: getattr(batch, name) for name in WALKER_FIELDS}

    def walkers(self, genotypes: Mapping[str, Any]) -> WalkerBatch:
        """The WalkerBatch of a batch of genotypes."""
        return walkers_of(genotypes, self.shape.degree)

    def evaluate(
        self, genotypes: Mapping[str, Any], key: Any, devices: Sequence[Any] | None = None
    ) -> Evaluation:
        """Simulate and score a batch (deterministic: ``key`` is not used), spread over
        ``devices`` (default: every local device) unless ``$JELM_SIM_SHARD=0``
        (:func:`jelm.sim.shard.mesh_of`, read when traced); bit-identical to one device."""
        ev = evaluate_jit(
            self.walkers(genotypes),
            self._terrain,
            as_arrays(DEFAULT_PARAMS),
            steps=self.steps,
            surfaces=self._surfaces,
            mesh=local_mesh() if devices is None else mesh_of(devices),
        )
        return Evaluation(ev.fitness, ev.descriptors, ev.valid, {"displacement": ev.displacement})

    # -- optional --------------------------------------------------------------------

    def render(self, genotypes: Mapping[str, Any], labels: Sequence[str], out: Path) -> list[Path]:
        """GIFs of the walkers of ``genotypes`` walking on the domain's terrain."""
        from jelm.sim.physics import rollout
        from jelm.sim.render import render_rollout
        from jelm.sim.walker import unpack

        if not labels:
            return []
        batch = self.walkers(genotypes)
        terrain = self.terrain_arrays
        every = next(r for r in (4, 3, 2, 1) if self.steps % r == 0)  # frames at <= 15 Hz
        frames = np.asarray(rollout(batch, terrain, self.steps, every))
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for row, label in enumerate(labels):
            path = out / f"{label}.gif"
            render_rollout(
                unpack(batch, row), frames[row], path, terrain=terrain, frame_dt=every / 60
            )
            paths.append(path)
        return paths

    def describe(self) -> str:
        return f"Sodarace: {self.steps} steps on {self.terrain}, bucket {list(self.bucket)}"


OPERATORS.register(
    "direct",
    OperatorEntry(
        "jelm.domains.sodarace.direct:make_direct",
        "jelm.domains.sodarace.direct:DirectParams",
        section="direct",
        domains=("sodarace",),
    ),
)
