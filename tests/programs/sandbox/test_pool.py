"""jelm.programs.sandbox.pool and .classify: the pool runs batches in input order, copes
with hung and dead workers, and turns every report and untrusted record into a Result
(the parent re-validates every value with the spec)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import pytest

from jelm.domains.sodarace import api as walker_api
from jelm.domains.sodarace.domain import PROGRAM
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source, seed_walker
from jelm.programs.sandbox import (
    Result,
    Sandbox,
    SandboxError,
    SandboxLimits,
    Status,
    execute,
    shutdown_default_sandbox,
)
from jelm.programs.sandbox.classify import Classifier, Report
from jelm.programs.sandbox.wire import FORK_FAILED
from tests.programs.sandbox.programs import LOOP, WALKER, body, by_name, limits

# -- the real seed programs -----------------------------------------------------------------


def test_seeds_in_sandbox_match_in_process(sb: Sandbox) -> None:
    """Every seed, under the default limits, gives exactly the walker it gives in-process."""
    with Sandbox(program=PROGRAM, workers=2) as default_sb:
        res = default_sb.execute([seed_source(n) for n in SEED_NAMES] * 2)
    for name, r in zip(SEED_NAMES * 2, res, strict=True):
        assert r.ok and r.status is Status.OK, (name, r)
        assert r.value == seed_walker(name).to_dict(), name
    # and the same through the shared test pool (explicit limits)
    for name, r in zip(SEED_NAMES, sb.execute([seed_source(n) for n in SEED_NAMES]), strict=True):
        assert r.ok and r.value == seed_walker(name).to_dict(), (name, r)


# -- classification -------------------------------------------------------------------------


def test_good_program_returns_validated_walker(sb: Sandbox) -> None:
    (r,) = sb.execute([WALKER])
    assert r.ok and r.status is Status.OK, r
    assert len(r.value["joints"]) == 6 and len(r.value["muscles"]) == 6
    assert r.elapsed_s > 0 and r.error == ""


def test_failures_are_classified_in_input_order(sb: Sandbox) -> None:
    progs = {
        "good": WALKER,
        "syntax": "def make_walker(:\n    pass",
        "exception": "def make_walker():\n    return 1 / 0",
        "bad_str": (
            "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
            "def make_walker():\n    raise E()"
        ),
        "wrong_type": "def make_walker():\n    return {'joints': []}",
        "none": "def make_walker():\n    return None",
        "no_entry": "x = 1",
        "million_joints": body("for i in range(10**6):\n    wc.add_joint(i % 50, i // 50 % 50)")
        .replace("wc = walker_creator()\n", "")
        .replace("def make_walker():\n", "def make_walker():\n    wc = walker_creator()\n"),
        "huge_stdout": "def make_walker():\n    while True:\n        print('x' * 10000)",
        "sys_exit": "def make_walker():\n    raise SystemExit(3)",
        "recursion": "def make_walker():\n    return make_walker()",
        "loop": "def make_walker():\n    while True:\n        pass",
        "good2": WALKER,
    }
    res = by_name(sb, progs)
    assert list(res) == list(progs)
    assert res["good"].ok and res["good2"].ok
    assert res["syntax"].status is Status.SYNTAX_ERROR
    assert res["exception"].status is Status.EXCEPTION
    assert res["exception"].detail == "ZeroDivisionError" and "division" in res["exception"].error
    assert res["bad_str"].status is Status.EXCEPTION and "unprintable" in res["bad_str"].error
    assert res["wrong_type"].status is Status.WRONG_TYPE and res["wrong_type"].detail == "dict"
    assert res["none"].status is Status.WRONG_TYPE
    assert res["no_entry"].status is Status.EXCEPTION
    assert res["million_joints"].status in (PROGRAM.invalid_status, Status.TIMEOUT), res[
        "million_joints"
    ]
    assert res["huge_stdout"].status is Status.OUTPUT_TOO_LARGE
    assert res["sys_exit"].status is Status.EXCEPTION and res["sys_exit"].detail == "SystemExit"
    assert (
        res["recursion"].status is Status.EXCEPTION and res["recursion"].detail == "RecursionError"
    )
    # The wall-clock limit normally fires first; on a loaded machine the CPU limit can.
    assert res["loop"].status is Status.TIMEOUT and res["loop"].detail in ("wall", "cpu")
    for r in res.values():
        assert isinstance(r.error, str) and (r.ok or r.error)


def test_invalid_walker_has_code(sb: Sandbox) -> None:
    src = WALKER.replace("range(6)", "range(100)").replace("% 6", "% 100")
    (r,) = sb.execute([src])
    assert r.status == PROGRAM.invalid_status == "invalid_walker", r
    assert r.detail == "too_many_joints" and r.error.startswith("invalid walker: walker has 100")


def test_memory_bomb(sb: Sandbox) -> None:
    progs = [
        "def make_walker():\n    return bytearray(10**10)",
        "def make_walker():\n    x = []\n    while True:\n        x.append(bytes(5 * 10**7))",
    ]
    for r in sb.execute(progs):
        assert r.status is Status.MEMORY_LIMIT, r


def test_worker_killed_from_outside_is_replaced() -> None:
    # A generous time limit: a busy machine (parallel tests) must not turn the slow
    # programs into timeouts, which would hide what this test is about.
    slow = body("t = 0\nfor i in range(2 * 10**6):\n    t += i")
    with Sandbox(program=PROGRAM, workers=2, limits=limits(timeout_s=30.0)) as sb:

        def killer() -> None:
            time.sleep(0.15)
            w = sb._workers[0]
            os.kill(w.inner_pid or w.proc.pid, signal.SIGKILL)

        t = threading.Thread(target=killer)
        t.start()
        res = sb.execute([slow] * 6)
        t.join()
        assert len(res) == 6
        assert sum(r.ok for r in res) >= 5
        assert {r.status for r in res} <= {Status.OK, Status.INTERNAL_ERROR}
        assert all(r.ok for r in sb.execute([WALKER] * 4))


def test_batch_deadline(sb: Sandbox) -> None:
    loop = LOOP
    with Sandbox(program=PROGRAM, workers=2, limits=limits(timeout_s=10.0)) as s:
        t = time.monotonic()
        res = s.execute([loop] * 6 + [WALKER], deadline_s=0.5)
        assert time.monotonic() - t < 2.0
        assert all(r.status is Status.TIMEOUT for r in res[:6])
        assert all(r.ok for r in s.execute([WALKER] * 3))


def test_non_string_program(sb: Sandbox) -> None:
    res = sb.execute([WALKER, b"bytes", None])  # type: ignore[list-item]
    assert res[0].ok and res[1].status is Status.WRONG_TYPE and res[2].status is Status.WRONG_TYPE


def test_module_level_execute() -> None:
    try:
        res = execute([WALKER, "x ="], program=PROGRAM, limits=limits())
        assert res[0].ok and res[1].status is Status.SYNTAX_ERROR
    finally:
        shutdown_default_sandbox()


def test_result_is_frozen(sb: Sandbox) -> None:
    (r,) = sb.execute([WALKER])
    with pytest.raises(AttributeError, match="ok"):
        r.ok = False  # type: ignore[misc]
    assert str(Status.OK) == "ok"


def test_random_is_deterministic_across_programs(sb: Sandbox) -> None:
    src = "import random\n" + WALKER.replace("3 * math.cos(i)", "3 * math.cos(i) + random.random()")
    res = sb.execute([src] * 6)
    assert all(r.ok for r in res)
    assert len({str(r.value) for r in res}) == 1


def test_closed_sandbox_refuses_work() -> None:
    s = Sandbox(program=PROGRAM, workers=1, limits=limits())
    s.close()
    with pytest.raises(SandboxError, match="sandbox is closed"):
        s.execute([WALKER])


def test_limits_reach_the_workers_as_plain_values() -> None:
    lim = SandboxLimits(timeout_s=2.5, memory_mb=128)
    cfg = lim.worker_config(PROGRAM)
    assert lim.cpu_limit == 3 and SandboxLimits(cpu_s=7).cpu_limit == 7
    assert (cfg.timeout_s, cfg.cpu_s, cfg.memory_bytes) == (2.5, 3, 128 << 20)
    assert cfg.entry == "make_walker" and cfg.encode == PROGRAM.encode
    assert cfg.imports == PROGRAM.imports and dict(cfg.aliases) == dict(PROGRAM.module_aliases)
    assert cfg.importable == (*PROGRAM.imports, *PROGRAM.module_aliases)
    assert cfg.encode_options is PROGRAM.encode_options


# -- the parent's classification of reports and records (no processes) ---------------------


@pytest.fixture
def classify() -> Classifier:
    return Classifier(PROGRAM, SandboxLimits(timeout_s=1.0, max_output_bytes=100))


def _record(**fields: object) -> bytes:
    return json.dumps({"error": "", "detail": "", "value": None, **fields}).encode()


def test_worker_reports_come_first(classify: Classifier) -> None:
    ok = _record(status="ok", value=seed_walker("square").to_dict())
    r = classify(Report(elapsed=1.2, timed_out=1), ok)
    assert (r.status, r.detail, r.elapsed_s) == (Status.TIMEOUT, "wall", 1.2)
    assert r.error == "exceeded the wall-clock limit of 1 s"
    r = classify(Report(how=FORK_FAILED), b"")
    assert (r.status, r.detail) == (Status.INTERNAL_ERROR, "fork_failed")
    r = classify(Report(overflow=1), b"")
    assert (r.status, r.detail, r.error) == (
        Status.OUTPUT_TOO_LARGE,
        "result",
        "result exceeded 100 bytes",
    )
    r = classify(Report(elapsed=0.5), ok)
    assert r.ok and r.value == seed_walker("square").to_dict() and r.elapsed_s == 0.5
    assert classify.stats["executed"] == 4 and classify.stats["fork_failures"] == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"status": "ok", "value": NaN}',
        b'{"status": "ok", "value": [Infinity]}',
        b'{"status": "timeout"}',  # only the worker and the parent can say so
        b'{"status": "invalid_walker"}',  # the domain's word is the parent's to give
        b'{"status": ["ok"]}',
        b'["ok"]',
        b'{"error": "no status"}',
    ],
)
def test_malformed_records_are_crashes(classify: Classifier, payload: bytes) -> None:
    r = classify(Report(), payload)
    assert (r.status, r.detail, r.error) == (
        Status.CRASHED,
        "malformed",
        "the program left a malformed result",
    )


def test_child_statuses_keep_their_values(classify: Classifier) -> None:
    r = classify(Report(), _record(status="exception", error="E: x", detail="E"))
    assert (r.ok, r.status, r.error, r.detail) == (False, Status.EXCEPTION, "E: x", "E")
    r = classify(Report(), _record(status="invalid", error="walker has no joints", detail="c"))
    assert r.status == "invalid_walker" and str(r.status) == PROGRAM.invalid_status
    assert (r.error, r.detail) == ("invalid walker: walker has no joints", "c")
    r = classify(Report(), _record(status="forbidden", error="x" * 5000, detail="d" * 500))
    assert len(r.error) == 2000 and len(r.detail) == 200


@pytest.mark.parametrize(
    ("report", "status", "detail"),
    [
        (Report(signal=signal.SIGSYS), Status.FORBIDDEN, "seccomp_kill"),
        (Report(signal=signal.SIGXCPU), Status.TIMEOUT, "cpu"),
        (Report(signal=signal.SIGKILL, cpu=0.99), Status.TIMEOUT, "cpu"),
        (Report(signal=signal.SIGKILL, cpu=0.1), Status.CRASHED, "SIGKILL"),
        (Report(signal=signal.SIGXFSZ), Status.OUTPUT_TOO_LARGE, "file_size"),
        (Report(signal=signal.SIGSEGV), Status.CRASHED, "SIGSEGV"),
        (Report(signal=200), Status.CRASHED, "signal 200"),
        (Report(exit=71), Status.MEMORY_LIMIT, "MemoryError"),
        (Report(exit=70), Status.CRASHED, "harness"),
        (Report(exit=3), Status.CRASHED, "exit_3"),
        (Report(exit=0), Status.CRASHED, "exit_0"),
    ],
)
def test_deaths_without_a_record(
    classify: Classifier, report: Report, status: Status, detail: str
) -> None:
    r = classify(report, b"")
    assert (r.ok, r.status, r.detail) == (False, status, detail), r
    if report.signal == signal.SIGSEGV:
        assert r.error == "the program died of SIGSEGV (stack overflow?)"


def _mutated_walker_dicts() -> list[object]:
    out: list[object] = []
    for name in SEED_NAMES:
        d = seed_walker(name).to_dict()
        j0, m0 = d["joints"][0], d["muscles"][0]
        variants = [
            {"joints": [*d["joints"], list(j0)], "muscles": d["muscles"]},
            {"joints": [[float("nan"), 1.0], *d["joints"][1:]], "muscles": d["muscles"]},
            {"joints": ["x", *d["joints"][1:]], "muscles": d["muscles"]},
            {"joints": [[1e9, 0.0], *d["joints"][1:]], "muscles": d["muscles"]},
            {"joints": d["joints"], "muscles": [[0, 0, {"type": "muscle"}], *d["muscles"]]},
            {"joints": d["joints"], "muscles": [[0, 999, m0[2]], *d["muscles"][1:]]},
            {"joints": d["joints"], "muscles": [[0, 1, {"type": "bogus"}], *d["muscles"]]},
            {"joints": d["joints"], "muscles": [[0, 1, {"type": "muscle", "amplitude": 50}]]},
            {"joints": d["joints"], "muscles": [[0, 1, {"type": "muscle", "x": 1}]]},
            {"joints": d["joints"], "muscles": [[True, 1, {"type": "muscle"}]]},
            {"joints": d["joints"], "muscles": [[0, 1]]},
            {"joints": d["joints"], "muscles": []},
            {"joints": [], "muscles": d["muscles"]},
            {"joints": d["joints"], "muscles": d["muscles"] * 30},
            {"joints": d["joints"], "muscles": d["muscles"], "extra": 1},
            {"joints": tuple(d["joints"]), "muscles": d["muscles"]},
            {"joints": d["joints"]},
            [d["joints"], d["muscles"]],
            None,
        ]
        out += [d, *variants]
    return out


def test_parent_revalidates_every_value(classify: Classifier) -> None:
    """Whatever a child claims is a walker goes through the spec's validation: the outcome
    is that of ``Walker.from_dict``, with its error code as the detail."""
    n_ok = 0
    for d in _mutated_walker_dicts():
        r = classify.validated(d)
        try:
            want = walker_api.Walker.from_dict(d).to_dict()
        except walker_api.WalkerValidationError as exc:
            assert (r.ok, str(r.status), r.detail) == (False, "invalid_walker", exc.code), d
            assert r.error == f"invalid walker: {exc}" and r.value is None
        except Exception as exc:
            assert (r.ok, str(r.status), r.detail) == (False, "invalid_walker", "malformed"), d
            assert r.error.startswith(f"invalid walker data: {type(exc).__name__}")
        else:
            n_ok += 1
            assert r.ok and r.status is Status.OK and r.value == want, d
    assert n_ok == 2 * len(SEED_NAMES)  # each seed, and each with its joints in a tuple
    # the same through a child's record (JSON: the tuple arrives as a list)
    d = seed_walker("radial").to_dict()
    r = classify(Report(), _record(status="ok", value={**d, "joints": tuple(d["joints"])}))
    assert r.ok and r.value == d


def test_a_spec_without_the_rule_lets_the_value_through() -> None:
    """The parent's verdict is the spec's: a looser validate accepts what Sodarace refuses."""
    loose = dataclasses.replace(PROGRAM, validate=lambda raw: raw)
    r = Classifier(loose, SandboxLimits())(Report(), _record(status="ok", value={"joints": []}))
    assert r.ok and r.value == {"joints": []}


def test_result_holds_the_domain_status_as_a_string() -> None:
    r = Result(False, "invalid_walker", None, "e", "d")
    assert str(r.status) == "invalid_walker" and r.status not in set(Status)
    assert {str(s) for s in Status} == {
        "ok",
        "syntax_error",
        "exception",
        "timeout",
        "memory_limit",
        "forbidden",
        "wrong_type",
        "output_too_large",
        "crashed",
        "internal_error",
    }
