"""Stage 2 of ELM: a language model of the walkers ELM found: ``python -m jelm.lm.stage2``
(ELM, arXiv 2206.08896v1, §6, Figs. 13 and 15).

ELM's first stage fills MAP-Elites maps with programs no model was trained on; the second
trains a language model on them and asks what it writes. This command:

1. **Data** (:func:`jelm.lm.ledger_data.elite_programs`): from the ledgers of finished
   runs, every program ever admitted to its run's map whose fitness is at least
   ``--share`` x the best of its niche across the runs (0.5, or the paper's other set
   0.8), one copy of each; runs started from the excluded seeds left out (``radial`` as
   in the paper, and ``wheel``, ``galloper`` and ``runner``, whose first lines are the
   out-of-distribution prompts of step 4); a held-out split by a hash of the text. The
   set is written once into the run directory (``dataset.jsonl``, versioned by its
   sha256, with the configuration of the runs it came from: what its niches mean).
2. **Training text.** A program is trained as the diff model reads a parent program:
   the header ``<NME> walker.py\\n<BEF>`` (the prompt, no loss), then `` `` + the program +
   ``\\n`` and EOS, with the loss on every program token and the EOS. The header is
   what an unconditional sample is prompted with; starting from the diff model (the
   default, ``shipped``), the text after ``<BEF>`` is already a walker program to it, and
   it knows the walker API and Python's tokens, which matters at CPU scale. The model's
   tokenizer is kept; ``--from-scratch`` trains a fresh model of the same shape.
3. **Training** (:mod:`jelm.lm.trainer`, as fine-tuning): AdamW, warm-up and cosine
   decay, orbax checkpoints, ``train.jsonl``, held-out loss, a deadline; the same command
   again after a crash or ``kill -9`` resumes and ends with the uninterrupted run's model.
4. **Evaluation.** ``--samples`` programs sampled from the header alone (``--temperature``,
   ``--top-p``) with :class:`jelm.lm.sampling.Sampler`, run and scored as the ELM loop
   evaluates its candidates (:meth:`jelm.qd.loop.HostLoop.evaluate`: the runs' domain,
   sandbox and simulator) and inserted into a fresh map with the runs' archive
   (:meth:`jelm.qd.loop.HostLoop.tell`): the share valid, the fitness distribution, and
   the niches filled and QD-score of that map beside the dataset's own (Fig. 13). Then
   out of distribution (Fig. 15): for each of ``--ood-seeds``, its first lines (up to
   and including ``def make_walker():``, or ``--ood-lines`` lines) as the prompt,
   ``--ood-samples`` completions each, their share valid and fitness beside the seed's.

The run directory holds ``config.json``, ``dataset.jsonl`` and ``dataset.json``,
``checkpoints/``, ``train.jsonl``, ``loss.png``, ``model/`` (a jelm model directory),
``samples.jsonl`` (every sample: text, status, fitness, niche), ``samples.png`` (fitness
of the samples against the dataset's, and of each out-of-distribution seed's completions)
and ``summary.json``. ``--evaluate-only`` evaluates the saved model again, without
training: as the run did, unless evaluation options (:data:`EVALUATION`) are given.
``--preset cpu`` (default) fits a 2-core CPU in an hour; ``--preset paper`` is the
paper's scale for accelerators (jelm/lm/README.md says why).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jelm.lm.checkpoint import ModelLoadError, load_model
from jelm.lm.data import Encoded
from jelm.lm.ledger_data import (
    DatasetError,
    EliteSet,
    elite_programs,
    read_elites,
    write_elites,
)
from jelm.lm.trainer import (
    TrainError,
    TrainSettings,
    buckets_for,
    dataset_once,
    epoch_batches,
    finish,
    held_out_batches,
    load_start,
    open_run,
    plan_steps,
    train_resumable,
)
from jelm.options import add_options, values_of
from jelm.programs.diff import BEF, DFF, EOS, MSG, NME

__all__ = [
    "EVALUATION",
    "OOD_SEEDS",
    "PRESETS",
    "Stage2Config",
    "Stage2Error",
    "encode_programs",
    "main",
    "ood_prefix",
    "program_header",
    "program_of",
    "stage2",
]

#: The seeds whose first lines prompt the out-of-distribution completions (Fig. 15).
OOD_SEEDS = ("wheel", "galloper", "runner")

#: Fitness quantiles the summary reports.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class Stage2Error(RuntimeError):
    """Stage 2 cannot start or go on; the message says why."""


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    """Everything that defines a stage-2 run (the run directory's ``config.json``); the
    defaults are the ``cpu`` preset. The fields in :data:`EVALUATION` may change between
    runs of one directory (``--evaluate-only`` samples the saved model again)."""

    model: str = "shipped"
    from_scratch: bool = False
    ledgers: tuple[str, ...] = ()
    share: float = 0.5
    exclude_seeds: tuple[str, ...] = ("radial", *OOD_SEEDS)
    held_out: float = 0.05
    seed: int = 0
    epochs: float = 4.0
    max_steps: int = 600  # 0: as many as ``epochs`` take
    lr: float = 5e-4
    warmup: int = 30
    weight_decay: float = 0.01
    clip: float = 1.0
    tokens_per_batch: int = 4096
    checkpoint_every: int = 25
    eval_every: int = 100
    max_minutes: float = 30.0
    # evaluation
    samples: int = 1024
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 1280
    max_batch: int = 32
    ood_seeds: tuple[str, ...] = OOD_SEEDS
    ood_samples: int = 32
    ood_lines: int = 0  # 0: up to and including ``def make_walker():``
    eval_batch: int = 64

    def problems(self) -> list[str]:
        """What is wrong with these values (empty when they can run)."""
        out = []
        if not 0.0 < self.share <= 1.0:
            out.append(f"share must be in (0, 1], got {self.share}")
        if not 0.0 <= self.held_out < 1.0:
            out.append(f"held_out must be in [0, 1), got {self.held_out}")
        if self.temperature < 0:
            out.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            out.append(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("samples", "ood_samples", "ood_lines", "max_steps"):
            if getattr(self, name) < 0:
                out.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "max_new_tokens",
            "max_batch",
            "eval_batch",
            "tokens_per_batch",
            "checkpoint_every",
            "eval_every",
        ):
            if getattr(self, name) < 1:
                out.append(f"{name} must be >= 1, got {getattr(self, name)}")
        return out


#: The fields a resumed or re-evaluated run may change: they decide only the evaluation.
EVALUATION = (
    "samples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "max_batch",
    "ood_seeds",
    "ood_samples",
    "ood_lines",
    "eval_batch",
)

#: ``--preset``: values that replace the defaults (options given explicitly win). ``cpu``
#: is the defaults, sized from short measured runs to finish within an hour on a 2-core
#: CPU; ``paper`` the paper's data settings at an accelerator's scale, for a pretrained
#: code model (``--model hf:<dir>``). jelm/lm/README.md gives the numbers and why.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {
        "epochs": 3.0,
        "max_steps": 0,
        "lr": 1e-4,
        "warmup": 200,
        "tokens_per_batch": 65536,
        "checkpoint_every": 200,
        "eval_every": 500,
        "max_minutes": 24 * 60.0,
        "held_out": 0.02,
        "max_new_tokens": 2048,
        "max_batch": 256,
        "ood_samples": 256,
        "eval_batch": 256,
    },
}


# ---------------------------------------------------------------------------------------
# The training text


def program_header(file_name: str) -> str:
    """The prompt of every program: the diff format's file line and ``<BEF>`` (§3.1), as
    the diff model reads a parent program."""
    return f"{NME} {file_name}\n{BEF}"


def _program_text(program: str) -> str:
    """What follows the header: the program after one space (as ``<BEF> {program}``
    tokenizes in a diff prompt), ending in one newline."""
    return " " + program.rstrip("\n") + "\n"


def encode_programs(
    programs: Sequence[str], tokenizer: Any, n_ctx: int, file_name: str
) -> list[Encoded]:
    """Tokenized training examples: the header (no loss) and the program with EOS (loss
    on every token); programs longer than the context are dropped."""
    head = tokenizer.encode(program_header(file_name))
    out = []
    for program in programs:
        body = [*tokenizer.encode(_program_text(program)), tokenizer.eos_id]
        if len(head) + len(body) > n_ctx:
            continue
        mask = np.zeros(len(head) + len(body), np.float32)
        mask[len(head) :] = 1.0
        out.append(Encoded(np.asarray(head + body, np.int32), mask))
    return out


def _cut(completion: str) -> str:
    """``completion`` up to its first EOS or marker of the diff format (the model went
    on to another section)."""
    cut = len(completion)
    for marker in (EOS, NME, BEF, MSG, DFF):
        at = completion.find(marker)
        if at != -1:
            cut = min(cut, at)
    return completion[:cut]


def program_of(completion: str) -> str:
    """The program a completion of the header holds: cut at the first EOS or marker of
    the diff format, the leading space of the training text dropped."""
    text = _cut(completion)
    return text[1:] if text.startswith(" ") else text


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The tokens that end a sampled program: EOS and the diff format's markers (the
    model went on to another section)."""
    stops = [tokenizer.eos_id]
    for marker in (NME, BEF, MSG, DFF):
        tid = tokenizer.token_id(marker)
        if tid is not None and tid not in stops:
            stops.append(tid)
    return stops


def ood_prefix(program: str, entry: str, lines: int = 0) -> str:
    """The first lines of ``program`` that prompt a completion out of distribution
    (Fig. 15): up to and including the line ``def {entry}(...):`` (``lines`` = 0), or
    the first ``lines`` lines. Without the last newline: the prompt ends where a token
    of the whole program ends, so its tokens are the program's first tokens."""
    rows = program.splitlines()
    if lines > 0:
        return "\n".join(rows[:lines])
    for k, row in enumerate(rows):
        if row.startswith(f"def {entry}("):
            return "\n".join(rows[: k + 1])
    raise Stage2Error(f"the program defines no {entry}() to complete: give --ood-lines N")


# ---------------------------------------------------------------------------------------
# Data


def _build_dataset(cfg: Stage2Config) -> EliteSet:
    """The elite programs of the ledgers, and the configuration of the runs they came
    from (read from the first ledger that gave programs)."""
    from jelm.qd.ledger import Ledger, LedgerError

    if not cfg.ledgers:
        raise Stage2Error("no ledgers given: pass one or more run directories or ledger files")
    programs, report = elite_programs(
        cfg.ledgers, share=cfg.share, exclude_seeds=cfg.exclude_seeds, held_out=cfg.held_out
    )
    for row in report:
        if "error" in row:
            print(f"jelm.lm.stage2: skipped {row['path']}: {row['error']}", file=sys.stderr)
    readable = [r for r in report if "error" not in r]
    if not programs:
        if readable and all("excluded" in r for r in readable):
            seeds = sorted({s for r in readable for s in r["excluded"]})
            raise Stage2Error(
                f"every readable ledger is a run started from an excluded seed "
                f"({', '.join(seeds)}); --exclude-seeds sets the exclusions"
            )
        counts = ", ".join(f"{r['path']}: {r.get('programs', 0)}" for r in report)
        raise Stage2Error(
            f"the ledgers hold no valid program admitted to a run's map, so none passes the "
            f"share bar of {cfg.share} ({counts})"
        )
    source = next(r["path"] for r in readable if r["programs"])
    try:
        with Ledger(source, readonly=True) as ledger:
            run_config = ledger.run_config
    except (LedgerError, OSError) as exc:
        raise Stage2Error(f"cannot read {source} again: {exc}") from exc
    if run_config is None:
        raise Stage2Error(
            f"{source} records no run configuration: the archive its niches belong to "
            "cannot be rebuilt"
        )
    return EliteSet(programs, cfg.share, tuple(cfg.exclude_seeds), cfg.held_out, run_config, report)


def _describe(elites: EliteSet, version: str) -> dict[str, Any]:
    """``dataset.json``: the counts and the report per ledger."""
    return {
        "programs": len(elites.programs),
        "train": len(elites.split("train")),
        "held_out": len(elites.split("held_out")),
        "share": elites.share,
        "exclude_seeds": list(elites.exclude_seeds),
        "ledgers": elites.ledgers,
    }


# ---------------------------------------------------------------------------------------
# Evaluation


def fitness_stats(values: Sequence[float]) -> dict[str, Any]:
    """Count, mean, min, max and quantiles of a list of fitness values."""
    if not len(values):
        return {"n": 0}
    v = np.asarray(values, np.float64)
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        "quantiles": {str(q): float(np.quantile(v, q)) for q in QUANTILES},
    }


