"""The configuration of an ELM run: dataclasses that hold every default once.

A run's configuration (:func:`config_class`) is :class:`RunConfig` plus, flat, the
options of its domain (the domain dataclass's fields: Sodarace's ``steps``, ``terrain``,
``bucket``) plus one section per mutation operator usable on the domain (the operator's
options dataclass: ``gp``, ``lm``, Sodarace's ``direct``). Hydra's structured config
(``configs/<domain>.yaml`` names it as its schema) and the validator
(:func:`from_mapping`) both read these classes, so a default is written in one place.

Every problem a configuration can have (an unknown operator, a batch of zero, an empty
grid, a missing seed file, inverted bounds, a model directory that is not there) is
found before any work starts and reported as one :class:`ConfigError` listing them all.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jelm.domains import DOMAINS, load_domains
from jelm.mutation import OPERATORS, options_class
from jelm.programs.sandbox import SandboxLimits
from jelm.registry import UnknownEntry

__all__ = [
    "ConfigError",
    "DistributedConfig",
    "QDConfig",
    "RunConfig",
    "SandboxConfig",
    "config_class",
    "from_mapping",
    "identity",
    "json_ready",
]

#: Keys a resumed run may change (budget and presentation).
RESUMABLE_KEYS = (
    "generations",
    "progress",
    "renders",
    "checkpoint_every",
    "xla_cache",
    "distributed",
)


class ConfigError(ValueError):
    """The configuration cannot run; the message lists every problem found."""


@dataclasses.dataclass
class QDConfig:
    """The archive (see :class:`jelm.qd.archive.ArchiveConfig`).

    ``grid``, ``lower``, ``upper`` and ``fitness_offset`` left ``None`` take the domain's.
    """

    kind: str = "grid"
    grid: list[int] | None = None
    lower: list[float] | None = None
    upper: list[float] | None = None
    n_centroids: int = 1728
    deep: int = 1
    fitness_offset: float | None = None


@dataclasses.dataclass
class SandboxConfig:
    """The sandbox pool: ``workers`` processes (``None``: one per CPU) and the wall-clock
    limit of one program."""

    workers: int | None = None
    timeout_s: float = SandboxLimits.timeout_s


@dataclasses.dataclass
class DistributedConfig:
    """The processes of a ``jax.distributed`` job (``jelm/qd/README.md``, "Many hosts").

    Unset values are read from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``, then from SLURM (``SLURM_NTASKS``, ``SLURM_PROCID``, the first host
    of ``SLURM_STEP_NODELIST``); with none of them the run is one process. ``auto``
    leaves every value to ``jax.distributed.initialize()``'s own detection (TPU pods and
    the clusters JAX knows); ``port`` is the coordinator's port when only a host is known.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    port: int = 12321
    auto: bool = False
    timeout_s: int = 300


@dataclasses.dataclass
class RunConfig:
    """One ELM run (the keys every domain shares).

    Attributes:
        domain: the domain's registered name (set by the entry point).
        seed: PRNG seed of the whole run (selection, mutation, evaluation, CVT).
        mutation: the operator's registered name (default: the domain's).
        seeds: seed program names of the domain, or paths to ``.py`` files.
        generations: ELM generations after the seeds.
        batch: candidates per generation.
        checkpoint_every: generations between checkpoints (the last one is always saved).
        renders: pictures of the best elites written at the end.
        progress: a progress bar with live QD-score and coverage (else one line each).
        distributed: the processes of a multi-host run (:class:`DistributedConfig`).
        xla_cache: a directory where compiled XLA programs are kept between runs (JAX's
            persistent compilation cache; ``None`` or empty: off). A run compiles the LM
            sampler for every new batch shape; later runs load them from here.
            ``JAX_COMPILATION_CACHE_DIR``, when set, wins.
    """

    domain: str = "sodarace"
    seed: int = 0
    mutation: str = "lm_diff"
    seeds: list[str] = dataclasses.field(default_factory=list)
    generations: int = 20
    batch: int = 32
    qd: QDConfig = dataclasses.field(default_factory=QDConfig)
    sandbox: SandboxConfig = dataclasses.field(default_factory=SandboxConfig)
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    checkpoint_every: int = 5
    renders: int = 4
    progress: bool = True
    xla_cache: str | None = "~/.cache/jelm/xla"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for the run directory and the ledger's config hash)."""
        return json_ready(dataclasses.asdict(self))

    def domain_options(self) -> dict[str, Any]:
        """The domain's options (its dataclass fields) of this configuration."""
        cls = DOMAINS.get(self.domain)
        return {f.name: getattr(self, f.name) for f in _domain_fields(cls)}

    def operator_options(self, name: str | None = None) -> Any:
        """The options object of operator ``name`` (default: the run's)."""
        entry = OPERATORS.get(name or self.mutation)
        return getattr(self, entry.section)


