"""Fine-tuning a diff model on ledgers: a real run, resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jelm.lm.checkpoint import load_model
from jelm.lm.finetune import FinetuneConfig, FinetuneError, finetune, main
from tests.lm.ledger_fixtures import write_ledger
from tests.lm_fixtures import make_tiny_model


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("start"), n_ctx=512, vocab_size=300)


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory):
    d = tmp_path_factory.mktemp("ledgers")
    return (str(write_ledger(d / "a.sqlite", 12)), str(write_ledger(d / "b.sqlite", 8, 50)))


def config(start_model, ledgers, **kw) -> FinetuneConfig:
    base = dict(
        model=str(start_model),
        ledgers=ledgers,
        select="valid",
        held_out=0.25,
        max_steps=12,
        lr=3e-3,
        warmup=2,
        tokens_per_batch=2048,
        checkpoint_every=4,
        eval_every=6,
        eval_diffs=2,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def params_of(run) -> list[np.ndarray]:
    params, _, _ = load_model(run / "model")
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def test_finetune_learns_the_ledger_diffs_and_writes_a_model(tmp_path, start_model, ledgers):
    cfg = config(start_model, ledgers)
    summary = finetune(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 12
    assert summary["train_examples"] + summary["held_out_examples"] == 40  # 20 seeds x 2
    assert summary["held_out_examples"] > 0
    assert summary["operators"] == {"lm_diff": 20, "gp": 20}
    assert summary["held_out_loss"] < summary["held_out_loss_before"]
    rows = [json.loads(x) for x in (tmp_path / "run/train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(13))
    assert np.mean([r["loss"] for r in rows[-3:]]) < np.mean([r["loss"] for r in rows[1:4]])
    dataset = (tmp_path / "run/dataset.jsonl").read_text().splitlines()
    assert len(dataset) == 40
    assert (
        json.loads((tmp_path / "run/dataset.json").read_text())["sha256"]
        == summary["dataset_sha256"]
    )
    start, _, _ = load_model(start_model)
    tuned = params_of(tmp_path / "run")
    assert any(
        not np.array_equal(a, np.asarray(b))
        for a, b in zip(tuned, jax.tree_util.tree_leaves(start), strict=True)
    )
    # the same directory again: nothing left to train, the same model
    again = finetune(cfg, tmp_path / "run", progress=False)
    assert again["steps"] == 12
    for a, b in zip(tuned, params_of(tmp_path / "run"), strict=True):
        np.testing.assert_array_equal(a, b)


# orbax's reader of the mis-shaped checkpoint leaves an unawaited coroutine behind
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_bad_input_gets_a_clear_error(tmp_path, start_model, ledgers):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(FinetuneError, match="no ledger could be read"):
        finetune(config(start_model, (str(junk),)), tmp_path / "r1", progress=False)
    with pytest.raises(FinetuneError, match="no ledgers given"):
        finetune(config(start_model, ()), tmp_path / "r2", progress=False)
    with pytest.raises(FinetuneError, match="cannot load the starting model"):
        finetune(config(tmp_path / "nowhere", ledgers), tmp_path / "r3", progress=False)
    with pytest.raises(FinetuneError, match="no 'accepted' edits"):
        finetune(
            config(start_model, ledgers, select="accepted", operators=("gp",)),
            tmp_path / "r4",
            progress=False,
        )
    # a run directory holding another configuration is not resumed
    cfg = config(start_model, ledgers, max_steps=4)
    finetune(cfg, tmp_path / "r5", progress=False)
    with pytest.raises(FinetuneError, match="another configuration"):
        finetune(config(start_model, ledgers, max_steps=5), tmp_path / "r5", progress=False)
    # the starting model replaced by one of another shape: its checkpoints do not fit
    other = make_tiny_model(tmp_path / "other", n_ctx=512, d_model=48, vocab_size=300)
    moved = tmp_path / "moved"
    start_model.rename(moved)
    try:
        other.rename(start_model)
        with pytest.raises(FinetuneError, match="cannot resume"):
            finetune(cfg, tmp_path / "r5", progress=False)
    finally:
        if start_model.exists():
            start_model.rename(other)
        moved.rename(start_model)
    assert main(["--out", str(tmp_path / "r6"), "--ledgers", str(junk)]) == 2


def _run(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, "-m", "jelm.lm.finetune", "--no-progress", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_kill_9_resumes_to_the_uninterrupted_model(tmp_path, start_model, ledgers):
    args = [
        "--model", str(start_model), "--ledgers", *ledgers, "--select", "valid",
        "--max-steps", "16", "--lr", "0.003", "--warmup", "2", "--tokens-per-batch", "2048",
        "--checkpoint-every", "2", "--eval-every", "8", "--eval-diffs", "1",
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
    for a, b in zip(params_of(tmp_path / "whole"), params_of(tmp_path / "killed"), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = (tmp_path / "killed/train.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(17))


def test_renamed_epochs_copy_the_parent_under_new_names(start_model, ledgers):
    """With ``rename=1`` every epoch's examples get fresh names, the same in parent and
    child, and their diffs still rebuild the child; the stream is the same run to run."""
    from jelm.lm.checkpoint import load_model
    from jelm.lm.data import encode
    from jelm.lm.finetune import _batch_stream
    from jelm.lm.ledger_data import ledger_edits
    from jelm.programs.diff import apply_diff

    examples = ledger_edits(
        ledgers, file_name="walker.py", messages=[("m", 1.0)], select="valid", held_out=0.0
    ).split("train")
    _, _, tok = load_model(start_model)
    seen: list = []

    def encode_all(xs):
        seen.append(list(xs))
        return encode(xs, tok, 512, "walker.py")

    cfg = config(start_model, ledgers, rename=1.0, tokens_per_batch=1024)
    stream = _batch_stream(
        examples, encode_all, (512,), cfg, tok.pad_id, ("make_walker",), "walker.py"
    )
    first = [next(stream) for _ in range(3)]
    renamed = seen[0]
    assert len(renamed) == len(examples)
    for old, new in zip(examples, renamed, strict=True):
        assert "wc = walker_creator()" in old.parent and "wc = walker_creator()" not in new.parent
        assert "def make_walker():" in new.parent and "walker_creator()" in new.parent
        assert apply_diff(new.parent, new.diff, fuzzy=False).program == new.child
    again = _batch_stream(
        examples, encode_all, (512,), cfg, tok.pad_id, ("make_walker",), "walker.py"
    )
    for (t1, m1), (t2, m2) in zip(first, (next(again) for _ in range(3)), strict=True):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(m1, m2)
