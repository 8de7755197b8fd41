"""jelm.programs.sandbox.wire, and the package's shape: what crosses the process
boundaries, and what the worker side may import."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from jelm.programs.sandbox import SandboxLimits
from jelm.programs.sandbox import wire as W
from tests.programs.sandbox.toy import TOY

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_parent_messages_round_trip(pipe) -> None:
    r, w = pipe
    cfg = SandboxLimits().worker_config(TOY)
    W.write_all(w, W.frame({"config": pickle.dumps(cfg), "sys_path": ["/x"]}))
    W.write_all(w, W.frame(("jobs", [(0, "src"), (1, "src2")])))
    W.write_all(w, W.frame(("exit",)))
    os.close(w)
    init = W.read_message(r)
    assert pickle.loads(init["config"]) == cfg and init["sys_path"] == ["/x"]
    assert W.read_message(r) == ("jobs", [(0, "src"), (1, "src2")])
    assert W.read_message(r) == ("exit",)
    assert W.read_message(r) is None


def test_jobs_controls_and_results(pipe) -> None:
    r, w = pipe
    W.write_all(w, W.job_frame(W.JOB_RECORD, 7, b"body"))
    kind, job_id, size = W.ZJOB.unpack(W.read_exact(r, W.ZJOB.size))
    assert (kind, job_id, size) == (W.JOB_RECORD, 7, 4) and W.read_exact(r, size) == b"body"
    W.send_control(w, {"kind": "hello", "layers": {}})
    kind, size = W.OUT.unpack(W.read_exact(r, W.OUT.size))
    assert kind == W.KIND_CONTROL and json.loads(W.read_exact(r, size))["kind"] == "hello"
    assert W.read_timeout(r, 1, 0.05) is None  # nothing more within the time
    fields = (5, 0.25, 0, 1, W.FORKED, -1, 9, 0.5)
    assert W.RES.unpack(W.RES.pack(*fields)) == fields
    os.close(w)
    assert W.read_exact(r, 1) is None


def test_records_and_statuses() -> None:
    rec = W.record("ok", value=[1.0])
    assert rec == {"status": "ok", "error": "", "detail": "", "value": [1.0]}
    assert W.INVALID in W.CHILD_STATUSES
    assert not {"timeout", "crashed", "internal_error"} & set(W.CHILD_STATUSES)


def test_worker_side_imports_only_the_standard_library() -> None:
    """``python -I -S`` importing the worker entry loads no jax, no numpy, and none of the
    parent's side of the package."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from jelm.programs.sandbox import worker\n"
        "print(sorted(m for m in sys.modules if m.startswith(('jelm', 'jax', 'numpy'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(eval(out.stdout))
    side = {f"jelm.programs.sandbox.{m}" for m in ("guard", "libc", "namespaces", "runner")}
    side |= {f"jelm.programs.sandbox.{m}" for m in ("seccomp", "wire", "worker")}
    assert loaded == {"jelm", "jelm.programs", "jelm.programs.sandbox", *side}


def test_nothing_under_programs_imports_a_domain() -> None:
    """The sandbox knows a domain only through its ProgramSpec (the bench picks one from
    the registry by name)."""
    sources = sorted((REPO / "jelm" / "programs").rglob("*.py"))
    assert len(sources) > 10
    for path in sources:
        assert "jelm.domains.sodarace" not in path.read_text(), path
