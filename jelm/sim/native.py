"""The native CPU backend of the Sodarace simulator: ``native.cc`` as an XLA FFI call.

The XLA step of :mod:`jelm.sim.physics` is bound by XLA's CPU gathers (about 1 ns per
gathered element, see ``jelm/sim/README.md``). ``native.cc`` computes the same step
(the ELM paper's Sodarace, Lehman et al. 2022, §4) one walker at a time with its joints
in registers and cache, and runs the rows on a pool of threads. It is an XLA custom call,
so it runs inside ``jit``, ``lax.scan`` and the jitted direct loop like any other op.

The library is compiled on first use with the system's C++ compiler (``$CXX`` or
``g++``) against the FFI headers shipped with jaxlib, into
``$JELM_CACHE_DIR`` (default ``~/.cache/jelm``)/``native/``, keyed by a hash of the
source, the flags, the compiler and jaxlib. When no compiler is found or the build fails,
:func:`available` is False, a warning says why once, and the simulator uses the XLA step.

Backends (``backend=`` of :func:`jelm.sim.evaluate`, :func:`jelm.sim.rollout` and
:func:`jelm.sim.simulate`; the default comes from ``$JELM_SIM_BACKEND``):

* ``"auto"`` (default): ``"native"`` when JAX runs on the CPU and the library is
  available, else ``"xla"``;
* ``"native"``: this backend (an error if it is not available);
* ``"xla"``: the pure-JAX step, which every accelerator uses.

The two agree to float32 rounding; the sums run in a different order, so chaotic walkers
drift apart over long horizons as they would between two float orders of one solver
(``tests/test_native.py`` bounds it, and checks both against the NumPy oracle).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # imported at run time by physics, which imports this module lazily
    from jelm.sim.physics import PhysicsParams, SimState, SurfaceSpec
    from jelm.sim.terrain import Terrain
    from jelm.sim.walker import WalkerBatch

BACKENDS = ("auto", "native", "xla")
TARGET = "jelm_sodarace_simulate"
SOURCE = Path(__file__).with_name("native.cc")
FLAGS = (
    "-O3",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-pthread",
    "-fno-math-errno",
    # Both only let the compiler if-convert the per-joint loops into vector code: no
    # float traps are enabled, and the joint arrays are private to one thread.
    "-fno-trapping-math",
    "-fallow-store-data-races",
    "-ffp-contract=off",  # no FMA contraction, as jelm.sim pins for XLA
)


def cpu_flags() -> tuple[str, ...]:
    """Extra flags for this machine's CPU: ``-mavx2`` where /proc/cpuinfo lists AVX2, so
    that the lane kernel's eight-wide vectors are single instructions (the library is
    built for, and cached under a key that includes, the flags of the machine using it)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return ("-mavx2",) if "avx2" in line.split() else ()
    except OSError:
        pass
    return ()


#: A build that takes longer than this is abandoned (the XLA step is used instead).
BUILD_TIMEOUT_S = 300


class NativeUnavailable(RuntimeError):
    """The native backend was asked for but could not be built or loaded."""


def cache_dir() -> Path:
    """Where built libraries go: ``$JELM_CACHE_DIR/native`` (default ``~/.cache/jelm``)."""
    root = os.environ.get("JELM_CACHE_DIR") or os.path.join("~", ".cache", "jelm")
    return Path(root).expanduser() / "native"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def _library_path(compiler: str) -> Path:
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout
    key = hashlib.sha256()
    flags = " ".join((*FLAGS, *cpu_flags()))
    for part in (SOURCE.read_bytes(), flags.encode(), version.encode()):
        key.update(part)
    key.update(jax.ffi.include_dir().encode())
    key.update(getattr(jax, "__version__", "").encode())
    return cache_dir() / f"sodarace-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile ``native.cc`` unless the cache holds it; the library's path.

    Raises :class:`NativeUnavailable` with the compiler's message when it fails."""
    compiler = _compiler()
    if compiler is None:
        raise NativeUnavailable(
            f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH; install g++ or set CXX"
        )
    target = _library_path(compiler)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, *FLAGS, *cpu_flags(), f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        os.unlink(tmp)
        raise NativeUnavailable(
            f"building {SOURCE.name} took more than {BUILD_TIMEOUT_S} s"
        ) from None
    if done.returncode != 0:
        os.unlink(tmp)
        raise NativeUnavailable(f"building {SOURCE.name} failed:\n{done.stderr[-2000:]}")
    os.replace(tmp, target)  # atomic: concurrent builders never see a partial file
    return target


