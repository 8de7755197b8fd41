"""``python -m jelm.rl.bench``: the stage-3 policy's sampler (ELM §7) on a program model,
its row cache growing from ``--first-caches`` slots; one JSON line.

The policy is the untrained one (its gate closed: the model's own samples) on the
``walls_tunnel`` codes, sampling ``--rows`` programs after the stage-2 header until
every row has written a stop token or ``--max-new`` tokens. For each first cache size
(``0``: the whole budget from the start) it times a first call (compiling included) and
a second one with another key, and reports the tokens sampled per second of the second;
``same_tokens`` says whether every size drew the same tokens (it should).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jelm.rl.bench --model DIR [--rows 32] [--max-new 1280]
    [--first-caches 256 0] [--temperature 0.5] [--seed 0]``; prints and returns the
    result."""
    from jelm.lm.checkpoint import load_model
    from jelm.rl.policy import PolicyConfig, init_policy, sample
    from jelm.rl.stage3 import program_prompt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a jelm model directory")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new", type=int, default=1280)
    parser.add_argument("--first-caches", type=int, nargs="+", default=[256, 0])
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    lm, model_config, tokenizer = load_model(args.model)
    cfg = PolicyConfig(
        model=model_config, encoder="codes", n_terrains=3, temperature=args.temperature
    )
    ids = jnp.asarray(np.arange(args.rows) % 3, jnp.int32)
    params = init_policy(cfg, lm, ids[:1], jax.random.key(args.seed))
    prompt, stops, pad = program_prompt(tokenizer)

    def call(seed: int, first: int) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        drawn = sample(
            params, cfg, ids, prompt, jax.random.key(seed), stops, pad, args.max_new,
            first_cache=first or args.max_new,
        )  # fmt: skip
        mask = np.asarray(drawn.mask)
        return time.perf_counter() - t0, np.where(mask, np.asarray(drawn.tokens), -1)

    runs, drawn = [], []
    for first in args.first_caches:
        first_s, _ = call(args.seed, first)
        run_s, tokens = call(args.seed + 1, first)
        lengths = (tokens >= 0).sum(axis=1)
        drawn.append(tokens)
        runs.append(
            {
                "first_cache": first or args.max_new,
                "first_call_s": round(first_s, 3),
                "run_s": round(run_s, 3),
                "tokens_per_s": round(float(lengths.sum()) / run_s, 1),
                "mean_tokens": round(float(lengths.mean()), 1),
                "longest": int(lengths.max()),
            }
        )
    out = {
        "device": jax.devices()[0].device_kind,
        "model": str(args.model),
        "rows": args.rows,
        "max_new": args.max_new,
        "temperature": args.temperature,
        "runs": runs,
        "same_tokens": all(np.array_equal(drawn[0], t) for t in drawn[1:]),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
