"""Fine-tune a diff model on what ELM runs found: ``python -m jelm.lm.finetune`` (ELM §5).

The paper improves its diff model by training it on the diffs its own searches accepted
(Fig. 11). This command starts from any checkpoint (``shipped``, a jelm model directory,
``hf:<dir>``), builds the training set from run ledgers (:mod:`jelm.lm.ledger_data`:
accepted children by default, ``--select valid|changed`` for wider sets, ``--operators``
to keep some operators' children only), keeps the model's tokenizer, and trains with the
loss on the diff tokens only, as :mod:`jelm.lm.train` does. ``--corpus N`` mixes in N
examples of the domain's own training corpus (so the model keeps what it knew);
``--rename p`` gives a share ``p`` of the training examples fresh names each epoch
(:mod:`jelm.programs.rename`), so the model learns to copy the parent rather than recite
the programs it was trained on.

The output is a run directory: ``config.json`` (checked on resume), ``dataset.jsonl``
(every example with its split and source; written once, so a resumed run trains on the
same data even if the ledgers grew), ``checkpoints/`` (orbax: parameters, optimizer state
and step), ``train.jsonl``, ``model/`` (the fine-tuned model, a jelm model directory),
``loss.png`` and ``summary.json`` (data counts, held-out loss before and after, greedy
diffs of held-out parents). Running the same command again after a crash or ``kill -9``
resumes from the newest checkpoint and gives the model an uninterrupted run gives (the
run directory, the dataset written once and the loop are :mod:`jelm.lm.trainer`'s, which
stage 2 shares).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jelm.domains.base import CorpusExample
from jelm.io.rundir import RunDir
from jelm.lm.data import encode, make_batches
from jelm.lm.domain import DEFAULT_DOMAIN, resolve_domain
from jelm.lm.ledger_data import (
    SELECTIONS,
    DatasetError,
    EditSet,
    corpus_examples,
    ledger_edits,
    read_dataset,
    write_dataset,
)
from jelm.lm.train import evaluate_diffs
from jelm.lm.trainer import (
    BUCKETS,
    TrainError,
    TrainSettings,
    buckets_for,
    dataset_once,
    epoch_batches,
    finish,
    load_start,
    open_run,
    plan_steps,
    train_resumable,
)
from jelm.mutation.base import unified_diff
from jelm.options import add_options, values_of
from jelm.programs.rename import RenameError, defined_names, fresh_names, rename

__all__ = ["BUCKETS", "FinetuneConfig", "FinetuneError", "finetune", "main"]


class FinetuneError(RuntimeError):
    """Fine-tuning cannot start or go on; the message says why."""


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Everything that defines a fine-tuning run (the run directory's ``config.json``)."""

    model: str = "shipped"
    ledgers: tuple[str, ...] = ()
    domain: str = DEFAULT_DOMAIN
    select: str = "accepted"
    operators: tuple[str, ...] = ()
    held_out: float = 0.1
    seed: int = 0
    epochs: float = 3.0
    max_steps: int = 0  # 0: as many as ``epochs`` take
    lr: float = 2e-4
    warmup: int = 10
    weight_decay: float = 0.01
    clip: float = 1.0
    tokens_per_batch: int = 4096
    checkpoint_every: int = 25
    eval_every: int = 50
    eval_diffs: int = 32
    max_minutes: float = 55.0
    corpus: int = 0  # examples of the domain's own training corpus mixed in
    corpus_generated: float = 0.0  # share of corpus lineages from generated programs
    rename: float = 0.0  # share of training examples given fresh names each epoch


def _build_dataset(cfg: FinetuneConfig) -> EditSet:
    """The examples of the ledgers (and ``cfg.corpus`` examples of the domain's corpus)."""
    if not cfg.ledgers and not cfg.corpus:
        raise FinetuneError(
            "no ledgers given: pass one or more run directories or ledger files (or --corpus N)"
        )
    domain = resolve_domain(cfg.domain)
    edits = EditSet([], [])
    if cfg.ledgers:
        edits = ledger_edits(
            cfg.ledgers,
            file_name=domain.program.file_name,
            messages=domain.prompts.commit_messages,
            select=cfg.select,
            operators=cfg.operators,
            held_out=cfg.held_out,
        )
    for row in edits.ledgers:
        if "error" in row:
            print(f"jelm.lm.finetune: skipped {row['path']}: {row['error']}", file=sys.stderr)
    if cfg.corpus:
        extra = {"generated": cfg.corpus_generated} if cfg.corpus_generated else {}
        corpus = domain.corpus(cfg.corpus, cfg.seed, **extra)
        edits.examples += corpus_examples(corpus, cfg.held_out)
    if not edits.split("train"):
        counts = ", ".join(f"{r['path']}: {r['selected']}" for r in edits.ledgers)
        raise FinetuneError(f"the ledgers hold no {cfg.select!r} edits to train on ({counts})")
    return edits


def _dataset(cfg: FinetuneConfig, run: RunDir) -> tuple[EditSet, str]:
    """The run's examples: read back from ``dataset.jsonl`` if the run has one, else
    built from the ledgers (and ``cfg.corpus`` examples of the domain's corpus) and
    written there."""
    return dataset_once(
        run,
        "dataset.jsonl",
        lambda: _build_dataset(cfg),
        write_dataset,
        read_dataset,
        lambda edits, version: {"ledgers": edits.ledgers},
    )


