"""Train jelm's diff model from scratch: ``python -m jelm.lm.train`` (ELM §3.1, Appendix A).

The paper fine-tunes code models on GitHub commits in its diff format; jelm trains a small
model on a corpus its domain makes (:meth:`jelm.domains.base.Domain.corpus`, ``--domain``):

1. corpus: parent/child program pairs, each an ELM-format prompt and its unified diff;
2. tokenizer: byte-level BPE trained on that corpus (:func:`jelm.lm.data.train_tokenizer`);
3. model: a decoder (:mod:`jelm.lm.model`) in CodeGen's layout by default (``--arch gpt2``
   for GPT-2's learned positions), trained with optax AdamW (warm-up, cosine decay,
   gradient clipping), the loss on the diff tokens only (:mod:`jelm.lm.data`);
4. evaluation: held-out loss, and greedy diffs for held-out parents: how many apply and
   give the intended child.

The output directory holds the model (``model/``: config.json, tokenizer.json, params),
``train.jsonl`` (loss per step), ``loss.png`` and ``summary.json``; ``--ship`` also copies
them to ``jelm/lm/shipped``. Everything derives from ``--seed``: the same command rebuilds
the same checkpoint (up to floating-point reduction order). Why CodeGen's layout, and the
measured runs: jelm/lm/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jelm.domains.base import CorpusExample
from jelm.lm import shard as lm_shard
from jelm.lm.backends import SHIPPED_DIR as SHIPPED
from jelm.lm.checkpoint import save_model
from jelm.lm.data import Encoded, bucket_of, encode, make_batches, train_tokenizer, training_text
from jelm.lm.domain import DEFAULT_DOMAIN, add_domain_option, resolve_domain
from jelm.lm.model import ModelConfig, forward, init_params, masked_xent
from jelm.lm.sampling import generate
from jelm.lm.tokenizer import Tokenizer
from jelm.options import add_options, values_of
from jelm.programs.diff import DiffError, apply_diff, extract_diff

__all__ = [
    "ARCHS",
    "Encoded",
    "TrainConfig",
    "bucket_of",
    "encode",
    "evaluate_diffs",
    "loss_fn",
    "main",
    "make_batches",
    "make_step",
    "model_config",
    "train",
]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (written to summary.json)."""

    domain: str = DEFAULT_DOMAIN
    seed: int = 0
    examples: int = 12_000
    held_out: int = 128
    vocab_size: int = 4096
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_ctx: int = 2048
    arch: str = "codegen"
    rotary_dim: int = 32
    buckets: tuple[int, ...] = (512, 768, 1024, 1536, 2048)
    tokens_per_batch: int = 4096
    steps: int = 1600
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 400
    eval_diffs: int = 32
    max_minutes: float = 55.0


#: The architectures ``--arch`` offers, as ModelConfig fields (jelm/lm/model.py).
ARCHS: dict[str, dict[str, Any]] = {
    "gpt2": {"rotary_dim": 0, "parallel_residual": False, "qkv_bias": True},
    "codegen": {"parallel_residual": True, "qkv_bias": False, "lm_head_bias": True},
}


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The model a training run builds: ``cfg.arch`` is ``gpt2`` (learned absolute
    positions, sequential residual) or ``codegen`` (rotary embedding on ``cfg.rotary_dim``
    dims of each head, parallel residual; both tie the output projection to the token
    embedding)."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown arch {cfg.arch!r}; known: {sorted(ARCHS)}")
    fields = {"rotary_dim": cfg.rotary_dim, **ARCHS[cfg.arch]}  # gpt2 fixes rotary_dim=0
    return ModelConfig(
        vocab_size=vocab_size,
        n_ctx=cfg.n_ctx,
        d_model=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        **fields,
    )


