"""jelm.lm.bench: the JAX-vs-torch sampling benchmark, end to end on a tiny random model.

A real (tiny) jelm model directory, real ELM diff prompts from the seeds and the corpus,
real jelm.generate and real transformers generate through the save_hf export: only the
sizes are small (batches 1 and 2, 4 new tokens) so the whole run takes seconds.
"""

from __future__ import annotations

import json

import jax
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.lm import bench
from jelm.lm.checkpoint import save_model
from jelm.lm.model import ModelConfig, init_params
from jelm.lm.tokenizer import Tokenizer

ENTRY_FIELDS = {
    "children",
    "batch",
    "tokens_per_s",
    "diffs_per_s",
    "first_call_s",
    "run_s",
    "mean_new_tokens",
    "stop_rate",
}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A jelm model directory: BPE trained on the seeds, a 1-layer d=32 random GPT-2."""
    tok = Tokenizer.train([seed_source(n) for n in SEED_NAMES] * 3, vocab_size=1024)
    cfg = ModelConfig(vocab_size=tok.vocab_size, n_ctx=2048, d_model=32, n_layer=1, n_head=2)
    d = tmp_path_factory.mktemp("tiny")
    save_model(d, init_params(cfg, jax.random.key(0)), cfg, tok)
    return d, cfg


@pytest.mark.slow
def test_bench_main_prints_one_json_line(tiny_model_dir, capsys):
    d, cfg = tiny_model_dir
    argv = ["--model", str(d), "--batches", "1", "2", "--new-tokens", "4"]
    res = bench.main([*argv, "--corpus-parents", "2"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n")
    assert json.loads(out) == res
    assert set(res) == {
        "device",
        "machine",
        "speedup",
        "model",
        "prompt_tokens_mean",
        "sampling",
        "jax",
        "torch",
        "peak_rss_mb",
    }
    assert res["device"].startswith("cpu")
    m = res["model"]
    assert (m["d_model"], m["n_layer"], m["n_ctx"]) == (32, 1, 2048)
    assert m["params"] > 0 and m["vocab_size"] == cfg.vocab_size
    # 7 seeds + 2 corpus parents, 3 messages each: real ELM prompts are hundreds of tokens.
    assert res["sampling"]["prompts"] == (len(SEED_NAMES) + 2) * 3
    assert res["prompt_tokens_mean"] > 200
    for side in ("jax", "torch"):
        rows = res[side]
        assert [(r["children"], r["batch"]) for r in rows] == [(1, 1), (1, 2), (4, 1), (4, 2)]
        for r in rows:
            want = ENTRY_FIELDS | (
                {"threads"} if side == "torch" else {"copy", "roofline", "tokens_per_step"}
            )
            assert set(r) == want, (side, r)
            if side == "jax":  # a decode step emits at least one token, at most 1 + 4 guesses
                assert 1 <= r["tokens_per_step"] <= 5, r
            for key in ("tokens_per_s", "diffs_per_s", "first_call_s", "run_s"):
                assert r[key] > 0, (side, key, r)
            assert 0 < r["mean_new_tokens"] <= 4
            assert 0 <= r["stop_rate"] <= 1
            # tokens/s is the counted tokens over the timed call, not the cap.
            tokens = r["mean_new_tokens"] * r["batch"]
            # (run_s is rounded to the millisecond: allow that much on tiny runs)
            assert tokens / r["tokens_per_s"] == pytest.approx(r["run_s"], rel=0.1, abs=5e-4)
    assert res["torch"][0]["threads"] == 2
    assert res["peak_rss_mb"] > 100
    assert res["machine"]["matmul_gflops"] > 0 and res["machine"]["memory_gbps"] > 0
    assert set(res["speedup"]) == {"children1_b1", "children1_b2", "children4_b1", "children4_b2"}
    # Four children of one parent share its prefix: fewer prefill FLOPs than four parents.
    roof = {(r["children"], r["batch"]): r["roofline"] for r in res["jax"]}
    assert roof[(4, 2)]["rows_per_group"] == 2
    assert roof[(4, 2)]["prefill_gflop"] < roof[(1, 2)]["prefill_gflop"]
    for r in roof.values():
        assert r["bound_s"] > 0 and r["achieved"] > 0


@pytest.mark.slow
def test_bench_times_sampling_with_and_without_copying(tiny_model_dir, monkeypatch):
    """``copy="both"`` times each workload unconstrained and with each diff copying the
    parent its prompt shows, and reports their ratio; without torch rows no speedup."""
    import jelm.lm.sampling

    d, _ = tiny_model_dir
    calls = []
    real = jelm.lm.sampling.generate

    def spy(params, config, prompts, key, **kw):
        calls.append((len(prompts), kw.get("copy"), kw.get("copy_vocab") is not None))
        return real(params, config, prompts, key, **kw)

    monkeypatch.setattr(jelm.lm.sampling, "generate", spy)
    res = bench.run(
        str(d), [2], 4, children=[1, 4], corpus_parents=0, backends=["jax"], copy="both"
    )
    rows = [(r["children"], r["batch"], r["copy"]) for r in res["jax"]]
    assert rows == [(1, 2, False), (1, 2, True), (4, 2, False), (4, 2, True)]
    assert set(res["copy_speed"]) == {"children1_b2", "children4_b2"}
    assert all(v > 0 for v in res["copy_speed"].values())
    assert "speedup" not in res and res["sampling"]["copy"] == "both"
    copied = [parents for _, parents, has_vocab in calls if parents is not None and has_vocab]
    assert len(copied) >= 4 and all(len(p) == 2 for p in copied)  # first and warm calls
    assert len(copied) < len(calls)  # and the rows without copying, without parents
    seeds = {seed_source(n) for n in SEED_NAMES}
    assert all(p in seeds for parents in copied for p in parents)  # the prompts' own parents
    # the family workload copies one parent for both of its rows
    assert any(len(set(p)) == 1 for p in copied)
    with pytest.raises(ValueError, match="copy must be"):
        bench.run(str(d), [1], 4, backends=["jax"], copy="yes")


def test_bench_runs_a_codegen_model(tmp_path, monkeypatch):
    """A CodeGen-layout jelm model (rotary, parallel residual, tied head with a bias) is
    exported as a CodeGen checkpoint and transformers runs it as CodeGenForCausalLM."""
    import transformers

    tok = Tokenizer.train([seed_source(n) for n in SEED_NAMES] * 3, vocab_size=1024)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        n_ctx=2048,
        d_model=32,
        n_layer=1,
        n_head=2,
        rotary_dim=8,
        parallel_residual=True,
        tie_embeddings=True,
        lm_head_bias=True,
        qkv_bias=False,
    )
    save_model(tmp_path, init_params(cfg, jax.random.key(0)), cfg, tok)
    loaded = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        loaded.append((type(model).__name__, kwargs.get("local_files_only")))
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    res = bench.run(
        str(tmp_path), [1], 4, children=[1], corpus_parents=0, threads=[1], backends=["torch"]
    )
    assert loaded == [("CodeGenForCausalLM", True)]
    assert res["jax"] == []
    (row,) = res["torch"]
    assert row["batch"] == 1 and row["threads"] == 1
    assert 0 < row["mean_new_tokens"] <= 4 and row["tokens_per_s"] > 0
    assert res["model"]["d_model"] == 32 and res["model"]["vocab_size"] == cfg.vocab_size


def test_bench_prompts_are_elm_diff_prompts():
    prompts = bench.bench_prompts(corpus_parents=0)
    assert len(prompts) == len(SEED_NAMES) * 3
    assert all(p.startswith("<NME> walker.py\n<BEF> ") and p.endswith("\n<DFF> ") for p in prompts)
    assert sum("<MSG> Changed make_walker function.\n" in p for p in prompts) == len(prompts) // 3
    assert bench.bench_prompts(corpus_parents=0) == prompts  # deterministic
    assert bench.bench_prompts(corpus_parents=0, domain="sodarace") == prompts


@pytest.mark.slow
def test_synthetic_benchmark_times_generate_and_a_training_step():
    cfg = ModelConfig(vocab_size=64, n_ctx=64, d_model=16, n_layer=1, n_head=2)
    res = bench.benchmark(cfg, batches=(2,), prompt_len=40, new_tokens=4, train_shape=(2, 16))
    assert res["config"] == cfg.to_dict() and res["params"] > 0
    gen = res["generate_b2"]
    assert gen["new_tokens"] == 2 * 4 and gen["tokens_per_s"] > 0 and gen["s"] >= 0
    train = res["train_b2x16"]
    assert len(train["step_s"]) == 3 and train["tokens_per_s"] > 0
    only = bench.benchmark(cfg, batches=(2,), prompt_len=40, new_tokens=4, parts=("generate",))
    assert "generate_b2" in only and not any(k.startswith("train") for k in only)
