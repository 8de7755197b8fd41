"""The ELM loop with language-model operators, end to end (ELM, Lehman et al. 2022, §3.1
and §4): jelm.experiments.run.evolve and ``python -m jelm.experiments.sodarace`` with
``lm_diff``, ``lm_prompt`` and ``lm_crossover`` on real tiny jelm models, directly and
through a real ``jelm serve`` subprocess over HTTP; what reaches the ledger; resume after
kill -9; bad LM configurations.

Two models, both real jelm checkpoints (tests/lm_fixtures.py): a tiny *random* model,
whose diffs never apply and whose programs do not parse, so every child fails in a
classified way; and a *writer* model whose weights are set so that it always writes one
unified diff (``RADIUS = 6.0`` -> ``9.0``), which applies to the radial seed and not to
the square seed or to its own child: children that run, are simulated and enter the
archive, next to ``diff_context_mismatch`` failures.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from jelm.domains.sodarace.domain import PROGRAM
from jelm.domains.sodarace.prompts import COMMIT_MESSAGES
from jelm.experiments.config import from_mapping
from jelm.experiments.run import CONFIG_DIR, evolve, register_schema
from jelm.programs.sandbox import Status
from jelm.qd.ledger import CandidateRecord, Ledger
from tests.lm_fixtures import WRITER_MAX_NEW, WRITTEN_DIFFS, make_tiny_model, make_writer_model

REPO = Path(__file__).resolve().parents[2]

#: A quick run: two seeds in different cells of an 8^3 grid, batch 8, 60 steps.
BASE: dict[str, Any] = {
    "seeds": ["square", "radial"],
    "batch": 8,
    "steps": 60,
    "bucket": [16, 64, 8],
    "qd": {"grid": [8, 8, 8]},
    "generations": 2,
    "checkpoint_every": 2,
    "sandbox": {"workers": 2, "timeout_s": 1.0},
    "progress": False,
    "renders": 0,
}
RANDOM_MAX_NEW = 32  # tokens the random model writes per child
MESSAGES = {m for m, _ in COMMIT_MESSAGES}
#: Ledger statuses of a failed child: an operator failure class (jelm.lm.operators: the
#: diff's DiffError kind, ...), or what became of its program (a sandbox outcome,
#: jelm.programs.sandbox.Status; too_large or evaluation_failed from the loop).
DIFF_FAILURES = {
    f"diff_{kind}" for kind in ("empty", "malformed_header", "no_hunk", "context_mismatch")
} | {"diff_unchanged"}
OPERATOR_FAILURES = DIFF_FAILURES | {"backend_error", "lm_empty"}
SANDBOX_FAILURES = {str(s) for s in Status if s is not Status.OK} | {
    PROGRAM.invalid_status,
    "too_large",
    "evaluation_failed",
}


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "random", n_ctx=128)


@pytest.fixture(scope="module")
def writer_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "writer"
    return make_writer_model(path, WRITTEN_DIFFS, max_new_tokens=WRITER_MAX_NEW)


def _config(mutation: str, backend: dict, max_new: int, **lm: Any):
    lm_section = {"backend": backend, "max_new_tokens": max_new, **lm}
    return from_mapping({**BASE, "mutation": mutation, "lm": lm_section})


def _run(config, path: Path) -> dict[str, Any]:
    _, _, state, metrics = evolve(config, path, log=str)
    fitness = np.asarray(state.repertoire.fitnesses[:, 0])
    ids = np.asarray(state.repertoire.genotypes["id"])
    return {"metrics": metrics, "fitness": fitness, "ids": ids}


def _records(path: Path) -> list[CandidateRecord]:
    with Ledger(path / "ledger.sqlite", readonly=True) as ledger:
        return list(ledger.iter_candidates())


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _outcome(r: CandidateRecord) -> tuple:
    """What a run decided about a candidate (everything but timings)."""
    return (
        r.id,
        r.generation,
        r.parent_ids,
        r.operator,
        r.message,
        r.diff,
        r.program,
        r.status,
        r.error,
        r.fitness,
        r.niche,
        r.accepted,
    )


def _check_children(
    records: list[CandidateRecord], operator: str, generations: int, batch: int
) -> list[CandidateRecord]:
    """Every generation 1..generations holds ``batch`` children of ``operator`` naming
    earlier candidates as parents; every failed child has a failure class and an error.
    Returns the children."""
    by_id = {r.id: r for r in records}
    children = [r for r in records if r.generation >= 1]
    assert [r.generation for r in children] == [
        g for g in range(1, generations + 1) for _ in range(batch)
    ]
    for r in children:
        assert r.operator == operator
        assert all(p in by_id and p < r.id for p in r.parent_ids)
        if r.status == "ok":
            assert r.program is not None and r.error is None and r.fitness is not None
            continue
        assert r.error, r
        assert r.fitness is None and not r.accepted
        assert r.status in OPERATOR_FAILURES | SANDBOX_FAILURES, r.status
        if r.status in OPERATOR_FAILURES:
            assert r.program is None  # the operator gave no program
    return children


# --------------------------------------------------------------------------------------
# 1-2: each LM operator through the loop on the tiny random model
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operator",
    [
        pytest.param("lm_diff", marks=pytest.mark.slow),
        pytest.param("lm_prompt", marks=pytest.mark.slow),
        pytest.param("lm_crossover", marks=pytest.mark.slow),
    ],
)
def test_lm_operator_run_records_every_child(tmp_path: Path, random_model: Path, operator):
    config = _config(operator, {"kind": "jelm", "path": str(random_model)}, RANDOM_MAX_NEW)
    out = _run(config, tmp_path / "run")
    records = _records(tmp_path / "run")
    assert [r.operator for r in records[:2]] == ["seed", "seed"]
    children = _check_children(records, operator, generations=2, batch=8)
    assert [m["generation"] for m in _metrics(tmp_path / "run")] == [0, 1, 2]
    assert out["metrics"]["evaluations"] == 2 + 2 * 8
    statuses = {r.status for r in children}
    if operator == "lm_diff":
        # the paper's three commit messages, and random text is never a diff that applies
        assert {r.message for r in children} <= MESSAGES
        assert statuses <= DIFF_FAILURES, statuses
        assert all(r.diff is not None for r in children)
    else:
        # random bodies under `def make_walker():` reach the sandbox and fail there
        assert statuses <= SANDBOX_FAILURES | {"lm_empty"}, statuses
        assert statuses & SANDBOX_FAILURES
        for r in children:
            assert r.message.startswith("# Create a new walker by")
            if r.program is not None:
                assert "def make_walker():\n" in r.program
    n_parents = 2 if operator == "lm_crossover" else 1
    assert all(len(r.parent_ids) == n_parents for r in children)
    if operator == "lm_crossover":
        # both seeds are elites (different cells), so some prompts mix the two
        assert any(len(set(r.parent_ids)) == 2 for r in children)


@pytest.mark.parametrize("retries", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_lm_diff_children_that_apply_are_simulated_and_archived(
    tmp_path: Path, writer_model: Path, retries: int
):
    """The writer model's diffs apply to the radial seed only: its children run, are
    simulated and fill new cells; on the square seed (and on a child, whose radius line
    changed) the same diffs are ``diff_context_mismatch``. Which radius a child gets is the
    sampler's draw (temperature 0.8). Line-similarity placement is off here (it would
    place the diff on a child whose radius differs: tests/programs/diff/test_similar.py),
    and so is the copy constraint (it would make the diffs copy square). With
    ``lm.retries`` a diff that does not apply is sampled again, and fails the same way
    each time."""
    backend = {"kind": "jelm", "path": str(writer_model)}
    config = _config("lm_diff", backend, WRITER_MAX_NEW, similar=None, copy=False, retries=retries)
    out = _run(config, tmp_path / "run")
    records = _records(tmp_path / "run")
    children = _check_children(records, "lm_diff", generations=2, batch=8)
    by_id = {r.id: r for r in records}
    assert all(r.diff in WRITTEN_DIFFS for r in children)
    assert len({r.diff for r in children}) >= 2  # sampled, not always the same
    ok = [r for r in children if r.status == "ok"]
    failed = [r for r in children if r.status != "ok"]
    assert ok and failed
    for r in ok:
        assert by_id[r.parent_ids[0]].message == "radial"  # the seed's name
        radius = r.diff.splitlines()[-1].split()[2]
        assert f"\nRADIUS = {radius}  #" in r.program
    assert {r.status for r in failed} == {"diff_context_mismatch"}
    for r in failed:
        assert "RADIUS = 6.0" not in by_id[r.parent_ids[0]].program
    # a generation with a failed child made ``retries`` more calls of 8 rows
    for m in _metrics(tmp_path / "run")[1:]:
        n_failed = sum(r.generation == m["generation"] for r in failed)
        assert m["drawn"] == 8 + (8 * retries if n_failed else 0)
    # children's walkers are in the archive, next to the seeds
    elites = {int(i) for i in out["ids"][np.isfinite(out["fitness"])]}
    assert elites & {r.id for r in ok}
    assert out["metrics"]["filled"] >= 3


# --------------------------------------------------------------------------------------
# 3: the OpenAI backend against a real `jelm serve`, and against a dead port
# --------------------------------------------------------------------------------------


def _serve(model: Path) -> tuple[subprocess.Popen, str]:
    """Start `jelm serve` on a free port; returns the process and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jelm.cli", "serve", "--model", str(model), "--port", "0"],
        cwd=REPO,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if "listening on" in line:
            return proc, line.split("listening on ", 1)[1].split()[0]
    proc.kill()
    raise AssertionError(f"jelm serve did not start: {proc.stderr.read()}")


