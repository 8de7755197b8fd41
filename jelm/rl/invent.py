"""Ask a trained stage-3 inventor (ELM §7) for walkers for one terrain of its distribution.

:func:`invent` samples programs from a saved policy conditioned on the terrain, runs them
in the sandbox and scores their walkers on that terrain (:mod:`jelm.rl.reward`), and can
write them (``inventions.jsonl``) with a GIF of the best walker walking there. The
``jelm invent`` command (:mod:`jelm.cli`) wraps it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

INVENTIONS = "inventions.jsonl"


class Drawn(NamedTuple):
    """Programs sampled for one terrain: the decoded ``programs`` and the raw ``tokens``
    and ``mask`` [n, T] of :func:`jelm.rl.policy.sample`."""

    programs: list[str]
    tokens: np.ndarray
    mask: np.ndarray


def terrain_id(dist: Any, terrain: str) -> int:
    """The id of ``terrain`` in the distribution ``dist`` (``-`` read as ``_``); a
    ValueError names the distribution's terrains when it is not one of them."""
    name = terrain.strip().replace("-", "_")
    if name not in dist.terrains:
        raise ValueError(
            f"terrain {terrain!r} is not in the policy's distribution {dist.name!r}; "
            f"choose one of {list(dist.terrains)}"
        )
    return dist.terrains.index(name)


def as_reference(params: Any, lm_params: Any) -> Any:
    """A policy that samples exactly what the language model ``lm_params`` samples,
    whatever the terrain: the policy's TEN with its gate closed on the stage-2 model's
    weights (:class:`jelm.lm.model.Adapter`). PPO changes the language model too, so
    closing the trained policy's gate alone would not give the stage-2 model back."""
    return {**params, "lm": lm_params, "gate": params["gate"] * 0}


def sample_programs(
    params: Any,
    cfg: Any,
    tokenizer: Any,
    dist: Any,
    terrain: int,
    n: int,
    key: jax.Array,
    max_new_tokens: int,
) -> Drawn:
    """``n`` programs from the policy conditioned on terrain id ``terrain``, sampled after
    the stage-2 header and decoded as stage 3 decodes them; ``max_new_tokens`` is cut to
    the room the model's context leaves after the header."""
    from jelm.rl.encoders import encoder_inputs
    from jelm.rl.policy import sample_over_devices as sample
    from jelm.rl.stage3 import _decode, program_prompt

    prompt, stops, pad = program_prompt(tokenizer)
    room = cfg.model.n_ctx - int(prompt.shape[0])
    max_new = max(1, min(int(max_new_tokens), room))
    inputs = encoder_inputs(cfg.encoder, dist, jnp.full((n,), terrain, jnp.int32))
    drawn = sample(params, cfg, inputs, prompt, key, stops, pad, max_new)
    tokens, mask = np.asarray(drawn.tokens), np.asarray(drawn.mask)
    return Drawn(_decode(tokenizer, tokens, mask), tokens, mask)


def make_sandbox(steps: int, workers: int = 0, timeout_s: float = 2.0) -> tuple[Any, Any]:
    """A Sodarace domain of ``steps`` steps and a running sandbox for its programs (close
    it, or use it as a context manager)."""
    from jelm.domains.sodarace.domain import SodaraceDomain
    from jelm.programs.sandbox import Sandbox, SandboxLimits

    domain = SodaraceDomain(steps=steps)
    sandbox = Sandbox(
        program=domain.program,
        workers=workers or None,
        limits=SandboxLimits(timeout_s=timeout_s),
    )
    return domain, sandbox


def rows_of(programs: Sequence[str], got: Any) -> list[dict[str, Any]]:
    """One row per program (program, status, error, reward), best reward first (ties in
    sampling order)."""
    rows = [
        {
            "program": p,
            "status": got.statuses[k],
            "error": got.errors[k],
            "reward": float(got.rewards[k]),
        }
        for k, p in enumerate(programs)
    ]
    return sorted(rows, key=lambda r: -r["reward"])


def gif_path(out: Path, terrain: str) -> Path:
    """Where :func:`invent` writes the GIF of the best walker on ``terrain``."""
    return Path(out) / f"best_{terrain}.gif"


def write_gif(phenotype: Any, terrain: str, path: Path, *, steps: int) -> Path:
    """A GIF at ``path`` of the walker ``phenotype`` (what a Sodarace program returns)
    walking ``steps`` steps on the built-in terrain ``terrain``, drawn as
    :meth:`jelm.domains.sodarace.SodaraceDomain.render` draws it."""
    from jelm.domains.sodarace.domain import SodaraceDomain

    path = Path(path)
    domain = SodaraceDomain(steps=steps, terrain=terrain)
    domain.render(domain.pack([phenotype], 1), [path.stem], path.parent)
    return path


def invent(
    policy_dir: str | Path,
    terrain: str,
    n: int,
    *,
    seed: int = 0,
    out: Path | None = None,
    max_new_tokens: int = 768,
    steps: int = 600,
    penalty: float = -1.0,
    workers: int = 0,
) -> list[dict[str, Any]]:
    """Sample ``n`` walker programs from the stage-3 policy in ``policy_dir`` for
    ``terrain`` (one of its distribution's: a ValueError lists them otherwise), run them
    and score each walker by its distance on that terrain over ``steps`` steps
    (``penalty`` for a program that gives none).

    Returns the rows (program, status, error, reward), best first. With ``out``, writes
    them to ``out/inventions.jsonl`` and, when some walker is valid, a GIF of the best
    one on the terrain (:func:`gif_path`).
    """
    from jelm.rl.policy import load_policy
    from jelm.rl.reward import SodaraceRewarder

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    params, cfg, tokenizer, dist = load_policy(policy_dir)
    k = terrain_id(dist, terrain)
    name = dist.terrains[k]
    drawn = sample_programs(
        params, cfg, tokenizer, dist, k, n, jax.random.key(seed), max_new_tokens
    )
    domain, sandbox = make_sandbox(steps, workers)
    with sandbox:
        got = SodaraceRewarder(domain, sandbox, dist, penalty, n)(
            drawn.programs, np.full(n, k, np.int32)
        )
        rows = rows_of(drawn.programs, got)
        best = next((r for r in rows if r["status"] == "ok"), None)
        phenotype = None
        if out is not None and best is not None:
            result = sandbox.execute([best["program"]])[0]
            phenotype = result.value if result.ok else None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / INVENTIONS).write_text("".join(json.dumps(r) + "\n" for r in rows))
        gif = gif_path(out, name)
        gif.unlink(missing_ok=True)  # never leave the GIF of an earlier call
        if phenotype is not None:
            write_gif(phenotype, name, gif, steps=steps)
    return rows