@functools.cache
def _load() -> ctypes.CDLL | str:
    """Build, load and register the FFI target once; the library, or why it failed. A
    cached library that does not load (a damaged file) is deleted and built again once."""
    try:
        path = build()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            warnings.warn(
                f"jelm.sim: rebuilding the damaged native library {path} ({exc})",
                RuntimeWarning,
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
            lib = ctypes.CDLL(str(build()))
        jax.ffi.register_ffi_target(
            TARGET, jax.ffi.pycapsule(lib.JelmSodaraceSimulate), platform="cpu"
        )
        lib.jelm_lane_groups.restype = ctypes.c_int64  # lane groups run so far (tests)
    except (NativeUnavailable, OSError, AttributeError) as exc:
        return str(exc)
    return lib


def available() -> bool:
    """True when the native library is built and registered (builds it on first call)."""
    return not isinstance(_load(), str)


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    loaded = _load()
    return loaded if isinstance(loaded, str) else None


@functools.cache
def _warn_fallback(reason: str) -> None:
    warnings.warn(
        f"jelm.sim: the native CPU backend is unavailable, using the slower XLA step "
        f"({reason.splitlines()[0]})",
        RuntimeWarning,
        stacklevel=4,
    )


def resolve(backend: str | None = None) -> str:
    """``"native"`` or ``"xla"`` for a backend name (None: ``$JELM_SIM_BACKEND`` or auto)."""
    name = backend or os.environ.get("JELM_SIM_BACKEND") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"unknown simulator backend {name!r}; choose one of {BACKENDS}")
    if name == "xla":
        return "xla"
    if name == "native":
        if jax.default_backend() != "cpu":
            raise NativeUnavailable(
                f"the native backend runs on the CPU, and JAX's default backend is "
                f"{jax.default_backend()}: use backend='xla' or 'auto'"
            )
        if not available():
            raise NativeUnavailable(f"native backend unavailable: {unavailable_reason()}")
        return "native"
    if jax.default_backend() != "cpu":
        return "xla"
    if available():
        return "native"
    _warn_fallback(unavailable_reason() or "unknown")
    return "xla"


def link_tables(batch: WalkerBatch, params: PhysicsParams) -> tuple[jax.Array, ...]:
    """Edge-major coefficients ``(B, L)``: link mask, rest length, muscle flag, relative
    amplitude, cos and sin of the phase angle, bone weight (``relaxation`` / the larger
    bone count of the link's two ends, as :func:`jelm.sim.physics.topology`)."""
    f32 = jnp.float32
    mask = batch.link_mask
    is_muscle = batch.muscle & mask
    bone = (mask & ~batch.muscle).astype(f32)
    angle = 2.0 * jnp.pi * batch.phase
    n_joints = batch.joints.shape[-2]

    def bone_counts(i: jax.Array, j: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.zeros(n_joints, f32).at[i].add(b).at[j].add(b)

    counts = jax.vmap(bone_counts)(batch.link_i, batch.link_j, bone)
    pair = jnp.maximum(
        jnp.take_along_axis(counts, batch.link_i, axis=-1),
        jnp.take_along_axis(counts, batch.link_j, axis=-1),
    )
    return (
        mask.astype(f32),
        batch.rest_lengths.astype(f32),
        is_muscle.astype(f32),
        jnp.where(is_muscle, params.amplitude_scale * batch.amplitude, 0.0).astype(f32),
        jnp.cos(angle).astype(f32),
        jnp.sin(angle).astype(f32),
        (bone * params.relaxation / jnp.maximum(pair, 1.0)).astype(f32),
    )


def terrain_tables(terrain: Terrain) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(T, 4)`` x0, dx, left wall, right wall and ``(T, K)`` ground and ceiling, with
    ``T`` 1 for one terrain or the batch size for a per-row stack."""
    scalars = jnp.stack(
        [terrain.x0, terrain.dx, terrain.left_wall, terrain.right_wall], axis=-1
    ).astype(jnp.float32)
    k = terrain.ground.shape[-1]
    return (
        scalars.reshape(-1, 4),
        terrain.ground.astype(jnp.float32).reshape(-1, k),
        terrain.ceiling.astype(jnp.float32).reshape(-1, k),
    )


def simulate(
    batch: WalkerBatch,
    terrain: Terrain,
    state: SimState,
    steps: int,
    params: PhysicsParams,
    surfaces: SurfaceSpec,
) -> SimState:
    """:func:`jelm.sim.physics.simulate` on the native backend (traceable; call
    :func:`resolve` first so that the library is registered). ``surfaces`` skips the
    lookups of a flat ground or a missing ceiling, as in the XLA step."""
    from jelm.sim.physics import SimState

    f32 = jnp.float32
    pos = state.pos.astype(f32)
    vel = state.vel.astype(f32)
    physics = jnp.stack(
        [
            jnp.asarray(v, f32)
            for v in (
                params.dt,
                params.gravity,
                params.damping,
                params.friction,
                params.muscle_stiffness,
                params.muscle_damping,
                params.phase_speed,
                params.max_depth,
            )
        ]
    )
    link_mask, *coefficients = link_tables(batch, params)
    call = jax.ffi.ffi_call(
        TARGET,
        (jax.ShapeDtypeStruct(pos.shape, f32), jax.ShapeDtypeStruct(vel.shape, f32)),
        vmap_method="sequential",
    )
    new_pos, new_vel = call(
        pos,
        vel,
        state.step.astype(jnp.int32),
        batch.joint_mask.astype(f32),
        link_mask,
        batch.link_i.astype(jnp.int32),
        batch.link_j.astype(jnp.int32),
        *coefficients,
        *terrain_tables(terrain),
        physics,
        steps=np.int64(steps),
        substeps=np.int64(params.substeps),
        iterations=np.int64(params.iterations),
        flat_ground=bool(surfaces.flat_ground),
        ceiling=bool(surfaces.ceiling),
    )
    return SimState(pos=new_pos, vel=new_vel, step=state.step + steps)
