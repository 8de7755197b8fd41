"""Shared pytest setup.

``jelm.sim`` must be imported before anything starts JAX's backend: on import it pins XLA
to no-FMA code so results are bit-identical across batch shapes (see jelm/sim/__init__.py).

Compiled programs are shared through JAX's persistent compilation cache in a directory
made fresh for each test session: the xdist workers (and the Python subprocesses the tests
start) compile the same programs, the LM sampler's prefill and decode for each call shape
most of all, and each program is compiled once per session instead of once per process.
The cache key is a hash of the compiled module, the compile options, the XLA flags and the
jax, jaxlib and backend versions, so a hit is the executable XLA would build again; the
directory starts empty and is removed when the session ends, so nothing carries over
between runs. Counts of traces and of jit cache entries (``f._cache_size()``), which
tests use to catch recompilation, do not change: the cache skips only XLA's compile step.

A worker lives through hundreds of tests, and every program it compiles stays loaded
(JAX's caches keep it) with about five memory mappings of its machine code. Linux allows
a process ``vm.max_map_count`` mappings (65,530 by default); past that, XLA's compiler
and the cache's ``serialize()`` fail to map memory and the worker dies (an abort or a
segmentation fault). After a test that leaves a worker with more than
:data:`_MAX_MAPS` mappings, the worker drops its compiled programs
(``jax.clear_caches()``); later tests compile theirs again.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import jelm.sim  # noqa: F401  (first: pins XLA flags before the JAX backend starts)

# Set by the controlling process for the xdist workers it starts.
_CACHE_DIR_ENV = "JELM_TEST_JAX_CACHE_DIR"
# The directory this process made (and removes at the end).
_own_cache_dir = pytest.StashKey[str]()
# Memory mappings of a worker past which it drops its compiled programs.
_MAX_MAPS = 30_000


def _quick_compiles(config: pytest.Config) -> None:
    """The default pass (``-m 'not slow'``) compiles at XLA optimization level 0.

    Its tests compile far more than they run (hundreds of small programs, each run on a
    few rows), and level 0 compiles quicker. The slow pass keeps XLA's default level so
    that one pass checks the code as users compile it: level 0 changes the rounding of
    some programs (a PPO run's rewards drift apart over its updates), and the slow tests
    run compiled code longer. The sampler's tokens and the simulator's trajectories that
    the default pass pins are the same at both levels. Set before the JAX backend starts
    (the workers and the subprocesses tests start inherit it); a level given in
    ``XLA_FLAGS`` wins.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if config.option.markexpr == "not slow" and "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=0").strip()


def pytest_configure(config: pytest.Config) -> None:
    import jax

    _quick_compiles(config)

    path = os.environ.get(_CACHE_DIR_ENV) if hasattr(config, "workerinput") else None
    if not path:  # the controlling process, or a run without xdist: a fresh directory
        path = tempfile.mkdtemp(prefix="jelm-jax-cache-")
        os.environ[_CACHE_DIR_ENV] = path
        config.stash[_own_cache_dir] = path
    settings = {
        "jax_compilation_cache_dir": path,
        # Cache every program, however quick to compile or small.
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": -1,
    }
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)  # for the subprocesses tests start


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_own_cache_dir, None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


def _mappings() -> int:
    """This process's memory mappings (0 where ``/proc`` does not list them)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _mappings() > _MAX_MAPS:
        import gc

        import jax

        jax.clear_caches()
        gc.collect()
