"""The worked examples of ARCHITECTURE.md run as written: a new domain, a new mutation
operator and a new QD algorithm, each a real ELM run in a fresh directory."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

import jelm

DOC = Path(jelm.__file__).resolve().parents[1] / "ARCHITECTURE.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```python\n(.*?)```", re.S)


def _examples() -> dict[str, str]:
    return dict(EXAMPLE.findall(DOC.read_text(encoding="utf-8")))


def test_the_document_holds_the_three_examples():
    assert set(_examples()) == {"domain", "operator", "qd"}


@pytest.mark.parametrize("name", ["domain", "operator", "qd"])
def test_example_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each example is written to a module of its own and imported (as a user would put
    it in a package): its own asserts check the run; the run directory is checked here."""
    monkeypatch.chdir(tmp_path)
    source = tmp_path / f"jelm_example_{name}.py"
    source.write_text(_examples()[name], encoding="utf-8")
    spec = importlib.util.spec_from_file_location(source.stem, source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, source.stem, module)
    try:
        spec.loader.exec_module(module)
    finally:
        from jelm.domains import DOMAINS
        from jelm.mutation import OPERATORS

        DOMAINS._entries.pop("spread", None)  # leave the registries as they were
        OPERATORS._entries.pop("nudge", None)
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "ledger.sqlite").is_file()
    assert sorted(p.name for p in (runs[0] / "checkpoints").iterdir())
