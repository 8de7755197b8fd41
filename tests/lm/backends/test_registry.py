"""jelm.lm.backends: the registry of backend kinds, make_backend, spec_problems and the
``--model`` spec, without sampling anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jelm.lm.backends import (
    BACKEND_KINDS,
    BACKENDS,
    SHIPPED_DIR,
    BackendKind,
    JelmBackend,
    OpenAIBackend,
    make_backend,
    model_spec,
    spec_problems,
)
from jelm.lm.checkpoint import ModelLoadError


@pytest.fixture
def model_dir(backend_model_dir):
    return backend_model_dir


def test_the_kinds_are_registered_lazily_and_importing_is_cheap():
    assert BACKEND_KINDS == BACKENDS.names() == ("jelm", "hf", "openai")
    assert all(isinstance(kind, BackendKind) for _, kind in BACKENDS.items())
    code = (
        "import sys, jelm.lm.backends as b; b.spec_problems({'kind': 'hf', 'path': 'x'}); "
        "print(sorted(m for m in ('jax', 'httpx', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_make_backend(model_dir):
    b = make_backend({"kind": "jelm", "path": str(model_dir), "max_batch": 2})
    assert isinstance(b, JelmBackend) and b.max_batch == 2 and b.name.startswith("jelm:")
    o = make_backend({"kind": "openai", "base_url": "http://127.0.0.1:9", "model": "m"})
    assert isinstance(o, OpenAIBackend) and o.base_url == "http://127.0.0.1:9/v1"
    o.close()
    for spec, words in [
        ({"kind": "nope"}, "kind"),
        ({"path": "x"}, "kind"),
        ({"kind": "openai", "model": "m"}, "base_url"),
        ({"kind": "openai", "base_url": "http://x/v1"}, "model"),
        ({"kind": "jelm"}, "path"),
        ({"kind": "hf", "path": ""}, "path"),
        ({"kind": "jelm", "path": "shipped", "temperature": 1}, "temperature"),
        ({"kind": "jelm", "path": "shipped", "max_batch": 0}, "max_batch"),
        ({"kind": "openai", "base_url": "ftp://x", "model": "m"}, "http"),
        ("jelm", "mapping"),
    ]:
        with pytest.raises(ValueError, match=words):
            make_backend(spec)
    if not (SHIPPED_DIR / "config.json").is_file():
        with pytest.raises(FileNotFoundError, match="shipped"):
            make_backend({"kind": "jelm", "path": "shipped"})
    with pytest.raises(ModelLoadError, match="does not exist"):
        make_backend({"kind": "jelm", "path": str(model_dir / "nothing-here")})


def test_spec_problems_messages(model_dir, tmp_path):
    assert spec_problems({"kind": "nope"}) == [
        "backend kind must be one of ('jelm', 'hf', 'openai'), got 'nope'"
    ]
    assert spec_problems({"kind": ["jelm"]})[0].startswith("backend kind must be one of")
    assert spec_problems({"kind": "jelm", "path": "x", "base_url": "http://x"}) == [
        "unknown option(s) for backend kind 'jelm': base_url (allowed: max_batch, name, path)"
    ]
    assert spec_problems({"kind": "openai", "base_url": "ftp://x"}) == [
        "backend kind 'openai' needs model (got ['base_url'])"
    ]
    # values are checked once the keys are right; files only when asked
    assert spec_problems({"kind": "hf", "path": "x", "max_batch": True}) == [
        "max_batch must be an integer >= 1, got True"
    ]
    missing = str(tmp_path / "none")
    for kind in ("jelm", "hf"):
        assert spec_problems({"kind": kind, "path": missing}) == []
        assert spec_problems({"kind": kind, "path": missing}, files=True) == [
            f"{missing} is not a model directory (no config.json)"
        ]
        assert spec_problems({"kind": kind, "path": str(model_dir)}, files=True) == []
    shipped = spec_problems({"kind": "jelm", "path": "shipped"}, files=True)
    if (SHIPPED_DIR / "config.json").is_file():
        assert shipped == []
    else:
        assert shipped == [f"{SHIPPED_DIR} is not a model directory (no config.json)"]
    assert spec_problems({"kind": "hf", "path": "shipped"}, files=True) == [
        "shipped is not a model directory (no config.json)"
    ]
    openai = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    assert spec_problems(openai, files=True) == []


def test_a_kind_declares_its_keys_and_checks():
    def factory(path: str, size: int = 1) -> str:
        return f"{path}:{size}"

    kind = BackendKind(
        factory,
        required=("path",),
        optional=("size",),
        check=lambda o: [] if o.get("size", 1) > 0 else ["size must be > 0"],
        files=lambda o: [f"{o['path']} is missing"],
    )
    assert kind.keys == ("path", "size")
    assert kind.problems("mine", {"size": 0, "colour": 1}) == [
        "backend kind 'mine' needs path (got ['colour', 'size'])",
        "unknown option(s) for backend kind 'mine': colour (allowed: path, size)",
    ]
    assert kind.problems("mine", {"path": "p", "size": 0}, files=True) == ["size must be > 0"]
    assert kind.problems("mine", {"path": "p"}) == []
    assert kind.problems("mine", {"path": "p"}, files=True) == ["p is missing"]


def test_model_spec():
    assert model_spec("shipped") == {"kind": "jelm", "path": "shipped"}
    assert model_spec("/m/dir", max_batch=4) == {"kind": "jelm", "path": "/m/dir", "max_batch": 4}
    assert model_spec("hf:/models/gpt2") == {"kind": "hf", "path": "/models/gpt2"}
    assert all(spec_problems(model_spec(m)) == [] for m in ("shipped", "x", "hf:x"))