@pytest.mark.slow
def test_openai_backend_through_jelm_serve_equals_the_jelm_backend(
    tmp_path: Path, random_model: Path
):
    """lm_diff sampling through HTTP from `jelm serve` gives the run the jelm backend gives
    on the same model, candidate for candidate. Greedy (temperature 0): at temperature > 0
    the two cannot agree, because OpenAIBackend sends one request per prompt with the
    operator's one seed and the server's micro-batcher gives each prompt the row key of
    wherever it lands in a batch (arrival order), while JelmBackend gives prompt i row i.
    Both sample unconstrained: a server cannot copy parents."""
    greedy = {"temperature": 0.0, "top_p": 1.0, "copy": False}
    local = _config(
        "lm_diff", {"kind": "jelm", "path": str(random_model)}, RANDOM_MAX_NEW, **greedy
    )
    _run(local, tmp_path / "local")
    proc, url = _serve(random_model)
    try:
        backend = {
            "kind": "openai",
            "base_url": f"{url}/v1",
            "model": f"jelm:{random_model.name}",
            "api_key_env": None,
            "timeout_s": 60,
            "max_retries": 0,
        }
        remote = _config("lm_diff", backend, RANDOM_MAX_NEW, **greedy)
        _run(remote, tmp_path / "remote")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    local_rows, remote_rows = _records(tmp_path / "local"), _records(tmp_path / "remote")
    _check_children(remote_rows, "lm_diff", generations=2, batch=8)
    assert not any(r.status == "backend_error" for r in remote_rows)
    assert [_outcome(r) for r in remote_rows] == [_outcome(r) for r in local_rows]


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def _hydra_config(overrides: list[str]):
    """The RunConfig the Hydra CLI would build from ``overrides`` (configs/sodarace.yaml)."""
    register_schema("sodarace")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="sodarace", overrides=overrides)
    return from_mapping(OmegaConf.to_container(cfg, resolve=True))


