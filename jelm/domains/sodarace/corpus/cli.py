"""``python -m jelm.domains.sodarace.corpus``: make the diff model's corpus (ELM arXiv
2206.08896v1, §3.1), print its statistics as JSON and optionally write it as JSON lines."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from jelm.domains.sodarace.corpus.lineage import MAX_CHARS, generate_corpus

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Make a corpus, print its statistics as JSON, and optionally write it as JSON lines."""
    ap = argparse.ArgumentParser(
        prog="python -m jelm.domains.sodarace.corpus", description=main.__doc__
    )
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-chars", type=int, default=MAX_CHARS)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument(
        "--generated",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of lineages that start from a freshly generated program (0..1)",
    )
    ap.add_argument("--out", default=None, help="write the examples here (JSON lines)")
    args = ap.parse_args(argv)
    examples, stats = generate_corpus(
        args.n,
        args.seed,
        max_chars=args.max_chars,
        workers=args.workers,
        generated=args.generated,
    )
    report = stats.to_dict()
    for name, values in (
        ("parent_chars", [len(e.parent) for e in examples]),
        ("diff_chars", [len(e.diff) for e in examples]),
        ("diff_lines", [e.diff.count("\n") for e in examples]),
    ):
        if values:
            arr = np.asarray(values)
            report[name] = {
                q: int(np.percentile(arr, p))
                for q, p in (("min", 0), ("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            }
    print(json.dumps(report, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for e in examples:
                f.write(json.dumps(dataclasses.asdict(e)) + "\n")