def _renamed(
    example: CorpusExample, keep: Sequence[str], file_name: str, rng: np.random.Generator
) -> CorpusExample:
    """``example`` with the names its parent and child define replaced by fresh ones (the
    same in both), its diff rewritten; unchanged if either program cannot be renamed."""
    try:
        names = list(
            dict.fromkeys(defined_names(example.parent, keep) + defined_names(example.child, keep))
        )
        mapping = fresh_names(names, rng, avoid=names)
        parent, child = rename(example.parent, mapping), rename(example.child, mapping)
    except RenameError:
        return example
    return CorpusExample(parent, child, example.message, unified_diff(parent, child, file_name))


def _batch_stream(
    examples: Sequence[CorpusExample],
    encode_all: Callable[[Sequence[CorpusExample]], list[Any]],
    buckets: Sequence[int],
    cfg: FinetuneConfig,
    pad_id: int,
    keep: Sequence[str],
    file_name: str,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches epoch after epoch; epoch ``e`` renames (a ``cfg.rename`` share of the
    examples) and shuffles by ``(seed, e)``, so step ``s`` gets the same batch in a
    resumed run as in an uninterrupted one."""

    def epoch_data(rng: np.random.Generator) -> list[Any]:
        chosen = rng.random(len(examples)) < cfg.rename
        epoch_set = [
            _renamed(e, keep, file_name, rng) if pick else e
            for e, pick in zip(examples, chosen, strict=True)
        ]
        return encode_all(epoch_set)

    return epoch_batches(epoch_data, buckets, cfg.tokens_per_batch, pad_id, cfg.seed)


def finetune(cfg: FinetuneConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on the ledgers' edits into the run directory ``out`` (see
    the module docstring); resumes a run ``out`` already holds. Returns the summary."""
    if cfg.select not in SELECTIONS:
        raise FinetuneError(f"unknown selection {cfg.select!r}; choose one of {SELECTIONS}")
    try:
        return _finetune(cfg, out, progress)
    except (TrainError, DatasetError) as exc:
        raise FinetuneError(str(exc)) from exc


def _finetune(cfg: FinetuneConfig, out: str | Path, progress: bool) -> dict[str, Any]:
    t0 = time.time()
    with open_run(out, dataclasses.asdict(cfg)) as run:
        edits, version = _dataset(cfg, run)
        params, config, tokenizer = load_start(cfg.model)
        domain = resolve_domain(cfg.domain)
        file_name = domain.program.file_name
        buckets = buckets_for(config.n_ctx)
        train_set, held = edits.split("train"), edits.split("held_out")
        data = encode(train_set, tokenizer, config.n_ctx, file_name)
        held_data = encode(held, tokenizer, config.n_ctx, file_name)
        if not data:
            raise FinetuneError(
                f"none of the {len(train_set)} training examples fits the model's context of "
                f"{config.n_ctx} tokens"
            )
        steps = plan_steps(data, buckets, cfg.tokens_per_batch, cfg.epochs, cfg.max_steps)
        held_batches = make_batches(
            held_data, buckets, cfg.tokens_per_batch, tokenizer.pad_id, np.random.default_rng(1)
        )
        keep = (domain.program.entry,)  # the name the sandbox calls
        stream = _batch_stream(
            train_set,
            lambda xs: encode(xs, tokenizer, config.n_ctx, file_name),
            buckets,
            cfg,
            tokenizer.pad_id,
            keep,
            file_name,
        )
        trained = train_resumable(
            run,
            params,
            config,
            stream,
            held_batches,
            steps,
            TrainSettings.of(cfg),
            started=t0,
            progress=progress,
            desc="finetune",
        )
        rows, step = trained.rows, trained.step
        finish(run, trained.params, config, tokenizer, rows)
        diffs = evaluate_diffs(
            trained.params,
            config,
            tokenizer,
            held[: cfg.eval_diffs],
            jax.random.PRNGKey(cfg.seed + 1),
            file_name,
        )
        evals = [r["eval_loss"] for r in rows if r.get("eval_loss") is not None]
        summary = {
            "config": dataclasses.asdict(cfg),
            "dataset_sha256": version,
            "ledgers": edits.ledgers,
            "train_examples": len(data),
            "held_out_examples": len(held_data),
            "dropped_too_long": len(train_set) + len(held) - len(data) - len(held_data),
            "operators": dict(collections.Counter(e.operator for e in edits.examples)),
            "steps": step,
            "planned_steps": steps,
            "held_out_loss_before": rows[0].get("eval_loss") if rows else None,
            "held_out_loss": evals[-1] if evals else None,
            **diffs,
            "total_s": time.time() - t0,
        }
        (run.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.lm.finetune --ledgers RUN [RUN ...] --out DIR
    [--model shipped|<dir>|hf:<dir>] [--select accepted|valid|changed] ...``."""
    defaults = FinetuneConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the run directory")
    parser.add_argument("--ledgers", nargs="+", default=[], help="run directories or ledgers")
    parser.add_argument("--operators", nargs="*", default=[], help="keep these operators only")
    parser.add_argument("--select", choices=SELECTIONS, default=defaults.select)
    parser.add_argument("--no-progress", action="store_true")
    add_options(parser, FinetuneConfig, skip=("ledgers", "operators", "select"))
    args = parser.parse_args(argv)
    cfg = FinetuneConfig(
        **values_of(
            FinetuneConfig,
            args,
            ledgers=tuple(str(Path(p).absolute()) for p in args.ledgers),
            operators=tuple(args.operators),
        )
    )
    try:
        summary = finetune(cfg, args.out, progress=not args.no_progress)
    except FinetuneError as exc:
        print(f"jelm.lm.finetune: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
