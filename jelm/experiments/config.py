"""The Sodarace run's configuration: Hydra YAML (``configs/``) checked into a dataclass.

Every problem a configuration can have (an unknown operator, a batch of zero, an empty
grid, a missing seed file, inverted descriptor bounds, ...) is found here, before any
work starts, and reported as one :class:`ConfigError` listing every problem found.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.lm.backends import BACKEND_KINDS, SHIPPED_DIR, spec_problems  # stdlib only: cheap
from jelm.sim.terrain import TERRAINS
from jelm.sim.walker import MAX_DEGREE, MAX_JOINTS, MAX_LINKS, BucketShape

#: Operators the loop knows.
OPERATORS = ("gp", "direct", "lm_diff", "lm_prompt", "lm_crossover")
LM_OPERATORS = ("lm_diff", "lm_prompt", "lm_crossover")

#: Language-model settings (``lm:`` in configs/sodarace.yaml) and their defaults.
LM_DEFAULTS: dict[str, Any] = {
    "backend": {"kind": "jelm", "path": "shipped"},
    "max_new_tokens": 384,
    "temperature": 0.8,
    "top_p": 0.95,
    "fuzzy": True,
    "messages": None,  # [[message, probability], ...]; None: the paper's 40/30/30
    "instruction": None,  # lm_prompt / lm_crossover; None: the operator's default
    "n_parents": 2,  # lm_crossover
}


class ConfigError(ValueError):
    """The configuration cannot run; the message lists every problem found."""


@dataclasses.dataclass(frozen=True)
class QDConfig:
    """The archive (see jelm.qd.archive.ArchiveConfig for the meaning of each field)."""

    kind: str = "grid"
    grid: tuple[int, ...] = (12, 12, 12)
    lower: tuple[float, ...] = (0.0, 0.0, 0.0)
    upper: tuple[float, ...] = (30.0, 30.0, 400.0)
    n_centroids: int = 1728
    deep: int = 1
    fitness_offset: float = -100.0


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One ELM run on Sodarace (keys of ``configs/sodarace.yaml``)."""

    seed: int = 0
    mutation: str = "lm_diff"
    seeds: tuple[str, ...] = ("square", "radial", "cppn_fixed", "cppn_mutable")
    generations: int = 20
    batch: int = 32
    steps: int = 600
    terrain: str = "flat"
    bucket: tuple[int, int, int] = (32, 128, 8)
    qd: QDConfig = dataclasses.field(default_factory=QDConfig)
    gp: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    direct: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sandbox: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    lm: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(LM_DEFAULTS))
    checkpoint_every: int = 5
    renders: int = 4
    progress: bool = True

    @property
    def shape(self) -> BucketShape:
        """The padded walker shape every candidate is packed into."""
        return BucketShape(*self.bucket)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for the run directory and the ledger's config hash)."""
        return json_ready(dataclasses.asdict(self))


