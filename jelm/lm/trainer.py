"""The resumable training loop that fine-tuning (ELM §5) and stage 2 (§6) share.

A training command (:mod:`jelm.lm.finetune`, :mod:`jelm.lm.stage2`) owns its data and
its summary; everything between is here:

- :func:`open_run`: the run directory (:class:`jelm.io.rundir.RunDir`): ``config.json``
  written once and checked on resume, locked while a process trains in it;
- :func:`dataset_once`: the training set built once and written into the run directory
  with its sha256, read back on resume (a resumed run trains on the same data even if
  its sources grew);
- :func:`load_start`: the starting checkpoint (``shipped``, a jelm directory, ``hf:<dir>``);
- :func:`plan_steps`, :func:`make_optimizer`: steps of ``epochs`` (or ``max_steps``),
  AdamW with warm-up, cosine decay to a tenth of the peak and gradient clipping;
- :func:`epoch_batches`: static-shape batches epoch after epoch, epoch ``e`` shuffled by
  ``(seed, e)``, so step ``s`` gets the same batch in a resumed run as in an
  uninterrupted one;
- :func:`held_out_batches`: a held-out set in batches of the training shapes, whole;
- :func:`train_resumable`: the loop: orbax checkpoints (parameters, optimizer state,
  step) every ``checkpoint_every`` steps, ``train.jsonl`` rows, held-out loss every
  ``eval_every`` steps, a deadline of ``max_minutes``; a run killed (``kill -9``) and
  started again resumes from the newest checkpoint and ends with the weights an
  uninterrupted run ends with;
- :func:`finish`: the model directory (``model/``) and ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np
import optax

from jelm.io.checkpoint import CheckpointError, Checkpoints
from jelm.io.rundir import RunDir, RunDirError
from jelm.lm.checkpoint import ModelLoadError, save_model
from jelm.lm.data import Encoded, batch_of, by_bucket, make_batches
from jelm.lm.ledger_data import dataset_version
from jelm.lm.train import loss_fn, make_step, plot_loss

__all__ = [
    "BUCKETS",
    "TrainError",
    "TrainResult",
    "TrainSettings",
    "buckets_for",
    "dataset_once",
    "epoch_batches",
    "finish",
    "held_out_batches",
    "load_start",
    "make_optimizer",
    "open_run",
    "plan_steps",
    "read_rows",
    "train_resumable",
    "write_rows",
]

#: Sequence-length buckets of the training batches, cut at the model's context.
BUCKETS = (512, 768, 1024, 1536, 2048, 3072, 4096)

#: The learning rate the cosine decay ends at, as a share of the peak.
FINAL_LR_SHARE = 0.1

T = TypeVar("T")
Batch = tuple[np.ndarray, np.ndarray]


class TrainError(RuntimeError):
    """Training cannot start or go on; the message says why."""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The optimisation settings a training command's configuration carries (its fields
    of these names: :meth:`of`)."""

    seed: int = 0
    lr: float = 2e-4
    warmup: int = 10
    weight_decay: float = 0.01
    clip: float = 1.0
    tokens_per_batch: int = 4096
    checkpoint_every: int = 25
    eval_every: int = 50
    max_minutes: float = 55.0

    @classmethod
    def of(cls, cfg: Any) -> TrainSettings:
        """The settings of a configuration object with fields of the same names."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_resumable` ends with: the parameters, every ``train.jsonl`` row
    (step 0's held-out loss first) and the last step trained."""

    params: Any
    rows: list[dict[str, Any]]
    step: int


def open_run(out: str | Path, config: Mapping[str, Any], resume_ignore: tuple[str, ...] = ()):
    """The run directory ``out`` for ``config`` (created, or checked against the config
    it holds); :class:`TrainError` when it holds another configuration or is in use."""
    try:
        return RunDir(out, config, resume_ignore=resume_ignore)
    except RunDirError as exc:
        raise TrainError(str(exc)) from exc