def test_openai_backend_on_a_dead_port_fails_every_child_cleanly(tmp_path: Path):
    """The OpenAI backend chosen the Hydra way (``lm.backend.kind=openai`` plus its keys;
    Hydra keeps the yaml's jelm ``path: shipped`` next to them), pointing at a port nothing
    listens on: every child is a ``backend_error`` with the connection error, and the run
    completes."""
    config = _hydra_config(
        [
            *_overrides(BASE),
            "mutation=lm_diff",
            f"lm.max_new_tokens={RANDOM_MAX_NEW}",
            "lm.backend.kind=openai",
            f"+lm.backend.base_url=http://127.0.0.1:{_dead_port()}/v1",
            "+lm.backend.model=nobody",
            "+lm.backend.timeout_s=5",
            "+lm.backend.max_retries=1",
            "+lm.backend.backoff_s=0.01",
        ]
    )
    assert "path" not in config.lm.backend
    out = _run(config, tmp_path / "run")
    children = _check_children(_records(tmp_path / "run"), "lm_diff", generations=2, batch=8)
    assert {r.status for r in children} == {"backend_error"}
    assert all("ConnectError" in r.error for r in children)
    assert all(r.message in MESSAGES for r in children)  # drawn before sampling
    assert [m["generation"] for m in _metrics(tmp_path / "run")] == [0, 1, 2]
    assert out["metrics"]["filled"] == 2  # the seeds


