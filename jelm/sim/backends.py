"""The registry of simulator backends and the choice of one by name.

A backend is a traceable step with the signature of :class:`jelm.sim.base.Simulate`
(ELM paper, Lehman et al. 2022, §4: the Sodarace physics) plus where it can run. Two are
registered, in order of preference:

* ``native``: ``native.cc`` as an XLA FFI call (:mod:`jelm.sim.native`), JAX's CPU only
  (:func:`jelm.sim.platforms.native_platforms`);
* ``xla``: the pure-JAX step (:mod:`jelm.sim.xla`), on every device.

:func:`resolve` maps ``None`` / ``"auto"`` (or ``$JELM_SIM_BACKEND``) to the first
registered backend that runs on JAX's default device (or a named platform) and is
available here, and an explicit name to that backend or a
:class:`~jelm.sim.base.BackendUnavailable` that says why it cannot run: on a GPU or TPU,
``auto`` is the XLA step and ``native`` is refused. The drivers resolve once, when they
are traced.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable

from jelm.sim import platforms
from jelm.sim.base import BackendUnavailable, Simulate
from jelm.sim.native import NativeUnavailable, unavailable_reason
from jelm.sim.native import simulate as native_simulate
from jelm.sim.xla import simulate as xla_simulate

#: The environment variable that names the default backend (``auto`` when unset).
ENV = "JELM_SIM_BACKEND"
#: The name that picks the first suitable backend.
AUTO = "auto"


def _always_available() -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Backend:
    """One simulator backend.

    simulate: the traceable step (:class:`jelm.sim.base.Simulate`).
    platforms: the JAX platforms it runs on (``None``: every one).
    unavailable_reason: why it cannot run on this machine, or None (may build it first).
    error: the exception an explicit request for it raises when it cannot run.
    """

    name: str
    simulate: Simulate
    platforms: tuple[str, ...] | None = None
    unavailable_reason: Callable[[], str | None] = _always_available
    error: type[BackendUnavailable] = BackendUnavailable

    def runs_on(self, platform: str) -> bool:
        """Whether it runs on the JAX platform ``platform`` (``"cpu"``, ``"gpu"``, ...)."""
        return self.platforms is None or platforms.canonical(platform) in self.platforms

    def why_not(self, platform: str | None = None) -> str | None:
        """Why it cannot run on ``platform`` (default: JAX's default backend), or None."""
        platform = platform or platforms.current()
        if not self.runs_on(platform):
            runs = ", ".join(self.platforms or ())
            return (
                f"the {self.name} backend runs on {runs} only, and JAX runs on {platform}: "
                f"use another backend, or {AUTO!r} to take the first that runs there"
            )
        return self.unavailable_reason()

    def available(self, platform: str | None = None) -> bool:
        """Whether it can run on ``platform`` (default: JAX's default backend)."""
        return self.why_not(platform) is None


class UnknownBackend(ValueError):
    """A backend name that no entry of :data:`BACKENDS` has."""


#: Backends by name, in order of preference for ``auto``.
BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add ``backend`` to :data:`BACKENDS` (after those registered before it, so it is
    preferred less by ``auto``); a taken name raises ``ValueError``."""
    old = BACKENDS.get(backend.name)
    if old is not None and old != backend:
        raise ValueError(f"simulator backend {backend.name!r} is already registered")
    BACKENDS[backend.name] = backend
    return backend


def names() -> tuple[str, ...]:
    """Every registered backend name, in order of preference."""
    return tuple(BACKENDS)


def get(name: str) -> Backend:
    """The backend registered as ``name`` (:class:`UnknownBackend` lists the names)."""
    try:
        return BACKENDS[name]
    except KeyError:
        known = ", ".join((AUTO, *BACKENDS))
        raise UnknownBackend(f"unknown simulator backend {name!r}; choose one of {known}") from None


@functools.cache
def _warn_fallback(name: str, reason: str, chosen: str) -> None:
    warnings.warn(
        f"jelm.sim: the {name} backend is unavailable, using {chosen} ({reason.splitlines()[0]})",
        RuntimeWarning,
        stacklevel=4,
    )


def resolve(name: str | None = None, platform: str | None = None) -> Backend:
    """The backend for ``name`` on ``platform`` (default: JAX's default backend): an
    explicit name, or for ``None`` / ``"auto"`` (``None`` reads ``$JELM_SIM_BACKEND``
    first) the first registered backend that runs on the platform and is available.
    Skipping one that runs there but is unavailable (the native step without a compiler)
    warns once, saying why.

    Raises :class:`UnknownBackend` for a name not registered, and the backend's
    :class:`~jelm.sim.base.BackendUnavailable` for an explicit name that cannot run here.
    """
    name = name or os.environ.get(ENV) or AUTO
    if platform is None:
        platforms.check_pin()
        platform = platforms.current()
    if name != AUTO:
        backend = get(name)
        reason = backend.why_not(platform)
        if reason is not None:
            raise backend.error(f"{backend.name} backend unavailable: {reason}")
        return backend
    skipped: list[Backend] = []
    for backend in BACKENDS.values():
        if not backend.runs_on(platform):
            continue
        reason = backend.unavailable_reason()
        if reason is None:
            for other in skipped:
                _warn_fallback(other.name, other.unavailable_reason() or "", backend.name)
            return backend
        skipped.append(backend)
    raise BackendUnavailable(f"no simulator backend runs on {platform} here")


register(
    Backend(
        "native",
        native_simulate,
        platforms=platforms.native_platforms(),
        unavailable_reason=unavailable_reason,
        error=NativeUnavailable,
    )
)
register(Backend("xla", xla_simulate))