def dataset_once(
    run: RunDir,
    name: str,
    build: Callable[[], T],
    write: Callable[[Path, T], str],
    read: Callable[[Path], T],
    describe: Callable[[T, str], Mapping[str, Any]] = lambda data, version: {},
) -> tuple[T, str]:
    """The run's training set and its version (sha256): read back from ``<run>/<name>``
    if the run has it, else made by ``build``, written by ``write`` (which returns the
    file's sha256) and described in ``<run>/<stem>.json`` (``sha256`` and ``describe``'s
    keys). The file is written whole or not at all, so a kill leaves none or all of it."""
    path = run.path / name
    if path.is_file():
        return read(path), dataset_version(path)
    data = build()
    version = write(path, data)
    meta = {"sha256": version, **describe(data, version)}
    (run.path / f"{Path(name).stem}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return data, version


def load_start(model: str) -> tuple[Any, Any, Any]:
    """``(params, config, tokenizer)`` of the starting checkpoint: ``shipped``, a jelm
    model directory or ``hf:<dir>`` (:class:`TrainError` naming the problem)."""
    from jelm.lm.backends import make_backend, model_spec

    try:
        backend = make_backend(model_spec(model))
    except (ModelLoadError, FileNotFoundError, OSError, ValueError) as exc:
        raise TrainError(f"cannot load the starting model {model!r}: {exc}") from exc
    return backend.params, backend.config, backend.tokenizer


def buckets_for(n_ctx: int) -> tuple[int, ...]:
    """The sequence-length buckets of a model with context ``n_ctx``."""
    return (*(b for b in BUCKETS if b < n_ctx), n_ctx)


def plan_steps(
    data: Sequence[Encoded],
    buckets: Sequence[int],
    tokens_per_batch: int,
    epochs: float,
    max_steps: int,
) -> int:
    """The steps of ``epochs`` passes over ``data`` (at least one), at most ``max_steps``
    when that is set."""
    per_epoch = len(make_batches(data, buckets, tokens_per_batch, 0, np.random.default_rng(0)))
    steps = max(1, math.ceil(epochs * per_epoch))
    return min(steps, max_steps) if max_steps else steps


def make_optimizer(settings: TrainSettings, steps: int) -> optax.GradientTransformation:
    """AdamW (b2 0.98) after clipping the global gradient norm, its learning rate warmed
    up over ``warmup`` steps and decayed by a cosine to a tenth of the peak at ``steps``."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        settings.lr,
        min(settings.warmup, steps - 1),
        max(steps, settings.warmup + 1),
        settings.lr * FINAL_LR_SHARE,
    )
    return optax.chain(
        optax.clip_by_global_norm(settings.clip),
        optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=settings.weight_decay),
    )


def epoch_batches(
    epoch_data: Callable[[np.random.Generator], Sequence[Encoded]],
    buckets: Sequence[int],
    tokens_per_batch: int,
    pad_id: int,
    seed: int,
) -> Iterator[Batch]:
    """Batches epoch after epoch: epoch ``e`` draws from ``np.random.default_rng([seed,
    e])``, first in ``epoch_data`` (the epoch's encoded examples, e.g. some renamed),
    then to shuffle them into batches, so the stream is the same run to run."""
    epoch = 0
    while True:
        rng = np.random.default_rng([seed, epoch])
        data = epoch_data(rng)
        yield from make_batches(data, buckets, tokens_per_batch, pad_id, rng)
        epoch += 1


def held_out_batches(
    data: Sequence[Encoded], buckets: Sequence[int], tokens_per_batch: int, pad_id: int
) -> list[Batch]:
    """Every example of ``data`` in batches of the training shapes (a bucket's last batch
    filled up with padding rows that carry no loss), in order: a held-out set of a few
    examples is measured whole, where :func:`jelm.lm.data.make_batches` would leave out
    the ones that do not fill a batch."""
    grouped = by_bucket(data, buckets)
    batches = []
    for length in sorted(grouped):
        items = grouped[length]
        rows = max(1, tokens_per_batch // length)
        for start in range(0, len(items), rows):
            batches.append(batch_of(items[start : start + rows], rows, length, pad_id))
    return batches


def train_resumable(
    run: RunDir,
    params: Any,
    config: Any,
    stream: Iterator[Batch],
    held_batches: Sequence[Batch],
    steps: int,
    settings: TrainSettings,
    *,
    started: float,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``params`` for ``steps`` steps on ``stream`` (its batches from step 0) in
    ``run``, resuming from the newest checkpoint there; see the module docstring. The
    deadline is ``settings.max_minutes`` after ``started`` (a ``time.time()``): reaching
    it saves a checkpoint and ends the loop early, and the next run goes on from there."""
    from tqdm import tqdm

    optimizer = make_optimizer(settings, steps)
    state = {"params": params, "opt_state": optimizer.init(params)}
    step_fn = make_step(config, optimizer)
    eval_fn = jax.jit(loss_fn, static_argnums=1)

    def held_out_loss(p: Any) -> float | None:
        if not held_batches:
            return None
        return float(np.mean([float(eval_fn(p, config, t, m)) for t, m in held_batches]))

    start = 0
    log_path = run.path / "train.jsonl"
    with Checkpoints(run.checkpoint_dir, keep=2) as ckpts:
        if ckpts.latest_step() is not None:
            try:
                start, state = ckpts.restore(state)
            except CheckpointError as exc:
                raise TrainError(f"cannot resume {run.path}: {exc}") from exc
        rows = read_rows(log_path, start)
        if start == 0:
            rows = [{"step": 0, "eval_loss": held_out_loss(state["params"]), "time_s": 0.0}]
        for _ in range(start):
            next(stream)
        bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress)
        deadline = started + settings.max_minutes * 60
        step = start
        while step < steps:
            tokens, mask = next(stream)
            p, o, loss = step_fn(state["params"], state["opt_state"], tokens, mask)
            state = {"params": p, "opt_state": o}
            step += 1
            row: dict[str, Any] = {"step": step, "loss": float(loss)}
            if step % settings.eval_every == 0 or step == steps:
                row["eval_loss"] = held_out_loss(state["params"])
            row["time_s"] = time.time() - started
            rows.append(row)
            bar.update()
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            if step % settings.checkpoint_every == 0 or step == steps:
                write_rows(log_path, rows)
                ckpts.save(step, state)
            if time.time() > deadline:
                print(
                    f"time budget of {settings.max_minutes} min reached at step {step}",
                    file=sys.stderr,
                )
                write_rows(log_path, rows)
                ckpts.save(step, state)
                break
        bar.close()
    return TrainResult(state["params"], rows, step)


def finish(
    run: RunDir,
    params: Any,
    config: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    **plot: str,
) -> None:
    """Write the trained model (``<run>/model``, a jelm model directory any ``--model``
    option takes) and its loss curve (``<run>/loss.png``; ``plot``: its labels)."""
    save_model(run.path / "model", params, config, tokenizer)
    plot_loss(rows, run.path / "loss.png", **plot)


def read_rows(path: Path, upto: int) -> list[dict[str, Any]]:
    """The logged rows up to step ``upto`` (rows written after the last checkpoint are
    dropped: the resumed run writes them again)."""
    if upto == 0 or not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` as JSON lines (whole or not at all)."""
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
