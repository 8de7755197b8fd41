"""Building, caching and loading the native library (jelm.sim.native.build).

The fallback without a compiler is in ``tests/sim/test_backends.py`` (a backend that
cannot run says why); these cases build the library from scratch, so they are slow.
"""

from __future__ import annotations

import pytest

from jelm.sim import native
from jelm.sim.native import build
from tests.sim.helpers import run_probe


def test_the_library_is_built_and_loaded_here():
    assert native.available(), native.unavailable_reason()
    assert native.unavailable_reason() is None
    assert native.library().jelm_lane_groups() >= 0
    assert build.SOURCE.name == "native.cc" and build.SOURCE.exists()


def test_the_cache_key_is_the_source_and_the_build_not_the_sources_location(tmp_path, monkeypatch):
    """Two cache directories give the same library name; another source text another."""
    compiler = build._compiler()
    assert compiler is not None
    monkeypatch.setenv("JELM_CACHE_DIR", str(tmp_path / "a"))
    a = build.library_path(compiler)
    monkeypatch.setenv("JELM_CACHE_DIR", str(tmp_path / "b"))
    b = build.library_path(compiler)
    assert a.name == b.name and a.parent != b.parent
    copy = tmp_path / "elsewhere" / "native.cc"
    copy.parent.mkdir()
    copy.write_bytes(build.SOURCE.read_bytes())
    monkeypatch.setattr(build, "SOURCE", copy)
    assert build.library_path(compiler).name == b.name
    copy.write_bytes(build.SOURCE.read_bytes() + b"\n// another text\n")
    assert build.library_path(compiler).name != b.name


@pytest.mark.slow
def test_a_failing_build_falls_back_and_an_explicit_request_fails_clearly(tmp_path):
    """A compiler that fails (here: `false`) leaves no library behind; "auto" falls back,
    while asking for "native" raises NativeUnavailable naming the build failure."""
    out = run_probe({"JELM_CACHE_DIR": str(tmp_path), "CXX": "false"})
    assert out["auto"] == "xla" and "failed" in out["reason"]
    assert not list(tmp_path.rglob("*.so"))
    assert out["error"][0] == "NativeUnavailable"
    assert out["error"][1].startswith("native backend unavailable: building native.cc failed")


@pytest.mark.slow
def test_the_library_is_cached_and_a_damaged_one_is_rebuilt(tmp_path):
    """A second process reuses the built library instead of compiling again; a library
    damaged in the cache is rebuilt (with a warning) instead of disabling the backend."""
    env = {"JELM_CACHE_DIR": str(tmp_path)}
    a = run_probe(env)
    libs = list(tmp_path.rglob("sodarace-*.so"))
    assert len(libs) == 1
    stamp = libs[0].stat().st_mtime_ns
    b = run_probe(env)
    assert [p.stat().st_mtime_ns for p in tmp_path.rglob("sodarace-*.so")] == [stamp]
    assert a["auto"] == b["auto"] == "native" and a["fitness"] == b["fitness"]

    libs[0].write_bytes(b"not a shared object")
    c = run_probe(env)
    assert c["auto"] == "native" and c["fitness"] == a["fitness"]
    assert any("rebuilding the damaged native library" in w for w in c["warnings"])
    assert libs[0].read_bytes()[:4] == b"\x7fELF"
