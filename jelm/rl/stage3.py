"""``python -m jelm.rl.stage3``: ELM's stage 3 (§7), a terrain-conditioned inventor trained
with PPO from the stage-2 program model, in one resumable run directory.

Each iteration draws a terrain per sample from the distribution, samples one program per
terrain from the policy, runs and scores the programs on their terrains
(:mod:`jelm.rl.reward`), and updates the policy (:mod:`jelm.rl.learner`). The run
directory holds ``config.json``, orbax checkpoints of the policy, the optimizer and the
KL coefficient after every iteration, ``train.jsonl`` (one row an iteration),
``samples.jsonl`` (every sampled program, its terrain, status and reward) and, at the end,
``policy/`` (the policy's parameters, configuration and tokenizer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jelm.rl.learner import PPOSettings


class Stage3Error(RuntimeError):
    """A stage-3 run cannot start or go on (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Stage3Config(PPOSettings):
    """Everything that defines a stage-3 run (its ``config.json``); the defaults are the
    ``cpu`` preset. PPO's fields come from :class:`jelm.rl.learner.PPOSettings`."""

    model: str = "shipped"  # the stage-2 model: its ``model/`` directory, or hf:<dir>
    terrains: str = "walls_tunnel"  # a distribution of jelm.rl.terrains, or "a,b,c"
    encoder: str = "codes"
    prefix_len: int = 8
    iterations: int = 12
    batch: int = 32
    max_new_tokens: int = 768
    temperature: float = 0.5  # the stage-2 model writes valid walkers at 0.5, few at 1.0
    kl_coef: float = 0.05
    kl_target: float = 0.0  # > 0: the adaptive controller of Ziegler et al. (2019)
    kl_horizon: int = 10000
    penalty: float = -1.0
    reward_floor: float = 0.0  # a valid walker earns at least this (-inf: no floor)
    reward_scale: float = 0.1
    steps: int = 600
    seed: int = 0
    workers: int = 0  # sandbox workers (0: one per CPU)
    timeout_s: float = 2.0
    max_minutes: float = 45.0

    def problems(self) -> list[str]:
        """What is wrong with these values (empty when they can run)."""
        out = []
        if self.penalty >= self.reward_floor:
            out.append(
                f"penalty ({self.penalty}) must be below reward_floor ({self.reward_floor}): "
                "a broken program must not earn what a walker earns"
            )
        for name in ("iterations", "batch", "max_new_tokens", "prefix_len", "epochs", "steps"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.minibatch <= self.batch:
            out.append(f"minibatch must be in 1..batch ({self.batch}), got {self.minibatch}")
        if self.temperature <= 0:
            out.append(f"temperature must be > 0, got {self.temperature}")
        if self.kl_coef < 0 or self.kl_target < 0:
            out.append("kl_coef and kl_target must be >= 0")
        return out


#: ``--preset``: values replacing the defaults (options given explicitly win).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {
        "batch": 1024,
        "iterations": 100,
        "minibatch": 64,
        "max_new_tokens": 2048,
        "max_minutes": 7 * 24 * 60.0,
    },
}


@dataclasses.dataclass
class Setup:
    """What a run needs besides its configuration: the starting model, its tokenizer and
    a rewarder (None: Sodarace through the sandbox and the simulator)."""

    params: Any
    model_config: Any
    tokenizer: Any
    rewarder: Any = None


def _policy_config(cfg: Stage3Config, model_config: Any, n_terrains: int) -> Any:
    from jelm.rl.policy import PolicyConfig

    return PolicyConfig(
        model=model_config,
        encoder=cfg.encoder,
        n_terrains=n_terrains,
        prefix_len=cfg.prefix_len,
        temperature=cfg.temperature,
    )


def _kl_controller(cfg: Stage3Config, coef: float) -> Any:
    from jelm.rl import ppo

    target = cfg.kl_target if cfg.kl_target > 0 else None
    return ppo.KLController(coef, target, cfg.kl_horizon)


