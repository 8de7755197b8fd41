"""Stage-3 invention and evaluation: a saved policy's programs for a chosen terrain are run,
scored and ranked through the real sandbox and simulator; the closed-gate baseline is the
stage-2 model; a dataset's best walker is its best program's distance on each terrain; the
``jelm invent`` and ``python -m jelm.rl.evaluate`` commands refuse bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jelm.domains.sodarace.seeds import seed_source
from jelm.lm.checkpoint import load_model
from jelm.lm.stage2 import program_header
from jelm.rl.invent import (
    INVENTIONS,
    as_reference,
    gif_path,
    invent,
    sample_programs,
    terrain_id,
    write_gif,
)
from jelm.rl.policy import load_policy, reference_logp, score
from jelm.rl.stage3 import Setup, train
from tests.lm_fixtures import make_tiny_model
from tests.rl.test_stage3 import FAST, ParityRewarder

STEPS = 40
CFG = dataclasses.replace(FAST, iterations=1, batch=8, lr=3e-2, steps=STEPS, workers=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-iteration stage-3 run of a tiny random model (toy reward)."""
    model = make_tiny_model(tmp_path_factory.mktemp("s2"), n_ctx=128, vocab_size=400)
    params, config, tok = load_model(model)
    out = tmp_path_factory.mktemp("s3") / "run"
    cfg = dataclasses.replace(CFG, model=str(model))
    train(cfg, out, Setup(params, config, tok, ParityRewarder()), progress=False)
    return out


def _square_fitness(terrain: str) -> float:
    from jelm.domains.sodarace.domain import SodaraceDomain
    from jelm.programs.sandbox import Sandbox

    domain = SodaraceDomain(steps=STEPS, terrain=terrain)
    with Sandbox(program=domain.program, workers=1) as sb:
        walker = sb.execute([seed_source("square")])[0].value
    return float(domain.evaluate(domain.pack([walker], 1), None).fitness[0])


@pytest.mark.slow  # the trained run: ~15 s once per module
def test_invent_ranks_scores_and_writes_the_programs(run, tmp_path):
    policy = run / "policy"
    rows = invent(policy, "tunnel", 5, seed=3, out=tmp_path, max_new_tokens=10, steps=STEPS)
    assert len(rows) == 5
    rewards = [r["reward"] for r in rows]
    assert rewards == sorted(rewards, reverse=True)
    for r in rows:
        assert set(r) == {"program", "status", "error", "reward"}
        if r["status"] != "ok":  # a random model writes no walker: the penalty, and why
            assert r["reward"] == -1.0 and r["error"]
    # the programs are the policy's samples for the tunnel (id 1) with that seed
    params, cfg, tok, dist = load_policy(policy)
    drawn = sample_programs(params, cfg, tok, dist, 1, 5, jax.random.key(3), 10)
    assert sorted(r["program"] for r in rows) == sorted(drawn.programs)
    written = [json.loads(line) for line in (tmp_path / INVENTIONS).read_text().splitlines()]
    assert written == rows
    valid = any(r["status"] == "ok" for r in rows)
    assert gif_path(tmp_path, "tunnel").is_file() == valid


@pytest.mark.slow  # the trained run: ~15 s once per module
def test_invent_draws_the_best_valid_walker(run, tmp_path, monkeypatch):
    """With seed walkers in place of the policy's samples: the ranking follows the
    simulator's distances and the GIF is written for the chosen terrain."""
    import jelm.rl.invent as inv

    programs = ["def make_walker(:\n", seed_source("square"), seed_source("radial")]
    drawn = inv.Drawn(programs, np.zeros((3, 1), np.int32), np.ones((3, 1), bool))
    monkeypatch.setattr(inv, "sample_programs", lambda *a, **k: drawn)
    rows = invent(run / "policy", "tunnel", 3, out=tmp_path, steps=STEPS, workers=1)
    by_program = {r["program"]: r for r in rows}
    assert [by_program[p]["status"] for p in programs] == ["syntax_error", "ok", "ok"]
    rewards = [r["reward"] for r in rows]
    assert rewards == sorted(rewards, reverse=True)
    assert rows[-1]["status"] == "syntax_error"  # below every walker: the floor is 0
    square = by_program[programs[1]]["reward"]
    assert square == pytest.approx(max(_square_fitness("tunnel"), 0.0), abs=1e-5)
    assert gif_path(tmp_path, "tunnel").is_file()


@pytest.mark.slow  # the trained run: ~15 s once per module
def test_an_unknown_or_foreign_terrain_is_a_clear_error(run):
    _, _, _, dist = load_policy(run / "policy")
    assert terrain_id(dist, "tunnel") == 1 and terrain_id(dist, " flat") == 0
    with pytest.raises(ValueError, match=r"left_wall.*\['flat', 'tunnel'\]"):
        invent(run / "policy", "left_wall", 2, max_new_tokens=10, steps=STEPS)


def test_the_gif_shows_the_walker_on_the_chosen_terrain(tmp_path):
    from PIL import Image

    from jelm.domains.sodarace.domain import SodaraceDomain
    from jelm.programs.sandbox import Sandbox

    with Sandbox(program=SodaraceDomain().program, workers=1) as sb:
        walker = sb.execute([seed_source("square")])[0].value
    tunnel = write_gif(walker, "tunnel", gif_path(tmp_path, "tunnel"), steps=24)
    flat = write_gif(walker, "flat", tmp_path / "flat.gif", steps=24)
    assert tunnel == tmp_path / "best_tunnel.gif"
    with Image.open(tunnel) as im:
        assert im.format == "GIF" and im.n_frames > 1
    assert tunnel.read_bytes() != flat.read_bytes()  # the tunnel's ceiling is drawn