def map_stats(niches: Sequence[int], fitness: Sequence[float], archive: Any) -> dict[str, Any]:
    """The figures of the map that ``(niche, fitness)`` pairs fill (the dataset's: its
    programs' niches and fitness as their runs recorded them), as the archive's metrics
    define them: niches filled, coverage, QD-score (the sum over filled niches of the
    best fitness minus the fitness offset), best fitness, and the filled niches."""
    best: dict[int, float] = {}
    for n, f in zip(niches, fitness, strict=True):
        if n >= 0:
            best[int(n)] = max(best.get(int(n), -np.inf), float(f))
    offset = archive.config.fitness_offset
    return {
        "filled": len(best),
        "coverage": len(best) / archive.n_cells,
        "qd_score": float(sum(f - offset for f in best.values())),
        "max_fitness": max(best.values()) if best else None,
        "niches": sorted(best),
    }


def _sample(
    params: Any,
    config: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    key: jax.Array,
    cfg: Stage2Config,
    progress: bool,
    desc: str,
) -> tuple[list[Any], float]:
    """One :class:`jelm.lm.sampling.Generation` per prompt (prompt ``i`` sampled with
    ``fold_in(key, i)``, as :func:`jelm.lm.sampling.generate` does) and the seconds it
    took; a progress bar counts the finished samples."""
    from tqdm import tqdm

    from jelm.lm.sampling import Sampler

    if not prompts:
        return [], 0.0
    room = config.n_ctx - max(len(p) for p in prompts)
    if room < 1:
        raise Stage2Error(f"a prompt fills the model's context of {config.n_ctx} tokens")
    stops = stop_token_ids(tokenizer)
    t0 = time.perf_counter()
    sampler = Sampler(
        params,
        config,
        max_new_tokens=min(cfg.max_new_tokens, room),
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        stop_token_ids=stops,
        pad_id=tokenizer.pad_id,
        max_batch=cfg.max_batch,
    )
    keys = np.asarray(
        jax.random.key_data(
            jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, np.arange(len(prompts)))
        )
    )
    ids = sampler.add(list(prompts), keys)
    results: dict[int, Any] = {}
    with tqdm(total=len(prompts), desc=desc, disable=not progress) as bar:
        while sampler.busy:
            done = sampler.run()
            results.update(done)
            bar.update(len(done))
    return [results[i] for i in ids], time.perf_counter() - t0


