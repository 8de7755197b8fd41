"""The language-model operators on the image domain, through the same loop, with a local
Hugging Face checkpoint and an OpenAI-compatible server (``jelm serve`` on localhost):
prompts in the image domain's words, every child recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import pytest

from jelm.domains import make_domain
from jelm.experiments.config import from_mapping
from jelm.experiments.run import evolve
from jelm.lm.checkpoint import save_model
from jelm.lm.model import ModelConfig, init_params
from jelm.lm.tokenizer import Tokenizer
from jelm.qd.ledger import Ledger


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny random model whose tokenizer knows the image seeds, as a jelm directory and
    as a Hugging Face checkpoint."""
    from jelm.lm.hf import save_hf

    domain = make_domain("image")
    texts = [domain.seed_program(n) for n in domain.seed_names()]
    tok = Tokenizer.train(texts, vocab_size=400)
    config = ModelConfig(vocab_size=tok.vocab_size, n_ctx=1024, d_model=32, n_layer=2, n_head=2)
    params = init_params(config, jax.random.key(0))
    root = tmp_path_factory.mktemp("image-lm")
    save_model(root / "jelm", params, config, tok)
    save_hf(root / "hf", params, config, tok)
    return {"jelm": root / "jelm", "hf": root / "hf"}


@pytest.fixture(scope="module")
def server(checkpoints):
    from jelm.lm.backends import JelmBackend
    from jelm.lm.serve import Server

    with Server(JelmBackend.from_dir(checkpoints["jelm"]), port=0, model_id="tiny") as s:
        yield s


def _backend(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "hf":
        return {"kind": "hf", "path": str(request.getfixturevalue("checkpoints")["hf"])}
    url = request.getfixturevalue("server").url
    return {"kind": "openai", "base_url": f"{url}/v1", "model": "tiny", "max_retries": 0}


@pytest.mark.parametrize(
    ("operator", "kind"),
    [
        pytest.param("lm_diff", "hf", marks=pytest.mark.slow),
        pytest.param("lm_prompt", "openai", marks=pytest.mark.slow),
        pytest.param("lm_crossover", "hf", marks=pytest.mark.slow),
        ("lm_crossover", "openai"),
        pytest.param("lm_diff", "openai", marks=pytest.mark.slow),
        pytest.param("lm_prompt", "hf", marks=pytest.mark.slow),
    ],
)
def test_lm_operators_run_on_images(
    tmp_path: Path, request: pytest.FixtureRequest, operator: str, kind: str
):
    config = from_mapping(
        {
            "mutation": operator,
            "size": 8,
            "batch": 4,
            "generations": 1,
            "renders": 0,
            "lm": {"backend": _backend(kind, request), "max_new_tokens": 16},
        },
        "image",
    )
    evolve(config, tmp_path / "run", log=str)
    with Ledger(tmp_path / "run" / "ledger.sqlite", readonly=True) as ledger:
        records = list(ledger.iter_candidates(generation=1))
        assert ledger.descriptor_names == ("hue", "brightness")
    assert len(records) == 4 and {r.operator for r in records} == {operator}
    for r in records:
        assert r.status != "ok" or r.fitness is not None
        if operator == "lm_diff":
            assert r.message in {m for m, _ in make_domain("image").prompts.commit_messages}
        elif r.program is not None:
            assert "def draw():" in r.program  # the image domain's entry, not make_walker
