"""How good a diff model is as ELM's mutation operator: ``python -m jelm.lm.evaluate``.

ELM (§3.1 and Appendix A) judges a diff model by what its diffs do to programs: do they
apply, do they change the parent, does the child run, is its phenotype valid. This command
asks any backend (the shipped model, a jelm directory, a local Hugging Face checkpoint or
an OpenAI-compatible server) for diffs of a domain's seed programs in the paper's format,
with every commit message, at one or more temperatures; turns each completion into a
child exactly as the ``lm_diff`` operator does in the loop
(:meth:`jelm.lm.operators.LMDiffOperator.child`), runs the children in the sandbox, and
prints one JSON line::

    {"model": str, "domain": str, "parents": [...], "samples": int, "prompts": int,
     "results": [{"temperature": float, "applied": float, "changed": float,
                  "ran": float, "valid": float, "outcomes": {status: count},
                  "diffs_per_s": float, "drawn_per_child": float,
                  "tokens_per_diff": float,
                  "by_parent": {name: {"applied": ..., "changed": ..., "ran": ...,
                                       "valid": ...}}}, ...]}

The parents are the domain's seeds (``--seeds`` picks some) or every ``*.py`` program of
a folder (``--parents DIR``, e.g. programs written in other styles than the seeds, to
see whether a model generalises).

Shares are of all prompts at that temperature; ``diffs_per_s`` includes compiling the
sampler's shapes, which the first temperature pays. ``outcomes`` counts each prompt's end:
a diff failure class (``diff_context_mismatch``, ...), ``diff_unchanged``,
``backend_error``, or the sandbox status of the child (``ok`` is a valid phenotype).
Sampling is seeded, so a jelm backend gives the same figures on every run.
``--records FILE`` writes every sample as a JSON line (its completion, child, end and
error message) to read what the model got wrong.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jelm.domains.base import Domain
from jelm.lm.backends import model_spec
from jelm.lm.domain import add_domain_option, resolve_domain
from jelm.lm.operators import SIMILAR, LMDiffOperator, Sampling
from jelm.mutation.base import Parent
from jelm.programs.diff import DiffError, apply_diff

#: Sandbox statuses of children that ran to the end, besides the domain's invalid status.
RAN = frozenset({"ok", "wrong_type", "output_too_large"})


def run_children(domain: Domain, programs: Sequence[str]) -> list[tuple[str, str]]:
    """The sandbox status of each program (``"ok"``: a valid phenotype) and its one-line
    error message (empty when it ran)."""
    from jelm.programs.sandbox import execute

    return [(str(r.status), r.error) for r in execute(list(programs), program=domain.program)]


def read_parents(directory: str | Path) -> dict[str, str]:
    """Parent programs from a folder: every ``*.py`` file, by file name without ``.py``
    (in name order); ``ValueError`` if there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory of parent programs")
    found = {p.stem: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.py"))}
    if not found:
        raise ValueError(f"{directory} holds no .py parent programs")
    return found


def evaluate(
    backend: Any,
    seeds: Sequence[str] | None = None,
    temperatures: Sequence[float] = (0.8,),
    samples: int = 4,
    *,
    domain: Domain | str | None = None,
    parents: Mapping[str, str] | None = None,
    top_p: float = 0.95,
    max_new_tokens: int = 384,
    seed: int = 0,
    similar: float | None = SIMILAR,
    copy: bool = True,
    retries: int = 0,
    records: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One result dict per temperature (see the module docstring): ``samples`` diffs for
    every parent x commit message, applied and run in the sandbox. The parents are
    ``parents`` (name -> program text, e.g. :func:`read_parents`) if given, else the
    domain's seeds named in ``seeds`` (default: all of them). Diffs are applied as
    ``lm_diff`` applies them, with line-similarity placement at ``similar`` (``None``:
    exact and fuzzy only); ``applied_strict`` is the share that applies without it.
    ``copy``: sample diffs that copy their parents' lines where the backend can.
    ``retries``: sample a child again while it cannot run, as ``lm_diff`` does
    (:meth:`~jelm.lm.operators.LMDiffOperator.tries`); ``drawn_per_child`` counts the
    diffs sampled per child, and a record holds the sample a child kept.
    ``by_parent`` breaks the shares down per parent. ``records``, if given, receives one
    dict per sample: temperature, parent, message, completion, child (``None`` when no
    child was made), end (as in ``outcomes``) and error (the sandbox's or the diff's
    message), to read what went wrong."""
    domain = resolve_domain(domain)
    if parents is None:
        names = domain.seed_names() if seeds is None else tuple(seeds)
        parents = {s: domain.seed_program(s) for s in names}
    messages = domain.prompts.commit_messages
    file_name = domain.program.file_name
    ran = RAN | {domain.program.invalid_status}
    cases = [(s, m) for s in parents for m, _ in messages for _ in range(samples)]
    programs = [parents[s] for s, _ in cases]
    results = []
    for temperature in temperatures:
        sampling = Sampling(max_new_tokens, float(temperature), top_p)
        operator = LMDiffOperator(
            backend, messages, file_name, sampling, similar=similar, copy=copy, retries=retries
        )
        t0 = time.perf_counter()
        pairs = operator.tries(
            [Parent(i, p) for i, p in enumerate(programs)], [m for _, m in cases], seed
        )
        sample_s = time.perf_counter() - t0
        made = [c for c, _ in pairs]
        completions = [completion for _, completion in pairs]
        children = [c.program for c in made if c.program is not None]
        statuses = iter(run_children(domain, children) if children else ())
        runs = [next(statuses) if c.program is not None else (c.failure, "") for c in made]
        ends = [end for end, _ in runs]
        if records is not None:
            records.extend(
                {
                    "temperature": float(temperature),
                    "parent": name,
                    "message": message,
                    "completion": completion.text,
                    "child": c.program,
                    "end": end,
                    "error": error or (c.error or ""),
                }
                for (name, message), completion, c, (end, error) in zip(
                    cases, completions, made, runs, strict=True
                )
            )
        strict = [_applies(p, c.diff) for p, c in zip(programs, made, strict=True)]
        n = len(cases)
        results.append(
            {
                "temperature": float(temperature),
                **_shares(made, ends, ran, strict),
                "outcomes": dict(collections.Counter(ends).most_common()),
                "diffs_per_s": operator.drawn / sample_s,
                "drawn_per_child": operator.drawn / n,
                "tokens_per_diff": sum(c.tokens for c in completions) / n,
                "by_parent": {
                    name: _shares(
                        [c for c, (s, _) in zip(made, cases, strict=True) if s == name],
                        [e for e, (s, _) in zip(ends, cases, strict=True) if s == name],
                        ran,
                        [a for a, (s, _) in zip(strict, cases, strict=True) if s == name],
                    )
                    for name in parents
                },
            }
        )
    return results


def _applies(parent: str, diff: str) -> bool:
    """Whether ``diff`` applies to ``parent`` exactly or fuzzily (no similarity placement)."""
    try:
        apply_diff(parent, diff)
    except DiffError:
        return False
    return True


def _shares(
    made: Sequence[Any], ends: Sequence[str], ran: frozenset[str], strict: Sequence[bool]
) -> dict[str, float]:
    """The shares of children whose diff applied (``applied_strict``: without similarity
    placement), changed the parent, ran, were valid."""
    n = max(1, len(made))
    applied = sum(c.program is not None or c.failure == "diff_unchanged" for c in made)
    return {
        "applied": applied / n,
        "applied_strict": sum(strict) / n,
        "changed": sum(c.program is not None for c in made) / n,
        "ran": sum(e in ran for e in ends) / n,
        "valid": sum(e == "ok" for e in ends) / n,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.lm.evaluate [--model shipped|<dir>|hf:<dir>]
    [--base-url URL --model-name NAME] [--domain NAME] [--seeds ... | --parents DIR]
    [--temperatures 0.8 0.5] [--samples 4]``."""
    from jelm.lm.backends import make_backend

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shipped", help="shipped, a jelm dir or hf:<dir>")
    parser.add_argument("--base-url", help="an OpenAI-compatible server instead of --model")
    parser.add_argument("--model-name", default="jelm", help="the server's model name")
    add_domain_option(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", nargs="+", help="seed programs (default: all the domain's)")
    which.add_argument("--parents", help="a folder of parent programs (*.py) instead of seeds")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.8])
    parser.add_argument("--samples", type=int, default=4, help="per parent and message")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--records", help="write one JSON line per sample (completion, child, end, error)"
    )
    parser.add_argument(
        "--similar",
        type=lambda v: None if v.lower() == "none" else float(v),
        default=SIMILAR,
        help="line-similarity threshold for hunks fuzzy placement misses (none: off)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="sample a child again, up to this many times, while it cannot run (lm.retries)",
    )
    parser.add_argument(
        "--no-copy",
        dest="copy",
        action="store_false",
        help="sample unconstrained diffs (default: context and removed lines copy the parent)",
    )
    args = parser.parse_args(argv)
    if args.retries < 0:
        parser.error(f"--retries must be at least 0, got {args.retries}")
    if args.similar is not None and not 0.0 < args.similar <= 1.0:
        parser.error(f"--similar must be in (0, 1] or none, got {args.similar}")
    if args.base_url:
        spec: dict[str, Any] = {
            "kind": "openai",
            "base_url": args.base_url,
            "model": args.model_name,
        }
    else:
        spec = model_spec(args.model)
    try:
        domain = resolve_domain(args.domain)
        if args.parents:
            parents = read_parents(args.parents)
        else:
            seeds = domain.seed_names() if args.seeds is None else tuple(args.seeds)
            parents = {s: domain.seed_program(s) for s in seeds}
        backend = make_backend(spec)
    except Exception as exc:  # a missing model, a bad checkpoint, an unknown seed
        print(f"jelm.lm.evaluate: {exc}", file=sys.stderr)
        return 2
    records: list[dict[str, Any]] | None = [] if args.records else None
    results = evaluate(
        backend,
        temperatures=args.temperatures,
        samples=args.samples,
        domain=domain,
        parents=parents,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        similar=args.similar,
        copy=args.copy,
        retries=args.retries,
        records=records,
    )
    if args.records:
        with open(args.records, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records or ())
    line = {
        "model": getattr(backend, "name", spec.get("path", args.model_name)),
        "domain": domain.name,
        "parents": list(parents),
        "samples": args.samples,
        "retries": args.retries,
        "copy": bool(args.copy and getattr(backend, "copies", False)),
        "prompts": len(parents) * len(domain.prompts.commit_messages) * args.samples,
        "results": results,
    }
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