def _evaluate(loop: Any, state: Any, programs: Sequence[str], generation: int) -> tuple:
    """Run, score and insert ``programs`` as the ELM loop does its candidates, a batch
    at a time (the last one padded with empty children, so every call has one shape);
    returns the new archive state, the ledger records and each program's niche (-1: not
    in the map)."""
    from jelm.mutation.base import Child

    records: list[Any] = []
    niches: list[int] = []
    for start in range(0, len(programs), loop.batch):
        part = programs[start : start + loop.batch]
        children = [Child((), "stage2", p) for p in part]
        children += [Child((), "stage2", None, error="padding")] * (loop.batch - len(part))
        ev = loop.evaluate(children, generation + start // loop.batch)
        ids = list(range(start, start + loop.batch))
        state, _, niche = loop.tell(state, ev, ids)
        records += ev.records[: len(part)]
        niches += [int(n) for n in niche[: len(part)]]
    return state, records, niches


def _rows(
    kind: str,
    seeds: Sequence[str | None],
    programs: Sequence[str],
    generations: Sequence[Any],
    records: Sequence[Any],
    niches: Sequence[int],
    training: set[str],
) -> list[dict[str, Any]]:
    """``samples.jsonl``'s rows: each sample's kind (``sample`` or ``ood``), the seed it
    completes, its text, what the evaluation made of it and how its sampling ended."""
    return [
        {
            "kind": kind,
            "seed": seed,
            "index": k,
            "text": program,
            "status": record.status,
            "error": record.error,
            "fitness": record.fitness,
            "niche": niche if niche >= 0 else None,
            "descriptors": record.descriptors or None,
            "tokens": len(gen.tokens),
            "finish": gen.finish_reason,
            "copy_of_training": program.rstrip("\n") in training,
        }
        for k, (seed, program, gen, record, niche) in enumerate(
            zip(seeds, programs, generations, records, niches, strict=True)
        )
    ]


def _shares(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Share valid, statuses and the fitness of the valid ones, of some sample rows."""
    n = max(1, len(rows))
    valid = [r["fitness"] for r in rows if r["status"] == "ok" and r["fitness"] is not None]
    return {
        "n": len(rows),
        "valid": len(valid) / n,
        "statuses": dict(collections.Counter(r["status"] for r in rows).most_common()),
        "fitness": fitness_stats(valid),
        "copies_of_training": sum(r["copy_of_training"] for r in rows) / n,
        "hit_max_new_tokens": sum(r["finish"] == "length" for r in rows) / n,
    }


def evaluate_model(
    params: Any,
    config: Any,
    tokenizer: Any,
    space: tuple[Any, Any, Any],
    elites: EliteSet,
    cfg: Stage2Config,
    out: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Stage 2's evaluation (module docstring, step 4) of a model in the runs' ``space``:
    their domain, archive and sandbox settings (:func:`_space`). Writes ``samples.jsonl``
    and ``samples.png`` in ``out`` and returns the summary's evaluation part."""
    from jelm.programs.sandbox import Sandbox, SandboxLimits
    from jelm.qd.loop import HostLoop

    domain, archive, sandbox = space
    file_name, entry = domain.program.file_name, domain.program.entry
    seeds = {s: domain.seed_program(s) for s in cfg.ood_seeds}
    head = tokenizer.encode(program_header(file_name))
    key = jax.random.PRNGKey(cfg.seed + 1)
    t0 = time.perf_counter()
    gens, sample_s = _sample(
        params, config, tokenizer, [head] * cfg.samples, key, cfg, progress, "samples"
    )
    programs = [program_of(tokenizer.decode(g.tokens)) for g in gens]
    prefixes = {s: ood_prefix(text, entry, cfg.ood_lines) for s, text in seeds.items()}
    # the header and the prefix after one space, as the prefix's program is trained
    ood_prompts = [
        head + tokenizer.encode(" " + prefixes[s])
        for s in cfg.ood_seeds
        for _ in range(cfg.ood_samples)
    ]
    ood_gens, ood_s = _sample(
        params, config, tokenizer, ood_prompts, jax.random.fold_in(key, 1), cfg, progress, "ood"
    )
    ood_names = [s for s in cfg.ood_seeds for _ in range(cfg.ood_samples)]
    ood_programs = [
        prefixes[s] + _cut(tokenizer.decode(g.tokens))
        for s, g in zip(ood_names, ood_gens, strict=True)
    ]
    t1 = time.perf_counter()
    limits = SandboxLimits(timeout_s=float(sandbox.timeout_s))
    with Sandbox(program=domain.program, workers=sandbox.workers, limits=limits) as sb:
        loop = HostLoop(domain, None, archive, sb, cfg.eval_batch, cfg.seed)
        state, records, niches = _evaluate(loop, loop.init(), programs, 0)
        metrics = archive.metrics(state)
        _, ood_records, ood_niches = _evaluate(
            loop, loop.init(), [*ood_programs, *seeds.values()], 1 + len(programs)
        )
    evaluate_s = time.perf_counter() - t1
    training = {p.program.rstrip("\n") for p in elites.split("train")}
    rows = _rows("sample", [None] * len(programs), programs, gens, records, niches, training)
    ood_rows = _rows(
        "ood",
        ood_names,
        ood_programs,
        ood_gens,
        ood_records[: len(ood_programs)],
        ood_niches[: len(ood_programs)],
        training,
    )
    tmp = out / "samples.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in [*rows, *ood_rows]))
    tmp.replace(out / "samples.jsonl")
    seed_records = ood_records[len(ood_programs) :]
    ood = {}
    for name, record in zip(cfg.ood_seeds, seed_records, strict=True):
        ood[name] = {
            "prompt_lines": prefixes[name].count("\n") + 1,
            "seed_status": record.status,
            "seed_fitness": record.fitness,
            **_shares([r for r in ood_rows if r["seed"] == name]),
        }
    ours = {
        "filled": int(metrics["filled"]),
        "coverage": float(metrics["coverage"]),
        "qd_score": float(metrics["qd_score"]),
        "max_fitness": float(metrics["max_fitness"]) if int(metrics["filled"]) else None,
    }
    theirs = map_stats(
        [p.niche for p in elites.programs], [p.fitness for p in elites.programs], archive
    )
    mine, known = {n for n in niches if n >= 0}, set(theirs.pop("niches"))
    tokens = sum(len(g.tokens) for g in gens) + sum(len(g.tokens) for g in ood_gens)
    evaluation = {
        "samples": _shares(rows),
        "dataset_fitness": fitness_stats([p.fitness for p in elites.programs]),
        "maps": {
            "samples": ours,
            "dataset": theirs,
            "niches_in_both": len(mine & known),
            "niches_new": len(mine - known),
            "cells": archive.n_cells,
        },
        "ood": ood,
        "sample_s": sample_s,
        "ood_sample_s": ood_s,
        "tokens_sampled": tokens,
        "tokens_per_s": tokens / max(sample_s + ood_s, 1e-9),
        "evaluate_s": evaluate_s,
        "evaluation_s": time.perf_counter() - t0,
    }
    plot_samples(rows, ood_rows, elites, ood, out / "samples.png")
    return evaluation


def plot_samples(
    rows: Sequence[dict[str, Any]],
    ood_rows: Sequence[dict[str, Any]],
    elites: EliteSet,
    ood: dict[str, dict[str, Any]],
    path: Path,
) -> None:
    """``samples.png``: the fitness histogram of the valid samples against the dataset's
    programs (densities, shared bins; Fig. 13), and the fitness of each out-of-distribution
    seed's valid completions beside the seed's own (Fig. 15)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [r["fitness"] for r in rows if r["status"] == "ok"]
    theirs = [p.fitness for p in elites.programs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    both = np.asarray([*ours, *theirs], np.float64)
    bins = np.linspace(both.min(), both.max(), 40) if both.size else 10
    left.hist(theirs, bins=bins, density=True, alpha=0.5, label=f"dataset ({len(theirs)})")
    if ours:
        left.hist(ours, bins=bins, density=True, alpha=0.5, label=f"valid samples ({len(ours)})")
    left.set_xlabel("fitness")
    left.set_ylabel("density")
    n = max(1, len(rows))
    left.set_title(f"unconditional samples: {100 * len(ours) / n:.0f}% of {len(rows)} valid")
    left.legend()
    for x, (name, info) in enumerate(ood.items()):
        values = [r["fitness"] for r in ood_rows if r["seed"] == name and r["status"] == "ok"]
        right.scatter(np.full(len(values), x) + np.linspace(-0.2, 0.2, len(values)), values, s=8)
        if info["seed_fitness"] is not None:
            right.plot([x - 0.3, x + 0.3], [info["seed_fitness"]] * 2, "k-", lw=2)
    right.set_xticks(range(len(ood)))
    right.set_xticklabels([f"{k}\n{100 * v['valid']:.0f}% valid" for k, v in ood.items()])
    right.set_ylabel("fitness (bar: the seed's own)")
    right.set_title("completions of the seeds' first lines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# The run


def stage2(
    cfg: Stage2Config, out: str | Path, progress: bool = True, evaluate_only: bool = False
) -> dict[str, Any]:
    """Build the dataset, train, evaluate (the module docstring) in the run directory
    ``out``; resumes a run ``out`` holds. With ``evaluate_only``, evaluates the model the
    run saved. Returns the summary (also ``summary.json``)."""
    from jelm.experiments.config import ConfigError

    problems = cfg.problems()
    if problems:
        raise Stage2Error("; ".join(problems))
    try:
        return _stage2(cfg, Path(out), progress, evaluate_only)
    except (TrainError, DatasetError, ConfigError, ModelLoadError) as exc:
        raise Stage2Error(str(exc)) from exc


def _space(elites: EliteSet) -> tuple[Any, Any, Any]:
    """The domain, the archive and the sandbox settings of the runs a dataset came from:
    their candidates are evaluated and placed as those runs placed theirs."""
    from jelm.experiments.run import build_space, recorded_config

    run_config = recorded_config(elites.run_config)
    domain, archive = build_space(run_config)
    return domain, archive, run_config.sandbox


def _stage2(cfg: Stage2Config, out: Path, progress: bool, evaluate_only: bool) -> dict[str, Any]:
    t0 = time.time()
    if evaluate_only and not (out / "model" / "config.json").is_file():
        raise Stage2Error(f"{out} holds no trained model: run without --evaluate-only first")
    with open_run(out, dataclasses.asdict(cfg), resume_ignore=EVALUATION) as run:
        elites, version = dataset_once(
            run, "dataset.jsonl", lambda: _build_dataset(cfg), write_elites, read_elites, _describe
        )
        space = _space(elites)
        domain = space[0]
        for name in cfg.ood_seeds:
            try:
                ood_prefix(domain.seed_program(name), domain.program.entry, cfg.ood_lines)
            except ValueError as exc:
                raise Stage2Error(f"--ood-seeds: {exc}") from exc
        if evaluate_only:
            params, config, tokenizer = load_model(run.path / "model")
            old = run.path / "summary.json"
            training = json.loads(old.read_text()).get("training", {}) if old.is_file() else {}
        else:
            params, config, tokenizer, training = _train(cfg, run, elites, domain, t0, progress)
        evaluation = evaluate_model(
            params, config, tokenizer, space, elites, cfg, run.path, progress
        )
        summary = {
            "config": dataclasses.asdict(cfg),
            "dataset_sha256": version,
            "dataset": _describe(elites, version) | {"ledgers": elites.ledgers},
            "training": training,
            **evaluation,
            "total_s": time.time() - t0,
        }
        (run.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _train(
    cfg: Stage2Config, run: Any, elites: EliteSet, domain: Any, t0: float, progress: bool
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Train the model on the dataset's programs in ``run`` (resuming); returns the
    trained parameters, the model's config and tokenizer, and the training summary."""
    params, config, tokenizer = load_start(cfg.model)
    if cfg.from_scratch:
        from jelm.lm.model import init_params

        params = init_params(config, jax.random.PRNGKey(cfg.seed))
    file_name = domain.program.file_name
    train_set = [p.program for p in elites.split("train")]
    held = [p.program for p in elites.split("held_out")]
    data = encode_programs(train_set, tokenizer, config.n_ctx, file_name)
    held_data = encode_programs(held, tokenizer, config.n_ctx, file_name)
    if not data:
        raise Stage2Error(
            f"none of the {len(train_set)} training programs fits the model's context of "
            f"{config.n_ctx} tokens"
        )
    buckets = buckets_for(config.n_ctx)
    steps = plan_steps(data, buckets, cfg.tokens_per_batch, cfg.epochs, cfg.max_steps)
    held_batches = held_out_batches(held_data, buckets, cfg.tokens_per_batch, tokenizer.pad_id)
    stream = epoch_batches(
        lambda rng: data, buckets, cfg.tokens_per_batch, tokenizer.pad_id, cfg.seed
    )
    t_train = time.time()
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
        desc="stage2",
    )
    finish(
        run,
        trained.params,
        config,
        tokenizer,
        trained.rows,
        ylabel="loss on program tokens (nats)",
        title="jelm stage 2: whole programs",
    )
    evals = [r["eval_loss"] for r in trained.rows if r.get("eval_loss") is not None]
    training = {
        "train_programs": len(data),
        "held_out_programs": len(held_data),
        "dropped_too_long": len(train_set) + len(held) - len(data) - len(held_data),
        "tokens_per_program": float(np.mean([len(e.tokens) for e in data])),
        "steps": trained.step,
        "planned_steps": steps,
        "held_out_loss_before": trained.rows[0].get("eval_loss") if trained.rows else None,
        "held_out_loss": evals[-1] if evals else None,
        "train_s": time.time() - t_train,
        "parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(trained.params))),
    }
    return trained.params, config, tokenizer, training


def _stored_defaults(out: Path) -> dict[str, Any]:
    """The configuration a run directory holds, as defaults of ``--evaluate-only`` (the
    evaluation options given on the command line replace its ones);
    :class:`Stage2Error` if it holds none."""
    path = out / "config.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Stage2Error(f"{path} cannot be read ({exc}): is {out} a stage-2 run?") from exc
    fields = {f.name for f in dataclasses.fields(Stage2Config)}
    return {k: v for k, v in stored.items() if k in fields}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.lm.stage2 --out DIR --ledgers RUN [RUN ...]
    [--preset cpu|paper] [--share 0.5] [--model shipped|<dir>|hf:<dir>] ...``."""
    defaults = Stage2Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the run directory")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--ledgers", nargs="+", default=[], help="run directories or ledgers")
    parser.add_argument("--exclude-seeds", nargs="*", default=list(defaults.exclude_seeds))
    parser.add_argument("--ood-seeds", nargs="*", default=list(defaults.ood_seeds))
    parser.add_argument("--from-scratch", action="store_true", help="a fresh model, same shape")
    parser.add_argument(
        "--evaluate-only", action="store_true", help="evaluate the run's saved model again"
    )
    parser.add_argument("--no-progress", action="store_true")
    add_options(
        parser, Stage2Config, skip=("ledgers", "exclude_seeds", "ood_seeds", "from_scratch")
    )
    first, _ = parser.parse_known_args(argv)
    try:
        parser.set_defaults(**PRESETS[first.preset])
        if first.evaluate_only:
            parser.set_defaults(**_stored_defaults(first.out))
        args = parser.parse_args(argv)
        cfg = Stage2Config(
            **values_of(
                Stage2Config,
                args,
                ledgers=tuple(str(Path(p).absolute()) for p in args.ledgers),
                exclude_seeds=tuple(args.exclude_seeds),
                ood_seeds=tuple(args.ood_seeds),
            )
        )
        summary = stage2(
            cfg, args.out, progress=not args.no_progress, evaluate_only=args.evaluate_only
        )
    except Stage2Error as exc:
        print(f"jelm.lm.stage2: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config", "dataset")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
