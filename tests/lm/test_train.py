"""jelm.lm.train: the pipeline that builds the shipped diff model (ELM §3.1), end to end on a
tiny budget, and the architecture choice it offers.

The run is real (corpus, BPE tokenizer, Flax model, optax, greedy held-out diffs) but small:
a few dozen corpus examples, a 1-layer model of width 32 and 40 steps, so it takes seconds.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jelm.lm import train as T
from jelm.lm.backends import JelmBackend
from jelm.lm.checkpoint import load_model

TINY = {
    "examples": 48,
    "held_out": 8,
    "vocab_size": 600,
    "d_model": 32,
    "n_layer": 1,
    "n_head": 2,
    "rotary_dim": 8,
    "steps": 40,
    "lr": 3e-3,
    "warmup": 5,
    "eval_every": 20,
    "eval_diffs": 8,
}


def test_model_config_per_arch():
    codegen = T.model_config(T.TrainConfig(arch="codegen", rotary_dim=8, n_head=2, d_model=32), 99)
    assert (codegen.rotary_dim, codegen.parallel_residual, codegen.qkv_bias) == (8, True, False)
    assert codegen.tie_embeddings and codegen.lm_head_bias and codegen.vocab_size == 99
    gpt2 = T.model_config(T.TrainConfig(arch="gpt2", rotary_dim=8), 99)
    assert (gpt2.rotary_dim, gpt2.parallel_residual, gpt2.qkv_bias) == (0, False, True)
    with pytest.raises(ValueError, match="unknown arch 'llama'"):
        T.model_config(T.TrainConfig(arch="llama"), 99)


@pytest.mark.slow
def test_tiny_training_run_learns_and_writes_a_loadable_model(tmp_path):
    out = tmp_path / "run"
    summary = T.train(T.TrainConfig(**TINY), out, progress=False)

    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, TINY["steps"] + 1))
    held = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(held) == 2 and held[-1] < held[0]  # the held-out diff loss falls
    assert np.mean([r["loss"] for r in rows[-5:]]) < np.mean([r["loss"] for r in rows[:5]]) - 1
    assert (out / "loss.png").stat().st_size > 1000
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["steps"] == TINY["steps"] == summary["steps"]
    assert on_disk["config"]["arch"] == "codegen"
    assert 1 <= on_disk["diff_eval_examples"] <= 8 and 0 <= on_disk["diff_apply_rate"] <= 1
    assert summary["tokens"] == rows[-1]["tokens"] > 0

    params, config, tokenizer = load_model(out / "model")
    assert config.rotary_dim == TINY["rotary_dim"] and config.parallel_residual
    n = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
    assert n == summary["parameters"]
    backend = JelmBackend(params, config, tokenizer)
    (completion,) = backend.complete(["<NME> walker.py\n<BEF> "], max_new_tokens=8, seed=0)
    assert completion.ok and completion.tokens > 0


@pytest.mark.slow
def test_cli_trains_the_gpt2_architecture(tmp_path, capsys):
    args = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "steps": 4}.items()]
    assert T.main([*args, "--arch", "gpt2", "--out", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["config"]["arch"] == "gpt2" and summary["steps"] == 4
    _, config, _ = load_model(tmp_path / "model")
    assert config.rotary_dim == 0 and not config.parallel_residual