@pytest.mark.slow  # the trained run: ~15 s once per module
def test_the_reference_policy_samples_the_stage2_model(run):
    """The baseline of the evaluation: the stage-2 model's own weights behind a closed
    gate, not the trained policy's (PPO changed those too)."""
    params, cfg, tok, dist = load_policy(run / "policy")
    assert np.any(np.asarray(params["gate"]) != 0)  # training opened it
    stage2 = load_model(json.loads((run / "config.json").read_text())["model"])[0]
    changed = jax.tree.map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), params["lm"], stage2
    )
    assert any(jax.tree.leaves(changed))  # ... and changed the language model
    ref_policy = as_reference(params, stage2)
    key = jax.random.key(7)
    a = sample_programs(ref_policy, cfg, tok, dist, 0, 6, key, 10)
    b = sample_programs(ref_policy, cfg, tok, dist, 1, 6, key, 10)
    np.testing.assert_array_equal(a.tokens, b.tokens)  # the terrain no longer matters
    assert a.programs == b.programs
    prompt = jnp.asarray(tok.encode(program_header("walker.py")), jnp.int32)
    ids = jnp.zeros((6,), jnp.int32)
    tokens = jnp.asarray(a.tokens)
    ref = np.asarray(reference_logp(stage2, cfg, prompt, tokens))
    shut = np.asarray(score(ref_policy, cfg, ids, prompt, tokens)[0])
    np.testing.assert_allclose(shut[a.mask], ref[a.mask], rtol=1e-5, atol=1e-5)
    tuned = np.asarray(score(params, cfg, ids, prompt, tokens)[0])
    assert not np.allclose(tuned[a.mask], ref[a.mask], atol=1e-5)


@pytest.mark.slow  # the trained run: ~15 s once per module
def test_evaluate_compares_policy_stage2_and_dataset(run, tmp_path):
    from jelm.rl.evaluate import evaluate_stage3, main

    dataset = tmp_path / "dataset.jsonl"
    rows = [
        {"format": "jelm-stage2-programs", "share": 0.5},
        {"program": seed_source("square"), "fitness": 1.0, "niche": 0},
        {"program": "def make_walker(:\n", "fitness": 0.0, "niche": 1},
    ]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = evaluate_stage3(run, n=4, dataset=dataset)
    assert result["n"] == 4 and list(result["terrains"]) == ["flat", "tunnel"]
    assert json.loads((run / "evaluation.json").read_text()) == result
    assert (run / "curves.png").stat().st_size > 0 and (run / "terrains.png").stat().st_size > 0
    for name, entry in result["terrains"].items():
        for side in ("policy", "stage2"):
            got = entry[side]
            assert got["mean"] <= got["best"] and 0.0 <= got["valid"] <= 1.0
            if got["valid"] == 0.0:  # nothing ran: every reward is the run's penalty
                assert got["mean"] == got["best"] == -1.0 and got["best_valid"] is None
        assert entry["dataset"]["programs"] == 2 and entry["dataset"]["valid"] == 0.5
        # the best valid walker's reward: its distance, at least the run's floor (0)
        want = max(_square_fitness(name), 0.0)
        assert entry["dataset"]["best"] == pytest.approx(want, abs=1e-5)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert main([str(run), "--n", "2", "--dataset", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.slow  # the trained run: ~15 s once per module
def test_jelm_invent_command(run, tmp_path, capsys):
    from jelm.cli import main

    args = ["--n", "3", "--max-new-tokens", "10", "--steps", str(STEPS)]
    assert main(["invent", "--policy", str(tmp_path / "none"), "--terrain", "flat", *args]) == 2
    err = capsys.readouterr().err
    assert "not a stage-3 policy" in err and len(err.strip().splitlines()) == 1
    assert main(["invent", "--policy", str(run / "policy"), "--terrain", "bumpy", *args]) == 2
    err = capsys.readouterr().err
    assert "['flat', 'tunnel']" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "out"
    policy = ["invent", "--policy", str(run / "policy"), "--terrain", "flat"]
    assert main([*policy, "--seed", "1", "--out", str(out), *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert [line.split()[0] for line in lines[:3]] == ["1", "2", "3"]
    rewards = [float(line.split()[1]) for line in lines[:3]]
    assert rewards == sorted(rewards, reverse=True)
    assert "GIF" in lines[3] and len((out / INVENTIONS).read_text().splitlines()) == 3


@pytest.mark.slow  # the trained run: ~15 s once per module
def test_evaluate_draws_the_policys_best_walker_on_each_terrain(run, monkeypatch):
    """With seed walkers in place of the samples, the evaluation's GIF of each terrain is
    the best valid one's, and the summary names it."""
    import jelm.rl.invent as inv
    from jelm.rl.evaluate import evaluate_stage3

    programs = ["def make_walker(:\n", seed_source("square"), seed_source("radial")]
    drawn = inv.Drawn(programs, np.zeros((3, 1), np.int32), np.ones((3, 1), bool))
    monkeypatch.setattr(inv, "sample_programs", lambda *a, **k: drawn)
    result = evaluate_stage3(run, n=3)
    for name, entry in result["terrains"].items():
        assert entry["gif"] == gif_path(run, name).name and gif_path(run, name).is_file()
        assert entry["policy"]["valid"] == pytest.approx(2 / 3)
