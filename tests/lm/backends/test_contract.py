"""The contract of every registered backend kind (ELM §3.1: prompts in, completions out).

Each kind of :data:`jelm.lm.backends.BACKENDS` is built by ``make_backend`` from a real
spec: ``jelm`` from a tiny random jelm model directory, ``hf`` from the same weights
written as a Hugging Face checkpoint, ``openai`` from ``jelm serve`` on localhost serving
that model. Every kind must complete a batch in order, answer a bad prompt with an error
completion, cut at stop strings, replay seeded sampling, and have its spec checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import pytest

from jelm.lm.backends import BACKENDS, JelmBackend, make_backend, spec_problems
from jelm.lm.checkpoint import save_model
from jelm.lm.model import ModelConfig, init_params
from jelm.lm.tokenizer import Tokenizer

TEXTS = [
    "<NME> walker.py\n<BEF> def make_walker():\n    wc = walker_creator()\n",
    "<MSG> Changed make_walker function.\n<DFF> --- walker.py\n+++ walker.py\n",
    "    j0 = wc.add_joint(0, 0)\n    wc.add_muscle(j0, j1, 3.0, 0.5)\n",
    "the quick brown fox jumps over the lazy dog " * 3,
]
PROMPTS = ["def make_walker", "the quick brown", "wc.add_joint(", "<DFF> --- walker"]
GREEDY = dict(max_new_tokens=8, temperature=0.0, top_p=1.0)
#: A prompt no backend can send: a lone surrogate cannot be encoded as UTF-8.
BAD_PROMPT = "def \ud800"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Any]:
    """A tiny random GPT-2 (weights scaled up, so greedy continuations depend on the
    prompt) as a jelm model directory and as a Hugging Face checkpoint."""
    from jelm.lm.hf import save_hf

    tok = Tokenizer.train(TEXTS, vocab_size=300)
    config = ModelConfig(vocab_size=tok.vocab_size, n_ctx=64, d_model=32, n_layer=2, n_head=2)
    params = jax.tree_util.tree_map(lambda a: a * 8, init_params(config, jax.random.key(0)))
    root = tmp_path_factory.mktemp("contract")
    save_model(root / "jelm", params, config, tok)
    save_hf(root / "hf", params, config, tok)
    return {"jelm": root / "jelm", "hf": root / "hf"}


@pytest.fixture(scope="module")
def server(model_dirs):
    from jelm.lm.serve import Server

    with Server(JelmBackend.from_dir(model_dirs["jelm"]), port=0, model_id="tiny") as s:
        yield s


#: A real spec of each kind, from the fixtures it needs.
SPECS: dict[str, Callable[[pytest.FixtureRequest], dict[str, Any]]] = {
    "jelm": lambda r: {"kind": "jelm", "path": str(r.getfixturevalue("model_dirs")["jelm"])},
    "hf": lambda r: {"kind": "hf", "path": str(r.getfixturevalue("model_dirs")["hf"])},
    "openai": lambda r: {
        "kind": "openai",
        "base_url": f"{r.getfixturevalue('server').url}/v1",
        "model": "tiny",
        "max_retries": 0,
        "timeout_s": 60,
    },
}


def test_every_registered_kind_has_a_contract_case():
    assert set(SPECS) == set(BACKENDS.names())


@pytest.fixture(scope="module", params=BACKENDS.names())
def spec(request) -> dict[str, Any]:
    return SPECS[request.param](request)


@pytest.fixture(scope="module")
def backend(spec):
    b = make_backend(spec)
    yield b
    if hasattr(b, "close"):
        b.close()


@pytest.fixture(scope="module")
def singles(backend) -> list[Any]:
    """Each prompt's greedy completion, asked alone."""
    return [backend.complete([p], **GREEDY)[0] for p in PROMPTS]


def test_spec_is_checked(spec):
    assert spec_problems(spec, files=True) == []
    kind = spec["kind"]
    bad = {"kind": kind, "no_such_option": 1}
    problems = spec_problems(bad)
    required = BACKENDS.get(kind).required
    assert required and len(problems) == 2, problems
    assert all(key in problems[0] for key in required) and "no_such_option" in problems[1]
    with pytest.raises(ValueError, match=f"backend kind '{kind}' needs"):
        make_backend(bad)


def test_completes_a_batch_in_order(backend, singles):
    batch = backend.complete(PROMPTS, **GREEDY)
    assert all(c.ok and c.finish_reason in ("stop", "length") for c in batch), batch
    assert [c.text for c in batch] == [c.text for c in singles]
    assert len({c.text for c in batch}) > 1  # the order is visible in the answers
    assert all(0 < c.tokens <= GREEDY["max_new_tokens"] for c in batch)


def test_a_bad_prompt_is_an_error_completion(backend, singles):
    out = backend.complete([PROMPTS[0], BAD_PROMPT, *PROMPTS[1:]], **GREEDY)
    assert len(out) == len(PROMPTS) + 1
    bad = out[1]
    assert not bad.ok and bad.finish_reason == "error" and bad.text == "" and bad.error
    assert [c.text for c in out[:1] + out[2:]] == [c.text for c in singles]


def test_stop_strings_cut(backend, singles):
    free = singles[1]
    assert len(free.text) >= 2, free
    piece = free.text[len(free.text) // 2 :][:2]
    (cut,) = backend.complete([PROMPTS[1]], **GREEDY, stop=[piece])
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(piece)]


def test_seeded_sampling_replays(backend):
    kw = dict(max_new_tokens=8, temperature=1.0, top_p=0.95)
    a = backend.complete(PROMPTS, **kw, seed=3)
    assert all(c.ok for c in a)
    assert [c.text for c in backend.complete(PROMPTS, **kw, seed=3)] == [c.text for c in a]
    assert [c.text for c in backend.complete(PROMPTS, **kw, seed=4)] != [c.text for c in a]