def json_ready(value: Any) -> Any:
    """Tuples to lists, mappings to dicts, recursively."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def identity(config: RunConfig) -> dict[str, Any]:
    """The part of the configuration that defines the run (hashed into the ledger)."""
    out = config.to_dict()
    for key in RESUMABLE_KEYS:
        out.pop(key, None)
    return out


# ---------------------------------------------------------------------------------------
# Building a domain's configuration class


def _domain_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _config_type(hint: Any) -> Any:
    """A dataclass field type as a structured config reads it (tuples become lists)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return list[args[0]] if args else list[Any]
    return hint


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
        if isinstance(value, tuple):
            return dataclasses.field(default_factory=lambda v=value: list(v))
        return dataclasses.field(default=value)
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory)
    raise TypeError(f"option {f.name!r} has no default")


def _sections(domain: str) -> dict[str, type]:
    """Section name -> options dataclass of every operator usable on ``domain``."""
    out: dict[str, type] = {}
    for _, entry in OPERATORS.items():
        if entry.domains is None or domain in entry.domains:
            out.setdefault(entry.section, options_class(entry))
    return out


def _section_config(cls: type) -> type:
    """A mutable structured-config copy of an options dataclass (same fields)."""
    hints = _hints(cls)
    fields = [(f.name, _config_type(hints[f.name]), _field_default(f)) for f in _domain_fields(cls)]
    return dataclasses.make_dataclass(f"{cls.__name__}Section", fields)


def config_class(domain: str) -> type[RunConfig]:
    """The configuration class of runs on ``domain``: :class:`RunConfig` plus the domain's
    options (flat) and one section per usable operator; ``seeds``, ``mutation`` and the
    grid default to the domain's. One class per domain and set of registered operators
    (registering an operator later gives a class with its section)."""
    cls = DOMAINS.get(domain)
    sections = tuple(sorted(_sections(domain).items()))
    return _config_class(domain, cls, sections)


@functools.cache
def _config_class(
    domain: str, cls: type, sections: tuple[tuple[str, type], ...]
) -> type[RunConfig]:
    hints = _hints(cls)
    fields: list[tuple[str, Any, Any]] = [
        ("domain", str, dataclasses.field(default=domain)),
        ("mutation", str, dataclasses.field(default=cls.default_operator)),
        (
            "seeds",
            list[str],
            dataclasses.field(default_factory=lambda: list(cls.default_seeds)),
        ),
    ]
    taken = {f.name for f in dataclasses.fields(RunConfig)}
    for f in _domain_fields(cls):
        if f.name in taken:
            raise TypeError(f"domain option {f.name!r} clashes with a run configuration key")
        fields.append((f.name, _config_type(hints[f.name]), _field_default(f)))
    for section, options in sections:
        section_cls = _section_config(options)
        fields.append((section, section_cls, dataclasses.field(default_factory=section_cls)))
    name = "".join(part.title() for part in domain.split("_")) + "RunConfig"
    return dataclasses.make_dataclass(name, fields, bases=(RunConfig,))


# ---------------------------------------------------------------------------------------
# Validation


def seed_program(domain: Any, name: str) -> str:
    """The program text of a seed given by name (one of the domain's) or by file path."""
    if name in domain.seed_names():
        return domain.seed_program(name)
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(
        f"seed {name!r} is neither a seed name ({', '.join(domain.seed_names())}) nor an "
        "existing .py file"
    )


def _section(raw: Any, cls: type, name: str, problems: list[str], used: bool) -> Any:
    """Build section ``name`` of class ``cls`` from ``raw``; unknown keys and bad values
    are problems (values are only checked when the section is used)."""
    if not isinstance(raw, Mapping):
        problems.append(f"{name} must be a mapping, got {raw!r}")
        return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        problems.append(f"unknown {name} keys {unknown} (known: {sorted(known)})")
    try:
        value = cls(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as exc:
        problems.append(f"{name}: {exc}")
        return cls()
    if used and hasattr(value, "problems"):
        problems.extend(value.problems())
    return value


def _int(raw: Mapping[str, Any], key: str, problems: list[str], minimum: int) -> None:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key} must be an integer, got {value!r}")
    elif value < minimum:
        problems.append(f"{key} must be at least {minimum}, got {value}")


