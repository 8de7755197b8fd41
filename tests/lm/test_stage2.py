"""Stage 2 (ELM §6): a model trained on the programs of real ELM runs, its samples run
and placed in a map, resume, and bad input."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jelm.experiments.config import from_mapping
from jelm.experiments.run import evolve
from jelm.lm.checkpoint import load_model
from jelm.lm.ledger_data import dataset_version, read_elites
from jelm.lm.stage2 import (
    Stage2Config,
    Stage2Error,
    _build_dataset,
    _space,
    encode_programs,
    evaluate_model,
    main,
    ood_prefix,
    program_header,
    program_of,
    stage2,
)
from jelm.qd.ledger import Ledger
from jelm.qd.records import CandidateRecord
from tests.lm_fixtures import make_tiny_model, make_writer_model, tokenizer_texts

# orbax's reader of the mis-shaped checkpoint (the first test) leaves unawaited coroutines
# behind, which the garbage collector may meet in any later test of the same process
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]

#: A tiny real ELM run: GP, 60 simulated steps, a 4 x 4 x 4 grid.
TINY_RUN = {
    "mutation": "gp",
    "generations": 3,
    "batch": 8,
    "steps": 60,
    "bucket": [16, 64, 8],
    "qd": {"grid": [4, 4, 4]},
    "renders": 0,
    "progress": False,
    "sandbox": {"workers": 2, "timeout_s": 1.0},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs: one from square (stage 2 keeps it) and one from radial (left out)."""
    base = tmp_path_factory.mktemp("runs")
    for seed in ("square", "radial"):
        evolve(from_mapping({**TINY_RUN, "seeds": [seed]}), base / seed, None, log=lambda _: 0)
    return base / "square", base / "radial"


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("start"), n_ctx=2048, vocab_size=400)


def config(start_model, runs, **kw) -> Stage2Config:
    base = dict(
        model=str(start_model),
        ledgers=tuple(str(r) for r in runs),
        held_out=0.3,
        max_steps=4,
        lr=3e-3,
        warmup=1,
        tokens_per_batch=2048,
        checkpoint_every=2,
        eval_every=4,
        samples=6,
        max_new_tokens=12,
        ood_samples=2,
        ood_lines=3,
        eval_batch=8,
    )
    base.update(kw)
    return Stage2Config(**base)


def admitted(run) -> list[CandidateRecord]:
    with Ledger(run / "ledger.sqlite", readonly=True) as ledger:
        return list(ledger.iter_candidates(accepted=True, status="ok"))