def json_ready(value: Any) -> Any:
    """Tuples to lists, mappings to dicts, recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def seed_program(name: str) -> str:
    """The program text of a seed given by name (jelm.domains.sodarace.seeds) or file path."""
    if name in SEED_NAMES:
        return seed_source(name)
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(
        f"seed {name!r} is neither a seed name ({', '.join(SEED_NAMES)}) nor an existing .py file"
    )


def _int(raw: Mapping[str, Any], key: str, problems: list[str], minimum: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key} must be an integer, got {value!r}")
        return minimum
    if value < minimum:
        problems.append(f"{key} must be at least {minimum}, got {value}")
    return value


def from_mapping(raw: Mapping[str, Any]) -> RunConfig:
    """Check a configuration (e.g. Hydra's, as a plain dict) and build a RunConfig.

    Unknown keys are errors too, so a typo (``generation=5``) does not pass silently.
    """
    problems: list[str] = []
    known = {f.name for f in dataclasses.fields(RunConfig)}
    for key in raw:
        if key not in known and key != "hydra":
            problems.append(f"unknown key {key!r} (known: {', '.join(sorted(known))})")
    defaults = RunConfig()
    raw = {**json_ready(dataclasses.asdict(defaults)), **json_ready(raw)}

    mutation = raw["mutation"]
    if mutation not in OPERATORS:
        problems.append(f"unknown operator {mutation!r}; choose one of {', '.join(OPERATORS)}")
    seeds = raw["seeds"]
    if isinstance(seeds, str):
        seeds = [seeds]
    if not seeds:
        problems.append("seeds is empty: give at least one seed name or .py file")
    for name in seeds:
        try:
            seed_program(str(name))
        except ConfigError as exc:
            problems.append(str(exc))
    generations = _int(raw, "generations", problems, 0)
    batch = _int(raw, "batch", problems, 1)
    steps = _int(raw, "steps", problems, 1)
    checkpoint_every = _int(raw, "checkpoint_every", problems, 1)
    renders = _int(raw, "renders", problems, 0)
    seed = _int(raw, "seed", problems, 0)
    if raw["terrain"] not in TERRAINS:
        problems.append(f"unknown terrain {raw['terrain']!r}; choose one of {sorted(TERRAINS)}")
    bucket = raw["bucket"]
    if (
        not isinstance(bucket, list)
        or len(bucket) != 3
        or not all(isinstance(v, int) and v > 0 for v in bucket)
    ):
        problems.append(f"bucket must be [joints, links, links per joint], got {bucket!r}")
        bucket = list(defaults.bucket)
    elif bucket[0] > MAX_JOINTS or bucket[1] > MAX_LINKS or bucket[2] > MAX_DEGREE:
        problems.append(
            f"bucket {bucket} exceeds the caps ({MAX_JOINTS} joints, {MAX_LINKS} links, "
            f"{MAX_DEGREE} links per joint)"
        )

    qd_raw = raw["qd"]
    unknown_qd = set(qd_raw) - {f.name for f in dataclasses.fields(QDConfig)}
    if unknown_qd:
        problems.append(f"unknown qd keys {sorted(unknown_qd)}")
    qd_raw = {k: v for k, v in qd_raw.items() if k not in unknown_qd}
    qd = QDConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in qd_raw.items()})
    if qd.kind not in ("grid", "cvt"):
        problems.append(f"qd.kind must be grid or cvt, got {qd.kind!r}")
    if qd.kind == "grid" and (not qd.grid or any(int(n) < 1 for n in qd.grid)):
        problems.append(f"qd.grid must have at least one cell on every axis, got {list(qd.grid)}")
    if len(qd.lower) != 3 or len(qd.upper) != 3:
        problems.append("qd.lower and qd.upper need 3 values (height, width, mass)")
    else:
        for axis, lo, hi in zip(("height", "width", "mass"), qd.lower, qd.upper, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                problems.append(f"qd bounds of {axis} are inverted or empty: [{lo}, {hi}]")
    if qd.kind == "grid" and len(qd.grid) != len(qd.lower):
        problems.append(f"qd.grid has {len(qd.grid)} axes; the descriptors have 3")
    if qd.deep < 1:
        problems.append(f"qd.deep must be at least 1, got {qd.deep}")

    lm = _check_lm(raw["lm"], problems, used=mutation in LM_OPERATORS)

    if problems:
        raise ConfigError("bad configuration:\n  - " + "\n  - ".join(problems))
    return RunConfig(
        seed=seed,
        mutation=mutation,
        seeds=tuple(str(s) for s in seeds),
        generations=generations,
        batch=batch,
        steps=steps,
        terrain=raw["terrain"],
        bucket=tuple(bucket),
        qd=qd,
        gp=dict(raw["gp"]),
        direct=dict(raw["direct"]),
        sandbox=dict(raw["sandbox"]),
        lm=lm,
        checkpoint_every=checkpoint_every,
        renders=renders,
        progress=bool(raw["progress"]),
    )


def _check_lm(raw: Any, problems: list[str], used: bool) -> dict[str, Any]:
    """Check the ``lm`` section; the backend is only checked when an LM operator runs."""
    if not isinstance(raw, Mapping):
        problems.append(f"lm must be a mapping, got {raw!r}")
        return dict(LM_DEFAULTS)
    unknown = set(raw) - set(LM_DEFAULTS)
    if unknown:
        problems.append(f"unknown lm keys {sorted(unknown)} (known: {sorted(LM_DEFAULTS)})")
    lm = {**LM_DEFAULTS, **{k: v for k, v in raw.items() if k in LM_DEFAULTS}}
    if isinstance(lm["max_new_tokens"], bool) or not isinstance(lm["max_new_tokens"], int):
        problems.append(f"lm.max_new_tokens must be an integer, got {lm['max_new_tokens']!r}")
    elif lm["max_new_tokens"] < 1:
        problems.append(f"lm.max_new_tokens must be at least 1, got {lm['max_new_tokens']}")
    temperature, top_p = lm["temperature"], lm["top_p"]
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 10:
        problems.append(f"lm.temperature must be in [0, 10], got {temperature!r}")
    if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        problems.append(f"lm.top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(lm["n_parents"], int) or lm["n_parents"] < 2:
        problems.append(f"lm.n_parents must be an integer >= 2, got {lm['n_parents']!r}")
    messages = lm["messages"]
    if messages is not None:
        try:
            pairs = [(str(m), float(p)) for m, p in messages]
            if not pairs or any(p < 0 for _, p in pairs) or sum(p for _, p in pairs) <= 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(
                "lm.messages must be a non-empty list of [message, probability] with "
                f"probabilities >= 0 and a positive sum, got {messages!r}"
            )
    backend = lm["backend"]
    if not isinstance(backend, Mapping) or backend.get("kind") not in BACKEND_KINDS:
        problems.append(
            f"lm.backend must be a mapping with kind one of {', '.join(BACKEND_KINDS)}, "
            f"got {backend!r}"
        )
        return lm
    if backend["kind"] == "openai":
        # Hydra merges overrides into configs/sodarace.yaml's backend, so choosing
        # `lm.backend.kind=openai` keeps the jelm default `path: shipped`; it means nothing
        # to an OpenAI backend.
        backend = {k: v for k, v in backend.items() if k != "path"}
        lm["backend"] = backend
    if used:
        problems.extend(_backend_problems(backend))
    return lm


def _backend_problems(backend: Mapping[str, Any]) -> list[str]:
    """What is wrong with a backend specification, found before any work starts."""
    problems = [f"lm.backend: {p}" for p in spec_problems(backend)]
    if problems or backend["kind"] == "openai":
        return problems
    kind, path = backend["kind"], backend["path"]
    if kind == "jelm" and path == "shipped":
        path = SHIPPED_DIR
    if not Path(path, "config.json").is_file():
        return [f"lm.backend ({kind}): {path} is not a model directory (no config.json)"]
    return []