# --------------------------------------------------------------------------------------
# 4: kill -9 of the Hydra CLI mid-run, then a rerun in the same directory
# --------------------------------------------------------------------------------------


def _overrides(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Hydra command-line overrides setting every key of ``raw``."""
    out = []
    for key, value in raw.items():
        if isinstance(value, dict):
            out += _overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "jelm.experiments.sodarace", *args]


@pytest.mark.slow
def test_kill_9_of_an_lm_diff_run_then_rerun_ends_identical(tmp_path: Path, writer_model: Path):
    """A Hydra CLI run with lm_diff (the writer model, sampling at temperature 0.8: its
    randomness comes from the operator's per-generation seed) is killed with SIGKILL inside
    a generation, with generations in the ledger that no checkpoint holds; rerunning the
    same command replays them from the ledger, samples the rest, and finishes with the
    archive and ledger of a run never interrupted (as tests/qd/test_loop.py does for gp)."""
    generations = 5
    raw = {
        **BASE,
        "generations": generations,
        "checkpoint_every": 5,  # checkpoints 0 and 5: a resume replays from the ledger
        "mutation": "lm_diff",
        "lm": {
            "backend": {"kind": "jelm", "path": str(writer_model)},
            "max_new_tokens": WRITER_MAX_NEW,
        },
    }
    whole = _run(from_mapping(raw), tmp_path / "whole")
    out = tmp_path / "killed"
    cmd = _cli(*_overrides(raw), f"hydra.run.dir={out}")
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in proc.stdout:
        if line.startswith("gen 2:"):
            break
    time.sleep(0.05)  # land inside a later generation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Ledger(out / "ledger.sqlite", readonly=True) as ledger:
        last = ledger.last_generation()
    assert 2 <= last < generations  # cut short, ahead of the only checkpoint but the seeds'
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["0"]
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "(resuming)" in rerun.stdout
    assert f"resumed: checkpoint 0, replayed ledger generations 1..{last}" in rerun.stdout
    config = from_mapping(json.loads((out / "config.json").read_text()))  # Hydra's
    finished = _run(config, out)  # finished: restores the archive only
    fitness, ids = finished["fitness"], finished["ids"]
    np.testing.assert_array_equal(whole["fitness"], fitness)
    np.testing.assert_array_equal(whole["ids"], ids)
    assert [_outcome(r) for r in _records(out)] == [
        _outcome(r) for r in _records(tmp_path / "whole")
    ]
    assert [m["generation"] for m in _metrics(out)] == list(range(generations + 1))
    assert any(r.status == "ok" for r in _records(out) if r.generation)  # LM children ran


# --------------------------------------------------------------------------------------
# 5: bad LM configurations stop the CLI before any work
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_rejects_bad_lm_configurations_before_work(tmp_path: Path, random_model: Path):
    cases = {
        "kind": (["lm.backend.kind=nope"], "lm.backend: backend kind must be one of"),
        "temperature": (
            [f"lm.backend.path={random_model}", "lm.temperature=-1"],
            "lm.temperature must be in [0, 10], got -1",
        ),
        "path": (
            ["lm.backend.path=/nonexistent"],
            "lm.backend: /nonexistent is not a model directory (no config.json)",
        ),
        "option": (
            [f"lm.backend.path={random_model}", "+lm.backend.base_url=http://x"],
            "lm.backend: unknown option(s) for backend kind 'jelm': base_url",
        ),
    }
    procs = {
        name: subprocess.Popen(
            _cli("mutation=lm_diff", *args, f"hydra.run.dir={tmp_path / name}"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, err[-2000:])
        assert "bad configuration:" in err and cases[name][1] in err, (name, err)
        assert "Traceback" not in err
        assert not (tmp_path / name / "ledger.sqlite").exists()
        assert not (tmp_path / name / "config.json").exists()
