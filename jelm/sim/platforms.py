"""What the simulator does differently on each JAX platform, decided in one place.

The Sodarace step (ELM paper, Lehman et al. 2022, §4) has settings tuned for XLA:CPU:
FMA contraction pinned off, batches split into cache-sized chunks, the native C++ step.
None of them applies on a GPU or TPU. :func:`choices` gives the settings of a platform;
the pin in ``XLA_FLAGS``, the XLA step's chunking and :mod:`jelm.sim.backends` read them
from here. ``jelm/sim/README.md`` ("Platforms") gives the reasons.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import os
import platform as _host
import warnings
from collections.abc import Iterable

import jax

CPU, GPU, TPU = "cpu", "gpu", "tpu"
#: JAX's names for GPU platforms, which get the GPU's choices.
GPU_ALIASES = ("cuda", "rocm", "oneapi")
#: The flag that turns off FMA contraction in XLA:CPU (``jelm/sim/README.md``, "Determinism").
CPU_ISA_FLAG = "--xla_cpu_max_isa=AVX"
#: Set to ``1`` to leave XLA:CPU's FMA contraction on.
ALLOW_FMA_ENV = "JELM_SIM_ALLOW_FMA"


@dataclasses.dataclass(frozen=True)
class PlatformChoices:
    """The simulator's settings for one JAX platform.

    platform: the platform's name (``"cpu"``, ``"gpu"``, ``"tpu"`` or another JAX name).
    pin_cpu_isa: whether importing ``jelm.sim`` adds :data:`CPU_ISA_FLAG` to ``XLA_FLAGS``.
    chunk_slots: slot-table entries (walkers x joints x link slots) that the XLA step
      simulates together; a larger batch runs in equal chunks one after another. ``None``:
      the whole batch at once.
    native: whether the native C++ step (an XLA:CPU custom call) can run.
    """

    platform: str
    pin_cpu_isa: bool
    chunk_slots: int | None
    native: bool


#: The CPU: chunks that keep the XLA step's working set in cache (size measured, see
#: ``jelm/sim/README.md``), FMA pinned off, the native step available.
CPU_CHOICES = PlatformChoices(CPU, pin_cpu_isa=True, chunk_slots=131_072, native=True)
#: A GPU: the whole batch in one chunk (chunks run one after another, each paying every
#: kernel launch of the loop), no CPU flags, no native step.
GPU_CHOICES = PlatformChoices(GPU, pin_cpu_isa=False, chunk_slots=None, native=False)
#: A TPU: as a GPU.
TPU_CHOICES = PlatformChoices(TPU, pin_cpu_isa=False, chunk_slots=None, native=False)
CHOICES = {CPU: CPU_CHOICES, GPU: GPU_CHOICES, TPU: TPU_CHOICES}


def canonical(platform: str) -> str:
    """``platform`` as a key of :data:`CHOICES` where it has one: lower case, and
    ``cuda`` / ``rocm`` / ``oneapi`` as ``gpu`` (JAX's own alias)."""
    name = platform.strip().lower()
    return GPU if name in GPU_ALIASES else name


def current() -> str:
    """The platform of JAX's default backend, canonical (starts JAX's backends)."""
    return canonical(jax.default_backend())


def choices(platform: str | None = None) -> PlatformChoices:
    """The settings for ``platform`` (default: JAX's default backend). A platform not in
    :data:`CHOICES` is an accelerator to jelm: it gets the GPU's settings under its own
    name, since only the CPU has settings of its own."""
    name = canonical(platform) if platform is not None else current()
    found = CHOICES.get(name)
    return found if found is not None else dataclasses.replace(GPU_CHOICES, platform=name)


def native_platforms() -> tuple[str, ...]:
    """The platforms the native step runs on (the ``native`` backend's entry)."""
    return tuple(name for name, c in CHOICES.items() if c.native)


def guess(jax_platforms: str | None, plugins: Iterable[str], has_libtpu: bool) -> str:
    """The platform JAX will start on, worked out before it starts: the first of
    ``jax_platforms`` (``$JAX_PLATFORMS`` or the ``jax_platforms`` option) when set, else
    a GPU when a GPU plugin (``plugins``: the names of the installed ``jax_plugins``) is
    installed, else a TPU when libtpu is, else the CPU. JAX prefers an accelerator it can
    use to the CPU, in this order."""
    if jax_platforms:
        return canonical(jax_platforms.split(",")[0])
    names = [p.lower() for p in plugins]
    if any(alias in name for name in names for alias in GPU_ALIASES):
        return GPU
    if has_libtpu or any(TPU in name for name in names):
        return TPU
    return CPU


def _installed_plugins() -> list[str]:
    """The names of the installed JAX plugin modules (entry points and ``jax_plugins.*``)."""
    found = [ep.value for ep in importlib.metadata.entry_points(group="jax_plugins")]
    try:
        spec = importlib.util.find_spec("jax_plugins")
    except (ImportError, ValueError):
        spec = None
    for path in (spec.submodule_search_locations or []) if spec else []:
        try:
            found.extend(entry for entry in os.listdir(path) if not entry.startswith("_"))
        except OSError:
            continue
    return found


def expected() -> str:
    """:func:`guess` for this process, without starting JAX's backends."""
    return guess(
        os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms,
        _installed_plugins(),
        importlib.util.find_spec("libtpu") is not None,
    )


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # a JAX without this private function: assume not started
        return False


#: What :func:`pin_cpu_isa` decided: ``(expected platform, pinned)``.
_pin: tuple[str, bool] | None = None


def pin_cpu_isa() -> None:
    """Add :data:`CPU_ISA_FLAG` to ``XLA_FLAGS`` when JAX is going to run on the CPU, so
    that XLA:CPU rounds the same at every batch shape. It must run before JAX starts its
    backends (``import jelm.sim`` calls it), so the platform is :func:`expected`. Skipped
    on a machine other than x86-64, with ``$JELM_SIM_ALLOW_FMA=1``, and when the flag is
    already set. Warns when JAX had already started on the CPU."""
    global _pin
    flags = os.environ.get("XLA_FLAGS", "")
    if (
        os.environ.get(ALLOW_FMA_ENV) == "1"
        or "xla_cpu_max_isa" in flags
        or _host.machine().lower() not in ("x86_64", "amd64")
    ):
        return
    if _backends_started():
        if choices().pin_cpu_isa:
            warnings.warn(
                "jelm.sim was imported after JAX started its CPU backend, so it could not "
                "disable FMA contraction: results may differ in the last bits between batch "
                f"shapes. Import jelm.sim first or set XLA_FLAGS={CPU_ISA_FLAG}.",
                stacklevel=3,
            )
        return
    platform = expected()
    pinned = choices(platform).pin_cpu_isa
    _pin = (platform, pinned)
    if pinned:
        os.environ["XLA_FLAGS"] = (flags + " " + CPU_ISA_FLAG).strip()


@functools.cache
def check_pin() -> None:
    """Warn once when :func:`pin_cpu_isa` expected an accelerator, left XLA:CPU alone, and
    JAX runs on the CPU after all (an accelerator plugin without a usable device)."""
    if _pin is None or _pin[1] or not choices().pin_cpu_isa:
        return
    warnings.warn(
        f"jelm.sim expected JAX to run on {_pin[0]} and left FMA contraction on in XLA:CPU, "
        "but JAX runs on the CPU: results may differ in the last bits between batch "
        f"shapes. Set JAX_PLATFORMS=cpu (or XLA_FLAGS={CPU_ISA_FLAG}) to pin it.",
        RuntimeWarning,
        stacklevel=3,
    )