def _check_qd(qd: QDConfig, domain: Any, problems: list[str]) -> None:
    names = domain.descriptor_names
    if qd.kind not in ("grid", "cvt"):
        problems.append(f"qd.kind must be grid or cvt, got {qd.kind!r}")
    if qd.kind == "grid" and (not qd.grid or any(int(n) < 1 for n in qd.grid)):
        problems.append(f"qd.grid must have at least one cell on every axis, got {list(qd.grid)}")
    if len(qd.lower) != len(names) or len(qd.upper) != len(names):
        problems.append(f"qd.lower and qd.upper need {len(names)} values ({', '.join(names)})")
    else:
        for axis, lo, hi in zip(names, qd.lower, qd.upper, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                problems.append(f"qd bounds of {axis} are inverted or empty: [{lo}, {hi}]")
    if qd.kind == "grid" and len(qd.grid) != len(names):
        problems.append(f"qd.grid has {len(qd.grid)} axes; the descriptors have {len(names)}")
    if qd.deep < 1:
        problems.append(f"qd.deep must be at least 1, got {qd.deep}")
    if qd.kind == "cvt" and qd.n_centroids < 1:
        problems.append(f"qd.n_centroids must be at least 1, got {qd.n_centroids}")


def from_mapping(raw: Mapping[str, Any], domain: str | None = None) -> RunConfig:
    """Check a configuration (e.g. Hydra's, as a plain dict) and build its config object.

    ``domain`` defaults to ``raw["domain"]`` (then ``sodarace``). Unknown keys are errors
    too, so a typo (``generation=5``) does not pass silently; ``None`` bounds and fitness
    offset are resolved to the domain's, so the resolved configuration says what ran.
    """
    name = domain or raw.get("domain") or "sodarace"
    load_domains()  # so every domain's own operators are known, and named when misused
    try:
        cls = config_class(name)
    except UnknownEntry as exc:
        raise ConfigError(f"bad configuration:\n  - {exc}") from None
    problems: list[str] = []
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known and key != "hydra":
            problems.append(f"unknown key {key!r} (known: {', '.join(sorted(known))})")
    defaults = json_ready(dataclasses.asdict(cls()))
    merged = {**defaults, **json_ready({k: v for k, v in raw.items() if k in known})}
    if merged["domain"] != name:
        problems.append(f"domain is {merged['domain']!r} but this is a {name!r} configuration")

    if merged["mutation"] not in OPERATORS:
        problems.append(
            f"unknown operator {merged['mutation']!r}; choose one of {', '.join(OPERATORS)}"
        )
    used = None
    sections = _sections(name)
    if merged["mutation"] in OPERATORS:
        entry = OPERATORS.get(merged["mutation"])
        if entry.domains is not None and name not in entry.domains:
            problems.append(
                f"operator {merged['mutation']!r} works on {', '.join(entry.domains)}, not "
                f"on {name!r}"
            )
        used = entry.section
    for key in ("generations", "seed", "renders"):
        _int(merged, key, problems, 0)
    for key in ("batch", "checkpoint_every"):
        _int(merged, key, problems, 1)

    domain_cls = DOMAINS.get(name)
    options = {f.name: merged[f.name] for f in _domain_fields(domain_cls)}
    try:
        domain_obj = domain_cls(**options)
    except (TypeError, ValueError) as exc:
        problems.append(str(exc))
        domain_obj = domain_cls()
    seeds = merged["seeds"]
    if isinstance(seeds, str):
        seeds = [seeds]
    if not seeds:
        problems.append("seeds is empty: give at least one seed name or .py file")
    for seed in seeds:
        try:
            seed_program(domain_obj, str(seed))
        except ConfigError as exc:
            problems.append(str(exc))

    qd = _section(merged["qd"], QDConfig, "qd", problems, used=False)
    qd = dataclasses.replace(
        qd,
        grid=list(domain_obj.default_grid if qd.grid is None else qd.grid),
        lower=list(domain_obj.descriptor_lower if qd.lower is None else qd.lower),
        upper=list(domain_obj.descriptor_upper if qd.upper is None else qd.upper),
        fitness_offset=float(
            domain_obj.fitness_offset if qd.fitness_offset is None else qd.fitness_offset
        ),
    )
    _check_qd(qd, domain_obj, problems)
    sandbox = _section(merged["sandbox"], SandboxConfig, "sandbox", problems, used=False)
    distributed = _section(
        merged["distributed"], DistributedConfig, "distributed", problems, used=False
    )
    built = {
        section: _section(merged[section], cls_, section, problems, used=section == used)
        for section, cls_ in sections.items()
    }
    if problems:
        raise ConfigError("bad configuration:\n  - " + "\n  - ".join(problems))
    plain = {k: merged[k] for k in known if k not in ("qd", "sandbox", "distributed", *sections)}
    plain["seeds"] = [str(s) for s in seeds]
    return cls(**plain, qd=qd, sandbox=sandbox, distributed=distributed, **built)
