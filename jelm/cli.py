"""The ``jelm`` command line (``jelm <subcommand> ...``).

Subcommands:

- ``jelm serve --model shipped|<dir>|hf:<dir>``: serve a diff model (ELM, Lehman et al.
  2022, §3.1) behind an OpenAI-compatible HTTP API (``jelm.lm.serve``), so ELM runs on
  other processes or machines, and any OpenAI client, can sample from it.
- ``jelm invent --policy RUN/policy --terrain tunnel --n 16 [--seed 0] [--out DIR]``:
  ask a stage-3 terrain-conditioned inventor (§7, ``jelm.rl.invent``) for walkers for
  one terrain of its distribution; prints each program's rank, reward and status, and
  with ``--out`` writes them and a GIF of the best walker on that terrain.

Each subcommand registers itself in :func:`build_parser` with a ``run(args) -> int``
function; :func:`main` parses and dispatches. Heavy imports (JAX, the model) happen inside
the subcommand, so ``jelm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _run_serve(args: argparse.Namespace) -> int:
    from jelm.lm.backends import make_backend, model_spec
    from jelm.lm.serve import serve

    try:
        backend = make_backend(model_spec(args.model, max_batch=args.max_batch))
    except Exception as exc:  # missing dir, bad checkpoint, no shipped model, ...
        print(f"jelm serve: cannot load model {args.model!r}: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # `kill` shuts down cleanly, like Ctrl-C
    try:
        serve(
            backend,
            args.host,
            args.port,
            max_batch=args.max_batch,
            batch_window_s=args.batch_window_ms / 1000.0,
            model_id=args.model_id,
            verbose=args.verbose,
            continuous=args.continuous,
        )
    except OSError as exc:  # e.g. the port is taken
        print(f"jelm serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_invent(args: argparse.Namespace) -> int:
    from jelm.io.checkpoint import CheckpointError
    from jelm.rl.invent import gif_path, invent

    if not (Path(args.policy) / "policy.json").is_file():
        print(f"jelm invent: {args.policy} is not a stage-3 policy directory", file=sys.stderr)
        return 2
    try:
        rows = invent(
            args.policy,
            args.terrain,
            args.n,
            seed=args.seed,
            out=args.out,
            max_new_tokens=args.max_new_tokens,
            steps=args.steps,
        )
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"jelm invent: {exc}", file=sys.stderr)
        return 2
    for rank, row in enumerate(rows, 1):
        print(f"{rank:3d}  {row['reward']:9.3f}  {row['status']}")
    terrain = args.terrain.strip().replace("-", "_")
    if args.out is None:
        print("no GIF written (give --out DIR)")
    elif gif_path(args.out, terrain).is_file():
        print(f"GIF of the best walker on {terrain}: {gif_path(args.out, terrain)}")
    else:
        print(f"no valid walker, no GIF; programs in {args.out / 'inventions.jsonl'}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``jelm`` argument parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="jelm", description="jelm: Evolution through Large Models on JAX."
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    p = sub.add_parser(
        "serve",
        help="serve a diff model behind an OpenAI-compatible HTTP API",
        description=(
            "Serve a model on /v1/models, /v1/completions and /v1/chat/completions. "
            "Concurrent requests are micro-batched into one sampling call."
        ),
    )
    p.add_argument(
        "--model",
        default="shipped",
        help="'shipped' (jelm's diff model), a jelm model directory, or hf:<dir> "
        "(a local Hugging Face checkpoint); default: shipped",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one; default 8000)")
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=32,
        help="most prompts sampled together (default 32)",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=10.0,
        help="how long to wait for more requests to batch with the first (default 10)",
    )
    p.add_argument("--model-id", default=None, help="model name to report (default: derived)")
    p.add_argument(
        "--continuous",
        action="store_true",
        help="batch continuously (requests join the rows already sampling) instead of "
        "micro-batching; a jelm or hf: model only",
    )
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.set_defaults(run=_run_serve)

    p = sub.add_parser(
        "invent",
        help="sample walkers for a terrain from a stage-3 inventor",
        description=(
            "Sample programs from a stage-3 terrain-conditioned policy for one terrain of "
            "its distribution, score their walkers on it and rank them."
        ),
    )
    p.add_argument("--policy", required=True, help="a stage-3 policy directory (RUN/policy)")
    p.add_argument("--terrain", required=True, help="a terrain of the policy's distribution")
    p.add_argument("--n", type=_positive_int, default=16, help="programs to sample (default 16)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write inventions.jsonl and the best walker's GIF here",
    )
    p.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=768,
        help="most tokens per program (default 768, cut to the model's context)",
    )
    p.add_argument("--steps", type=_positive_int, default=600, help="simulated steps (default 600)")
    p.set_defaults(run=_run_invent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