def _batches(
    data: Sequence[Encoded], cfg: TrainConfig, pad_id: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    return make_batches(data, cfg.buckets, cfg.tokens_per_batch, pad_id, rng)


def loss_fn(params: Any, config: ModelConfig, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Next-token cross-entropy on the diff tokens (ELM §3.1: loss on the diff only)."""
    inputs, targets, weights = tokens[:, :-1], tokens[:, 1:], mask[:, 1:]
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    attention = jnp.ones(inputs.shape, bool)  # right padding: causal masking suffices
    logits = forward(params, config, inputs, positions, attention)
    return masked_xent(logits, targets, weights)


def make_step(
    config: ModelConfig, optimizer: optax.GradientTransformation, shard: bool | None = None
):
    """The training step: loss, gradients, optimizer update, jitted.

    On several local devices (:func:`jelm.lm.shard.local_mesh`; ``shard=False`` or
    ``$JELM_LM_SHARD=0`` keep one) the batch is padded with rows that weigh nothing to a
    multiple of the device count and its rows split over the devices, parameters and
    optimizer state replicated; XLA's partitioner sums the gradients over the devices.
    The returned parameters, optimizer state and loss are replicated."""
    mesh = lm_shard.local_mesh(shard)

    def body(params, opt_state, tokens, mask):
        loss, grads = jax.value_and_grad(loss_fn)(params, config, tokens, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    if mesh is None:
        return jax.jit(body)
    jitted = jax.jit(body, out_shardings=lm_shard.replicated(mesh))

    def step(params, opt_state, tokens, mask):
        total = lm_shard.padded_rows(tokens.shape[0], mesh)
        tokens, mask = lm_shard.split_rows(lm_shard.pad_rows((tokens, mask), total), mesh)
        params, opt_state = lm_shard.replicate((params, opt_state), mesh)
        return jitted(params, opt_state, tokens, mask)

    return step


def evaluate_diffs(
    params: Any,
    config: ModelConfig,
    tokenizer: Tokenizer,
    examples: Sequence[CorpusExample],
    key: jax.Array,
    file_name: str,
) -> dict[str, float]:
    """Greedy diffs for held-out parents: the share that applies, and that gives a
    program different from the parent. Parents whose prompt leaves no room for
    ``max_new_tokens`` in the context window are skipped (``diff_eval_examples`` counts
    the ones used)."""
    max_new_tokens = 384
    encoded = [(e, tokenizer.encode(training_text(e, file_name)[0])) for e in examples]
    encoded = [(e, p) for e, p in encoded if len(p) + max_new_tokens <= config.n_ctx]
    if not encoded:
        return {"diff_eval_examples": 0}
    examples = [e for e, _ in encoded]
    out = generate(
        params,
        config,
        [p for _, p in encoded],
        key,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        stop_token_ids=[tokenizer.eos_id],
        pad_id=tokenizer.pad_id,
    )
    applied = changed = exact_child = 0
    for example, gen in zip(examples, out, strict=True):
        diff = extract_diff(tokenizer.decode(gen.tokens))
        try:
            program = apply_diff(example.parent, diff).program
        except DiffError:
            continue
        applied += 1
        changed += program != example.parent
        exact_child += program == example.child
    n = len(examples)
    return {
        "diff_eval_examples": n,
        "diff_apply_rate": applied / n,
        "diff_changed_rate": changed / n,
        "diff_exact_child_rate": exact_child / n,
    }


def plot_loss(
    rows: Sequence[dict],
    path: Path,
    *,
    ylabel: str = "loss on diff tokens (nats)",
    title: str = "jelm diff model",
) -> None:
    """The loss curve (training and held-out) as a PNG, its axis and title labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    held = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if train:
        steps, losses = zip(*train, strict=True)
        window = max(1, len(losses) // 50)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, label="train (smoothed)")
    if held:
        ax.plot(*zip(*held, strict=True), "o-", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train(cfg: TrainConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Build the corpus and tokenizer, train the model, write everything to ``out``."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    rng = np.random.default_rng(cfg.seed)
    domain = resolve_domain(cfg.domain)
    file_name = domain.program.file_name
    corpus = domain.corpus(cfg.examples + cfg.held_out, cfg.seed)
    held, train_examples = corpus[: cfg.held_out], corpus[cfg.held_out :]
    tokenizer = train_tokenizer(train_examples, file_name, vocab_size=cfg.vocab_size)
    config = model_config(cfg, tokenizer.vocab_size)
    data = encode(train_examples, tokenizer, cfg.buckets[-1], file_name)
    held_data = encode(held, tokenizer, cfg.buckets[-1], file_name)
    corpus_s = time.time() - t0

    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, cfg.warmup, max(cfg.steps, cfg.warmup + 1), cfg.lr * 0.05
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(cfg.clip),
        optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=cfg.weight_decay),
    )
    key = jax.random.PRNGKey(cfg.seed)
    params = init_params(config, key)
    opt_state = optimizer.init(params)
    step_fn = make_step(config, optimizer)
    eval_fn = jax.jit(loss_fn, static_argnums=1)
    held_batches = _batches(held_data, cfg, tokenizer.pad_id, np.random.default_rng(1))

    rows: list[dict] = []
    log = (out / "train.jsonl").open("w")
    batches: list = []
    tokens_seen = 0
    bar = tqdm(total=cfg.steps, desc="train", disable=not progress, file=sys.stderr)
    deadline = t0 + cfg.max_minutes * 60
    step = 0
    for step in range(1, cfg.steps + 1):
        if not batches:
            batches = _batches(data, cfg, tokenizer.pad_id, rng)
        tokens, mask = batches.pop()
        params, opt_state, loss = step_fn(params, opt_state, tokens, mask)
        tokens_seen += tokens.size
        row: dict[str, Any] = {"step": step, "loss": float(loss), "tokens": tokens_seen}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            losses = [float(eval_fn(params, config, t, m)) for t, m in held_batches]
            row["eval_loss"] = float(np.mean(losses))
        row["time_s"] = time.time() - t0
        rows.append(row)
        log.write(json.dumps(row) + "\n")
        log.flush()
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        bar.update()
        if time.time() > deadline:
            print(f"time budget of {cfg.max_minutes} min reached at step {step}", file=sys.stderr)
            break
    bar.close()
    log.close()
    train_s = time.time() - t0 - corpus_s

    save_model(out / "model", params, config, tokenizer)
    plot_loss(rows, out / "loss.png")
    diff_stats = evaluate_diffs(
        params,
        config,
        tokenizer,
        held[: cfg.eval_diffs],
        jax.random.PRNGKey(cfg.seed + 1),
        file_name,
    )
    held_losses = [r["eval_loss"] for r in rows if "eval_loss" in r]
    summary = {
        "config": dataclasses.asdict(cfg),
        "model": config.to_dict(),
        "parameters": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
        "train_examples": len(data),
        "held_out_examples": len(held_data),
        "steps": step,
        "tokens": tokens_seen,
        "corpus_and_tokenizer_s": corpus_s,
        "train_s": train_s,
        "tokens_per_s": tokens_seen / max(train_s, 1e-9),
        "final_loss": float(np.mean([r["loss"] for r in rows[-50:]])),
        "held_out_loss": held_losses[-1] if held_losses else math.nan,
        **diff_stats,
        "total_s": time.time() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m jelm.lm.train [--out DIR] [--ship] [--steps N] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument(
        "--ship", action="store_true", help="copy the model to jelm/lm/shipped when done"
    )
    add_domain_option(parser)
    add_options(parser, TrainConfig, skip=("buckets", "domain"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = TrainConfig(**values_of(TrainConfig, args, buckets=TrainConfig.buckets))
    out = args.out or Path("runs") / time.strftime("lm-train-%Y%m%d-%H%M%S")
    print(f"training jelm's diff model into {out} ({cfg})", file=sys.stderr)
    summary = train(cfg, out, progress=not args.no_progress)
    if args.ship:
        if SHIPPED.exists():
            shutil.rmtree(SHIPPED)
        shutil.copytree(out / "model", SHIPPED)
        for name in ("summary.json", "loss.png", "train.jsonl"):
            shutil.copy(out / name, SHIPPED / name)
        print(f"shipped the model to {SHIPPED}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
