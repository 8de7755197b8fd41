"""Building and loading the native step: ``native.cc`` compiled into a cached library.

The library is compiled on first use with the system's C++ compiler (``$CXX`` or
``g++``) against the FFI headers shipped with jaxlib, into ``$JELM_CACHE_DIR`` (default
``~/.cache/jelm``)/``native/``, named by a hash of the source, the flags, the compiler and
the JAX version, so later processes load it at once. When no compiler is found or the
build fails, :func:`available` is False and :func:`unavailable_reason` says why.
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

import jax

from jelm.sim.base import BackendUnavailable

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
#: A build that takes longer than this is abandoned (the XLA step is used instead).
BUILD_TIMEOUT_S = 300


class NativeUnavailable(BackendUnavailable):
    """The native backend was asked for but could not be built or loaded."""


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


def cache_dir() -> Path:
    """Where built libraries go: ``$JELM_CACHE_DIR/native`` (default ``~/.cache/jelm``)."""
    root = os.environ.get("JELM_CACHE_DIR") or os.path.join("~", ".cache", "jelm")
    return Path(root).expanduser() / "native"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def library_path(compiler: str) -> Path:
    """The cached library's path: a hash of the source, the flags, the compiler's version,
    the FFI headers' location and the JAX version (the source's location is not part of
    it: the same source gives the same library wherever it lies)."""
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
    target = library_path(compiler)
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


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for symbol in ("JelmSodaraceSimulate", "jelm_lane_groups"):
        if not hasattr(lib, symbol):
            raise AttributeError(f"{path} does not define {symbol}")
    lib.jelm_lane_groups.restype = ctypes.c_int64  # lane groups run so far (tests)
    return lib


@functools.cache
def _load() -> ctypes.CDLL | str:
    """Build and load the library once; the library, or why it failed. A cached library
    that does not load (a damaged file) is deleted and built again once."""
    try:
        path = build()
        try:
            return _open(path)
        except OSError as exc:
            warnings.warn(
                f"jelm.sim: rebuilding the damaged native library {path} ({exc})",
                RuntimeWarning,
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
            return _open(build())
    except (NativeUnavailable, OSError, AttributeError) as exc:
        return str(exc)


def library() -> ctypes.CDLL:
    """The loaded library (built on first call); :class:`NativeUnavailable` if it cannot
    be built or loaded."""
    loaded = _load()
    if isinstance(loaded, str):
        raise NativeUnavailable(f"native backend unavailable: {loaded}")
    return loaded


def available() -> bool:
    """True when the native library is built and loaded (builds it on first call)."""
    return not isinstance(_load(), str)


def unavailable_reason() -> str | None:
    """Why :func:`available` is False (None when it is True)."""
    loaded = _load()
    return loaded if isinstance(loaded, str) else None