@pytest.mark.slow  # two GP runs, training and 1,024 samples: the end-to-end check
def test_a_run_trains_on_the_elites_and_evaluates_its_samples(tmp_path, start_model, runs):
    square, radial = runs
    out = tmp_path / "run"
    summary = stage2(config(start_model, runs), out, progress=False)
    # the dataset: square's programs within half the best of their niche, radial's none
    elites = read_elites(out / "dataset.jsonl")
    assert summary["dataset_sha256"] == dataset_version(out / "dataset.jsonl")
    assert json.loads((out / "dataset.json").read_text())["sha256"] == summary["dataset_sha256"]
    records = admitted(square)
    best: dict[int, float] = {}
    for r in records:
        best[r.niche] = max(best.get(r.niche, -np.inf), r.fitness)
    wanted = {r.program for r in records if r.fitness >= 0.5 * best[r.niche] or best[r.niche] <= 0}
    assert {p.program for p in elites.programs} == wanted
    assert not {r.program for r in admitted(radial)} & wanted
    assert all(p.source.startswith(str(square)) for p in elites.programs)
    assert elites.run_config["seeds"] == ["square"] and elites.exclude_seeds[0] == "radial"
    assert {p.split for p in elites.programs} == {"train", "held_out"}
    # training: every step logged, held-out loss down from the start
    training = summary["training"]
    assert training["steps"] == 4 and training["held_out_programs"] > 0
    assert training["held_out_loss"] < training["held_out_loss_before"]
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(5))
    # evaluation: every sample run and counted
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    plain = [s for s in samples if s["kind"] == "sample"]
    ood = [s for s in samples if s["kind"] == "ood"]
    assert len(plain) == 6 and len(ood) == 3 * 2
    assert [s["seed"] for s in ood] == ["wheel"] * 2 + ["galloper"] * 2 + ["runner"] * 2
    assert sum(summary["samples"]["statuses"].values()) == 6
    ok = [s for s in plain if s["status"] == "ok"]
    assert summary["samples"]["valid"] == len(ok) / 6
    assert summary["maps"]["samples"]["filled"] == len({s["niche"] for s in ok})
    assert summary["maps"]["dataset"]["filled"] == len({p.niche for p in elites.programs})
    assert set(summary["ood"]) == {"wheel", "galloper", "runner"}
    domain = _space(elites)[0]
    for info in summary["ood"].values():
        assert info["prompt_lines"] == 3 and info["n"] == 2 and info["seed_status"]
    for s in ood:
        assert s["text"].startswith("\n".join(domain.seed_program(s["seed"]).splitlines()[:3]))
    for name in ("config.json", "model/config.json", "loss.png", "samples.png", "summary.json"):
        assert (out / name).is_file()
    # evaluate the saved model again with other evaluation options (the rest read from
    # the run): the same samples, no training
    plain_before = (out / "samples.jsonl").read_text().splitlines()[:6]
    argv = ["--out", str(out), "--evaluate-only", "--ood-seeds", "--no-progress"]
    assert main(argv) == 0
    assert (out / "samples.jsonl").read_text().splitlines() == plain_before
    assert json.loads((out / "summary.json").read_text())["training"]["steps"] == 4
    # a run directory holding another configuration is not resumed
    with pytest.raises(Stage2Error, match="another configuration"):
        stage2(config(start_model, runs, max_steps=5), out, progress=False)
    # the starting model replaced by one of another shape: the checkpoints do not fit it
    other = make_tiny_model(tmp_path / "other", n_ctx=2048, d_model=48, vocab_size=400)
    moved = tmp_path / "moved"
    start_model.rename(moved)
    try:
        other.rename(start_model)
        with pytest.raises(Stage2Error, match="cannot resume"):
            stage2(config(start_model, runs), out, progress=False)
    finally:
        if start_model.exists():
            start_model.rename(other)
        moved.rename(start_model)
    gc.collect()  # orbax's leftover reader goes now rather than in another test


@pytest.mark.slow
def test_a_valid_sample_gets_the_fitness_and_niche_its_run_gave_it(tmp_path, start_model, runs):
    """A model that writes the square seed: every sample is valid, scored and placed as
    the ELM run scored and placed the seed."""
    square, _ = runs
    elites = _build_dataset(config(start_model, runs))
    domain, archive, _ = space = _space(elites)
    program = domain.seed_program("square")
    text = " " + program.rstrip("\n") + "\n"
    from jelm.lm.tokenizer import Tokenizer

    tok = Tokenizer.train([*tokenizer_texts(), text, text], vocab_size=400)
    head = len(tok.encode(program_header("walker.py")))
    length = len(tok.encode(text)) + 1
    writer = make_writer_model(
        tmp_path / "writer", [text], max_new_tokens=length + 2, n_ctx=head + length + 2
    )
    params, model_config, tokenizer = load_model(writer)
    cfg = config(start_model, runs, samples=3, max_new_tokens=10_000, ood_seeds=())
    result = evaluate_model(params, model_config, tokenizer, space, elites, cfg, tmp_path)
    with Ledger(square / "ledger.sqlite", readonly=True) as ledger:
        seed = next(ledger.iter_candidates(generation=0))
    assert result["samples"]["valid"] == 1.0
    assert result["samples"]["fitness"]["max"] == pytest.approx(seed.fitness, rel=1e-6)
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [program.rstrip("\n") + "\n"] * 3
    assert {r["niche"] for r in rows} == {seed.niche}
    assert result["maps"]["samples"]["filled"] == 1
    offset = archive.config.fitness_offset
    assert result["maps"]["samples"]["qd_score"] == pytest.approx(seed.fitness - offset, rel=1e-5)