def _decode(tokenizer: Any, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    from jelm.lm.stage2 import program_of

    return [
        program_of(tokenizer.decode([int(t) for t in row[m]]))
        for row, m in zip(tokens, mask, strict=True)
    ]


@dataclasses.dataclass(frozen=True)
class _Step:
    """One PPO iteration of a run (everything fixed for the run is here): draw terrains,
    sample a program for each, score them, update."""

    cfg: Stage3Config
    policy: Any  # PolicyConfig
    dist: Any  # TerrainDistribution
    tokenizer: Any
    ref: Any  # the stage-2 model's parameters
    rewarder: Any
    prompt: jax.Array
    stops: jax.Array
    pad: jax.Array
    root: jax.Array
    update: Any
    prepare: Any

    def __call__(self, state: dict[str, Any], it: int) -> tuple[dict[str, Any], dict, list]:
        """``state`` after iteration ``it`` (0-based), its ``train.jsonl`` row and its
        ``samples.jsonl`` rows. Every key comes from the seed and ``it``."""
        from jelm.rl import ppo
        from jelm.rl.encoders import encoder_inputs
        from jelm.rl.policy import sample_over_devices as sample
        from jelm.rl.terrains import sample_terrains

        cfg, dist = self.cfg, self.dist
        t0 = time.time()
        key = jax.random.fold_in(self.root, it)
        ids = sample_terrains(jax.random.fold_in(key, 0), len(dist), cfg.batch)
        inputs = encoder_inputs(cfg.encoder, dist, ids)
        drawn = sample(
            state["params"],
            self.policy,
            inputs,
            self.prompt,
            jax.random.fold_in(key, 1),
            self.stops,
            self.pad,
            cfg.max_new_tokens,
        )
        mask = np.asarray(drawn.mask)
        t1 = time.time()
        programs = _decode(self.tokenizer, np.asarray(drawn.tokens), mask)
        ids_np = np.asarray(ids)
        got = self.rewarder(programs, ids_np)
        t2 = time.time()
        batch, stats = self.prepare(
            state["params"],
            self.ref,
            self.policy,
            cfg,
            inputs,
            self.prompt,
            drawn.tokens,
            drawn.mask,
            jnp.asarray(got.rewards * cfg.reward_scale, jnp.float32),
            state["kl_coef"],
            ids,
        )
        params, opt_state, metrics = self.update(
            state["params"], state["opt_state"], self.prompt, batch, jax.random.fold_in(key, 2)
        )
        ctrl = ppo.update_kl(
            _kl_controller(cfg, float(state["kl_coef"])), float(stats["kl"]), cfg.batch
        )
        state = {"params": params, "opt_state": opt_state, "kl_coef": jnp.float32(ctrl.coef)}
        row = _row(it + 1, got, ids_np, dist, stats, metrics, float(ctrl.coef))
        row["truncated"] = float(np.mean(mask.sum(axis=1) >= cfg.max_new_tokens))
        row.update(sample_s=t1 - t0, reward_s=t2 - t1, update_s=time.time() - t2)
        return state, row, _sample_rows(it + 1, programs, ids_np, dist, got, mask)


def program_prompt(tokenizer: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """What a policy samples programs after and until: the stage-2 header's tokens, the
    stop tokens (EOS and the diff format's markers) and the padding token."""
    from jelm.lm.stage2 import program_header, stop_token_ids

    prompt = jnp.asarray(tokenizer.encode(program_header("walker.py")), jnp.int32)
    stops = jnp.asarray(stop_token_ids(tokenizer), jnp.int32)
    pad = jnp.int32(tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id)
    return prompt, stops, pad


def train(
    cfg: Stage3Config, out: Path, setup: Setup | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) stage 3 in ``out``; returns the summary of the last iteration."""
    from tqdm import tqdm

    from jelm.io.checkpoint import CheckpointError, Checkpoints
    from jelm.io.rundir import RunDir, RunDirError
    from jelm.rl.encoders import encoder_inputs
    from jelm.rl.learner import make_prepare, make_update
    from jelm.rl.policy import init_policy, save_policy
    from jelm.rl.terrains import distribution

    problems = cfg.problems()
    if problems:
        raise Stage3Error("; ".join(problems))
    try:
        dist = distribution(cfg.terrains)
    except ValueError as exc:
        raise Stage3Error(str(exc)) from exc
    if setup is None:
        setup = _load(cfg)
    tok = setup.tokenizer
    pcfg = _policy_config(cfg, setup.model_config, len(dist))
    prompt, stops, pad = program_prompt(tok)
    room = setup.model_config.n_ctx - int(prompt.shape[0])
    if cfg.max_new_tokens > room:
        raise Stage3Error(f"max_new_tokens {cfg.max_new_tokens} exceeds the context ({room})")
    init_key, root = jax.random.split(jax.random.key(cfg.seed))
    example = encoder_inputs(cfg.encoder, dist, jnp.zeros((1,), jnp.int32))
    params = init_policy(pcfg, setup.params, example, init_key)
    state = {
        "params": params,
        "opt_state": cfg.optimizer().init(params),
        "kl_coef": jnp.float32(cfg.kl_coef),
    }
    try:
        run = RunDir(out, dataclasses.asdict(cfg))
    except RunDirError as exc:
        raise Stage3Error(str(exc)) from exc
    rewarder, closers = _rewarder(cfg, dist, setup)
    step = _Step(
        cfg,
        pcfg,
        dist,
        tok,
        setup.params,
        rewarder,
        prompt,
        stops,
        pad,
        root,
        make_update(pcfg, cfg),
        make_prepare(),
    )
    log_path, samples_path = run.path / "train.jsonl", run.path / "samples.jsonl"
    started = time.time()
    try:
        with Checkpoints(run.checkpoint_dir, keep=2) as ckpts:
            start = 0
            if ckpts.latest_step() is not None:
                try:
                    start, state = ckpts.restore(state)
                except CheckpointError as exc:
                    raise Stage3Error(f"cannot resume {run.path}: {exc}") from exc
            rows = _keep_rows(log_path, start)
            _keep_rows(samples_path, start)
            bar = tqdm(total=cfg.iterations, initial=start, desc="stage 3", disable=not progress)
            for it in range(start, cfg.iterations):
                state, row, samples = step(state, it)
                rows.append(row)
                _append(samples_path, samples)
                _write_rows(log_path, rows)
                ckpts.save(it + 1, state)
                bar.update()
                bar.set_postfix(reward=f"{row['reward_mean']:.2f}", valid=f"{row['valid']:.2f}")
                if it == start and row["truncated"] >= 0.5:
                    print(
                        f"stage 3: {row['truncated']:.0%} of the programs reached "
                        f"max_new_tokens ({cfg.max_new_tokens}) and were cut off, so they "
                        "cannot run: raise --max-new-tokens to the length of the stage-2 "
                        "model's programs",
                        file=sys.stderr,
                    )
                if time.time() - started > cfg.max_minutes * 60 and it + 1 < cfg.iterations:
                    print(f"time budget of {cfg.max_minutes} min reached", file=sys.stderr)
                    break
            bar.close()
        save_policy(run.path / "policy", state["params"], pcfg, tok, cfg.terrains)
    finally:
        for close in closers:
            close()
        run.close()
    return rows[-1] if rows else {}


def _load(cfg: Stage3Config) -> Setup:
    from jelm.lm.trainer import TrainError, load_start

    try:
        params, config, tokenizer = load_start(cfg.model)
    except TrainError as exc:
        raise Stage3Error(str(exc)) from exc
    return Setup(params, config, tokenizer)


def _rewarder(cfg: Stage3Config, dist: Any, setup: Setup) -> tuple[Any, list[Any]]:
    """The run's rewarder and what to close at the end."""
    if setup.rewarder is not None:
        return setup.rewarder, []
    from jelm.domains.sodarace.domain import SodaraceDomain
    from jelm.programs.sandbox import Sandbox, SandboxLimits
    from jelm.rl.reward import SodaraceRewarder

    domain = SodaraceDomain(steps=cfg.steps)
    sandbox = Sandbox(
        program=domain.program,
        workers=cfg.workers or None,
        limits=SandboxLimits(timeout_s=cfg.timeout_s),
    )
    return SodaraceRewarder(domain, sandbox, dist, cfg.penalty, cfg.batch, cfg.reward_floor), [
        sandbox.close
    ]


def _row(
    iteration: int,
    got: Any,
    ids: np.ndarray,
    dist: Any,
    stats: dict[str, Any],
    metrics: dict[str, Any],
    kl_coef: float,
) -> dict[str, Any]:
    """One ``train.jsonl`` row: rewards overall and per terrain, shares, PPO's numbers."""
    valid = got.valid
    row: dict[str, Any] = {
        "iteration": iteration,
        "reward_mean": float(np.mean(got.rewards)),
        "reward_max": float(np.max(got.rewards)),
        "valid": float(np.mean(valid)),
        "kl_coef": kl_coef,
    }
    for k, name in enumerate(dist.terrains):
        on = ids == k
        if on.any():
            row[f"reward_{name}"] = float(np.mean(got.rewards[on]))
            row[f"best_{name}"] = float(np.max(got.rewards[on]))
    row.update({k: float(v) for k, v in stats.items()})
    row.update({k: float(v) for k, v in metrics.items()})
    return row


def _sample_rows(
    iteration: int, programs: Sequence[str], ids: np.ndarray, dist: Any, got: Any, mask: np.ndarray
) -> list[dict[str, Any]]:
    return [
        {
            "iteration": iteration,
            "terrain": dist.terrains[int(ids[k])],
            "program": programs[k],
            "tokens": int(mask[k].sum()),
            "status": got.statuses[k],
            "error": got.errors[k],
            "fitness": got.fitness[k],
            "reward": float(got.rewards[k]),
        }
        for k in range(len(programs))
    ]


def _keep_rows(path: Path, upto: int) -> list[dict[str, Any]]:
    """The rows of ``path`` up to iteration ``upto`` (rows of iterations after the last
    checkpoint are dropped from the file too: the resumed run writes them again)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if row.get("iteration", 0) <= upto:
            rows.append(row)
    _write_rows(path, rows)
    return rows


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def _append(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.rl.stage3 --out DIR --model RUN/model [--preset
    cpu|paper] [--terrains walls_tunnel] [--encoder codes|cnn] ...``."""
    from jelm.options import add_options, values_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the run directory")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    add_options(parser, Stage3Config)
    first, _ = parser.parse_known_args(argv)
    parser.set_defaults(**PRESETS[first.preset])
    args = parser.parse_args(argv)
    try:
        summary = train(
            Stage3Config(**values_of(Stage3Config, args)), args.out, progress=not args.no_progress
        )
    except Stage3Error as exc:
        print(f"jelm.rl.stage3: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
