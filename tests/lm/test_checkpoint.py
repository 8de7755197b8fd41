"""jelm.lm.checkpoint: jelm model directories saved and loaded, every problem named, and
the shipped model (written before) still loads."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jelm.lm import checkpoint as C
from jelm.lm import model as M
from tests.lm.tiny import CODEGEN, GPT2


def _tokenizer():
    from jelm.lm.tokenizer import Tokenizer

    texts = ["def make_walker():\n    wc = walker_creator()\n    return wc.get_walker()\n"] * 20
    return Tokenizer.train(texts, vocab_size=300)


def test_save_load_round_trip(tmp_path):
    tok = _tokenizer()
    cfg = M.ModelConfig(**{**CODEGEN.to_dict(), "vocab_size": tok.vocab_size})
    params = M.init_params(cfg, jax.random.key(0))
    C.save_model(tmp_path / "m", params, cfg, tok)
    assert {p.name for p in (tmp_path / "m").iterdir()} >= {
        "config.json",
        "tokenizer.json",
        "params",
    }
    p2, cfg2, tok2 = C.load_model(tmp_path / "m")
    assert cfg2 == cfg
    assert jax.tree_util.tree_structure(p2) == jax.tree_util.tree_structure(params)
    for x, y in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(p2), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    text = "def make_walker():"
    assert tok2.encode(text) == tok.encode(text)
    # Saving again over the same directory replaces the params.
    params3 = M.init_params(cfg, jax.random.key(1))
    C.save_model(tmp_path / "m", params3, cfg, tok)
    p3, _, _ = C.load_model(tmp_path / "m")
    np.testing.assert_array_equal(
        np.asarray(p3["wte"]["embedding"]), np.asarray(params3["wte"]["embedding"])
    )


def test_load_errors_name_the_path_and_problem(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(C.ModelLoadError, match=r"nope.*does not exist"):
        C.load_model(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(C.ModelLoadError, match=r"config.json is missing"):
        C.load_model(empty)

    tok = _tokenizer()
    cfg = M.ModelConfig(**{**GPT2.to_dict(), "vocab_size": tok.vocab_size})
    params = M.init_params(cfg, jax.random.key(0))
    good = tmp_path / "good"
    C.save_model(good, params, cfg, tok)

    (good / "config.json").write_text("{not json")
    with pytest.raises(C.ModelLoadError, match=r"config.json is not valid JSON"):
        C.load_model(good)
    (good / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 8}))
    with pytest.raises(C.ModelLoadError, match="load_hf"):
        C.load_model(good)
    # Another configuration's shapes: named, not an orbax traceback.
    (good / "config.json").write_text(json.dumps({**cfg.to_dict(), "d_model": 64}))
    with pytest.raises(C.ModelLoadError, match=r"params.*another configuration"):
        C.load_model(good)
    (good / "config.json").write_text(json.dumps(cfg.to_dict()))
    C.load_model(good)  # intact again

    (good / "tokenizer.json").write_text("garbage")
    with pytest.raises(C.ModelLoadError, match=r"tokenizer.json is not a readable tokenizer"):
        C.load_model(good)
    tok.save(good / "tokenizer.json")

    # Damaged checkpoint: every data file truncated.
    for f in (good / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and f.name != "_CHECKPOINT_METADATA":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    with pytest.raises(C.ModelLoadError, match="params"):
        C.load_model(good)
    import shutil

    shutil.rmtree(good / "params")
    with pytest.raises(C.ModelLoadError, match=r"params.*missing"):
        C.load_model(good)


def test_the_shipped_checkpoint_loads():
    """The shipped model, written by an earlier jelm, loads with its config and tokenizer."""
    from jelm.lm.backends import SHIPPED_DIR

    if not (SHIPPED_DIR / "config.json").is_file():
        pytest.skip("the shipped model is not installed")
    config = C.load_config(SHIPPED_DIR)
    params, loaded, tok = C.load_model(SHIPPED_DIR)
    assert loaded == config and config.rotary_dim > 0 and config.parallel_residual
    assert (
        M.param_count(params)
        == json.loads((SHIPPED_DIR / "summary.json").read_text())["parameters"]
    )
    assert tok.vocab_size <= config.vocab_size and tok.decode(tok.encode("<NME>")) == "<NME>"