def test_training_text_and_prompts_line_up_with_the_programs(start_model):
    """A program's tokens follow the header's; an out-of-distribution prompt's tokens are
    the first tokens of its whole program, and a completion is cut where the model went
    on to another section of the diff format."""
    _, _, tok = load_model(start_model)
    from jelm.domains.sodarace.seeds import seed_source

    wheel = seed_source("wheel")
    (encoded,) = encode_programs([wheel], tok, 2048, "walker.py")
    head = tok.encode(program_header("walker.py"))
    assert encoded.tokens[: len(head)].tolist() == head and encoded.mask[: len(head)].sum() == 0
    assert encoded.tokens[-1] == tok.eos_id and encoded.mask[len(head) :].all()
    prefix = ood_prefix(wheel, "make_walker")
    assert prefix.endswith("def make_walker():") and wheel.startswith(prefix)
    prompt = head + tok.encode(" " + prefix)
    assert encoded.tokens[: len(prompt)].tolist() == prompt
    assert ood_prefix(wheel, "make_walker", lines=3) == "\n".join(wheel.splitlines()[:3])
    assert program_of(" x = 1\n<|endoftext|>junk") == "x = 1\n"
    assert program_of(" x = 1\n<MSG> Changed") == "x = 1\n"
    assert encode_programs([wheel], tok, 64, "walker.py") == []  # longer than the context


@pytest.mark.slow
def test_bad_input_gets_a_clear_error(tmp_path, start_model, runs, capsys):
    _, radial = runs
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00garbage" * 64)
    for ledgers, message in [
        ((), "no ledgers given"),
        ((str(empty), str(junk)), "no ledger could be read"),
        ((str(radial),), "excluded seed"),
    ]:
        with pytest.raises(Stage2Error, match=message):
            stage2(config(start_model, ledgers), tmp_path / message.replace(" ", "_"))
    # a run that admitted no valid program: nothing passes the share bar
    failed = tmp_path / "failed.sqlite"
    with (
        Ledger(failed, run_config={"seeds": ["square"]}, descriptors=("height",)) as led,
        led.generation(0) as g,
    ):
        g.add_many([CandidateRecord(operator="seed", program="x", status="syntax_error")])
    with pytest.raises(Stage2Error, match="no valid program admitted"):
        stage2(config(start_model, (str(failed),)), tmp_path / "none")
    with pytest.raises(Stage2Error, match="share must be in"):
        stage2(config(start_model, runs, share=0.0), tmp_path / "share")
    with pytest.raises(Stage2Error, match="ood-seeds"):
        stage2(config(start_model, runs, ood_seeds=("nowhere",)), tmp_path / "seeds")
    with pytest.raises(Stage2Error, match="no trained model"):
        stage2(config(start_model, runs), tmp_path / "untrained", evaluate_only=True)
    with pytest.raises(Stage2Error, match="cannot load the starting model"):
        stage2(config(tmp_path / "nowhere", runs), tmp_path / "nowhere", progress=False)
    # the command line: exit code 2, one line, no traceback
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "cli"), "--ledgers", str(junk), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jelm.lm.stage2: ") and "Traceback" not in err
    assert main(["--out", str(tmp_path / "cli2"), "--evaluate-only"]) == 2
    assert "cannot be read" in capsys.readouterr().err


def _run(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "jelm.lm.stage2", "--no-progress", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_kill_9_resumes_to_the_uninterrupted_model(tmp_path, start_model, runs):
    args = [
        "--model", str(start_model), "--ledgers", *map(str, runs), "--held-out", "0.3",
        "--epochs", "60", "--max-steps", "60", "--lr", "0.003", "--warmup", "1",
        "--tokens-per-batch", "2048", "--checkpoint-every", "2", "--eval-every", "20",
        "--samples", "2", "--max-new-tokens", "8", "--ood-seeds",
    ]  # fmt: skip
    whole = _run([*args, "--out", str(tmp_path / "whole")])
    assert whole.wait(timeout=600) == 0, whole.stderr.read().decode()[-2000:]
    killed = _run([*args, "--out", str(tmp_path / "killed")])
    ckpts = tmp_path / "killed/checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() and int(p.name) >= 4 for p in ckpts.iterdir()):
            break
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed/model").exists()
    resumed = _run([*args, "--out", str(tmp_path / "killed")])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:]
    for a, b in zip(
        jax.tree_util.tree_leaves(load_model(tmp_path / "whole/model")[0]),
        jax.tree_util.tree_leaves(load_model(tmp_path / "killed/model")[0]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = (tmp_path / "killed/train.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(61))
    assert (tmp_path / "killed/samples.jsonl").read_text() == (
        tmp_path / "whole/samples.jsonl"
    ).read_text()
