"""Diff-model sampling throughput: jelm (JAX) against transformers (torch), one machine.

``python -m jelm.lm.bench [--model shipped|<dir>|hf:<dir>] [--domain NAME]
[--batches 1 8 32] [--new-tokens 384] [--children 1 4] [--copy off|on|both]`` prints one
JSON line on stdout (progress goes to stderr)::

    {"device", "machine": {matmul_gflops, memory_gbps},
     "model": {params, d_model, n_layer, n_head, n_kv_head, n_ctx, vocab_size, source},
     "prompt_tokens_mean", "sampling": {...},
     "jax":   [{"children", "copy", "batch", "tokens_per_s", "diffs_per_s",
               "first_call_s", "run_s", "mean_new_tokens", "stop_rate",
               "tokens_per_step", "roofline": {...}}, ...],
     "torch": [{same fields but copy, tokens_per_step and roofline; "threads"}, ...],
     "speedup": {"children<k>_b<batch>": jax / best torch tokens/s},
     "copy_speed": {"children<k>_b<batch>": jax tokens/s copying / not},
     "peak_rss_mb"}

It measures ELM's mutation step (§3.1): a batch of diff-format prompts (the domain's seed
programs and a few corpus parents, each with each commit message) is continued by
sampling (temperature 0.8, top-p 0.95, no top-k) until EOS or ``--new-tokens``. Two
workloads: ``children 1`` takes the first ``b`` prompts of the pool (shuffled once,
cycled when ``b`` is larger: mostly distinct parents); ``children k`` asks ``k``
children of each parent (with the commit messages in turn), as an ELM generation does
when it draws a parent for several children. Both sides get the same token ids.

- ``jax``: :func:`jelm.lm.sampling.generate` with ``max_batch = b``; ``first_call_s`` is
  the first call at the batch's shapes (compilation included), ``run_s`` the mean of
  warm calls with another key (repeated until a second has passed, at most 5 calls).
  ``roofline`` (:mod:`jelm.lm.roofline`): the call's FLOPs and bytes against this
  machine's measured matmul rate and memory bandwidth, the least time they allow, and the
  share of it the call achieved.
  With ``--copy on`` each diff copies its parent (:mod:`jelm.lm.sampling.copy`, the main
  job's default), with ``both`` every workload is timed both ways (``copy_speed``);
  ``speedup`` compares the rows without copying, torch's work.
- ``torch``: the same weights exported by :func:`jelm.lm.hf.save_hf` (an ``hf:`` model is
  read from its own directory), loaded with ``AutoModelForCausalLM`` from local files and
  run by ``generate(do_sample=True, top_k=0, ...)`` on left-padded inputs under
  ``torch.inference_mode()`` with ``torch.set_num_threads(threads)`` (one set of rows per
  ``--threads`` count).

``tokens_per_s`` counts the tokens actually sampled in the timed call (each completion up
to and including its EOS), ``diffs_per_s`` the completions per second; ``mean_new_tokens``
and ``stop_rate`` say how the two sides' lengths differ by chance.

``--synthetic [generate] [train]`` instead times :func:`benchmark`: a random model of the
shipped size, random prompts, and a training step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jelm.lm.domain import add_domain_option, resolve_domain
from jelm.lm.roofline import machine_peaks, roofline

if TYPE_CHECKING:
    from jelm.domains.base import Domain
    from jelm.lm.model import ModelConfig

TEMPERATURE = 0.8
TOP_P = 0.95


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load_any(model: str) -> tuple[Any, Any, Any, Path, bool]:
    """``(params, config, tokenizer, path, is_hf)`` for ``"shipped"``, a jelm model
    directory, or a Hugging Face checkpoint directory (``hf:<dir>``, or any directory whose
    ``config.json`` has a ``model_type``)."""
    from jelm.lm.backends import SHIPPED_DIR
    from jelm.lm.checkpoint import load_model
    from jelm.lm.hf import load_hf

    path = SHIPPED_DIR if model == "shipped" else Path(model.removeprefix("hf:"))
    path = path.absolute()
    if model == "shipped" and not (path / "config.json").is_file():
        raise FileNotFoundError(f"the shipped model is not installed ({path}/config.json)")
    config_file = path / "config.json"
    is_hf = model.startswith("hf:") or (
        config_file.is_file() and "model_type" in json.loads(config_file.read_text())
    )
    params, config, tokenizer = load_hf(path) if is_hf else load_model(path)
    return params, config, tokenizer, path, is_hf


def bench_families(
    corpus_parents: int = 9, seed: int = 0, *, domain: Domain | str | None = None
) -> list[tuple[str, list[str]]]:
    """ELM §3.1 diff prompts by parent: every seed program of ``domain`` and
    ``corpus_parents`` distinct parents of its training corpus, each with its prompts
    (one per commit message of the domain)."""
    from jelm.programs.diff import elm_prompt

    domain = resolve_domain(domain)
    seeds = domain.seed_names()
    parents = [domain.seed_program(name) for name in seeds]
    if corpus_parents > 0:
        seen = set(parents)
        for example in domain.corpus(4 * corpus_parents, seed):
            if example.parent not in seen and len(parents) < len(seeds) + corpus_parents:
                seen.add(example.parent)
                parents.append(example.parent)
    messages = domain.prompts.commit_messages
    file_name = domain.program.file_name
    return [(p, [elm_prompt(p, m, file_name) for m, _ in messages]) for p in parents]


def bench_pool(
    corpus_parents: int = 9, seed: int = 0, *, domain: Domain | str | None = None
) -> list[tuple[str, str]]:
    """Every prompt of :func:`bench_families` with its parent, in a fixed shuffled order."""
    pairs = [
        (t, p) for p, texts in bench_families(corpus_parents, seed, domain=domain) for t in texts
    ]
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[int(i)] for i in order]


def bench_prompts(
    corpus_parents: int = 9, seed: int = 0, *, domain: Domain | str | None = None
) -> list[str]:
    """The prompts of :func:`bench_pool`, in its order."""
    return [t for t, _ in bench_pool(corpus_parents, seed, domain=domain)]


def family_prompts(
    texts_by_parent: Sequence[Sequence[str]], batch: int, children: int
) -> list[str]:
    """``batch`` prompts as an ELM generation that asks ``children`` children of each
    parent: parents in turn, each with its commit messages in turn."""
    out: list[str] = []
    p = 0
    while len(out) < batch:
        texts = texts_by_parent[p % len(texts_by_parent)]
        out += [texts[(p // len(texts_by_parent) + j) % len(texts)] for j in range(children)]
        p += 1
    return out[:batch]


def _warm(call: Callable[[], Any], min_s: float = 1.0, max_calls: int = 5) -> tuple[float, Any]:
    """Mean seconds of a warm call (the same inputs and key each time, so the same
    tokens), repeated until ``min_s`` seconds or ``max_calls`` calls, and its result: a
    call of a fraction of a second alone times the machine's noise."""
    total, calls = 0.0, 0
    while True:
        t0 = time.perf_counter()
        result = call()
        total += time.perf_counter() - t0
        calls += 1
        if total >= min_s or calls >= max_calls:
            return total / calls, result


def _entry(batch: int, first_s: float, run_s: float, lengths: list[int], stops: int) -> dict:
    n = int(sum(lengths))
    return {
        "batch": batch,
        "tokens_per_s": round(n / run_s, 1),
        "diffs_per_s": round(batch / run_s, 3),
        "first_call_s": round(first_s, 3),
        "run_s": round(run_s, 3),
        "mean_new_tokens": round(n / batch, 1),
        "stop_rate": round(stops / batch, 3),
    }


def bench_jax(
    params: Any,
    config: Any,
    workloads: dict[int, dict[int, list[list[int]]]],
    new_tokens: int,
    eos_id: int,
    pad_id: int,
    peaks: dict[str, float] | None = None,
    *,
    copy: Sequence[bool] = (False,),
    parents: dict[int, dict[int, list[str]]] | None = None,
    copy_vocab: Any = None,
) -> list[dict[str, Any]]:
    """First-call and warm-call timings of :func:`jelm.lm.sampling.generate` for every
    workload (``children`` per parent) and batch size, with the bound of
    :func:`jelm.lm.roofline.roofline`.
    ``copy``: sample unconstrained (``False``) and/or under the copy constraint
    (``True``: each prompt's diff copies its parent in ``parents``, laid out as
    ``workloads``; ``copy_vocab`` from :func:`jelm.lm.sampling.copy.copy_vocab`)."""
    import jax

    from jelm.lm.model import param_count
    from jelm.lm.sampling import generate

    n_params = param_count(params)
    out = []
    for children, by_batch in workloads.items():
        for b, prompts in by_batch.items():
            for copying in copy:
                kw = dict(
                    max_new_tokens=new_tokens,
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    stop_token_ids=[eos_id],
                    pad_id=pad_id,
                    max_batch=b,
                )
                if copying:
                    assert parents is not None and copy_vocab is not None
                    kw.update(copy=parents[children][b], copy_vocab=copy_vocab)
                t0 = time.perf_counter()
                generate(params, config, prompts, jax.random.key(0), **kw)
                first_s = time.perf_counter() - t0
                run_s, gens = _warm(
                    lambda p=prompts, k=kw: generate(params, config, p, jax.random.key(1), **k)
                )
                stops = sum(g.finish_reason == "stop" for g in gens)
                lengths = [len(g.tokens) + (g.finish_reason == "stop") for g in gens]
                entry = {
                    "children": children,
                    "copy": bool(copying),
                    **_entry(b, first_s, run_s, lengths, stops),
                }
                # tokens (stop tokens included) a row's decode step emits, on average
                steps = max(1, sum(g.steps for g in gens))
                entry["tokens_per_step"] = round(sum(lengths) / steps, 2)
                if peaks:
                    bound = roofline(config, n_params, prompts, lengths, new_tokens, b, peaks)
                    bound["achieved"] = round(bound["bound_s"] / run_s, 3)
                    entry["roofline"] = bound
                out.append(entry)
                _log(f"jax   {out[-1]}")
    return out


def bench_torch(
    hf_dir: str | Path,
    workloads: dict[int, dict[int, list[list[int]]]],
    new_tokens: int,
    eos_id: int,
    pad_id: int,
    threads: int = 2,
) -> list[dict[str, Any]]:
    """The same measurement with transformers' ``generate`` (torch, CPU) on the checkpoint
    in ``hf_dir``, loaded with ``AutoModelForCausalLM`` from local files only (the
    ``GPT2LMHeadModel`` or ``CodeGenForCausalLM`` of a jelm export, or any supported HF
    checkpoint)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(
        hf_dir, local_files_only=True, dtype=torch.float32
    ).eval()
    out = []
    for children, b, prompts in (
        (c, b, p) for c, by_batch in workloads.items() for b, p in by_batch.items()
    ):
        width = max(map(len, prompts))
        ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

        kw = dict(
            attention_mask=mask,
            do_sample=True,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            top_k=0,  # transformers applies top-k 50 unless told otherwise
            max_new_tokens=new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
        )
        t0 = time.perf_counter()
        torch.manual_seed(0)
        with torch.inference_mode():
            model.generate(ids, **kw)
        first_s = time.perf_counter() - t0

        def call(ids: Any = ids, kw: dict = kw, width: int = width) -> np.ndarray:
            torch.manual_seed(1)
            with torch.inference_mode():
                return model.generate(ids, **kw)[:, width:].numpy()

        run_s, result = _warm(call)
        lengths, stops = [], 0
        for row in result:
            hits = np.flatnonzero(row == eos_id)
            lengths.append(int(hits[0]) + 1 if hits.size else len(row))
            stops += bool(hits.size)
        entry = _entry(b, first_s, run_s, lengths, stops)
        out.append({"children": children, **entry, "threads": threads})
        _log(f"torch {out[-1]}")
    return out


def _device() -> str:
    """``"<jax backend>: <cpu model> (<n> cpus)"``."""
    import jax

    name = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{jax.default_backend()}: {name or 'unknown cpu'} ({os.cpu_count()} cpus)"


def run(
    model: str = "shipped",
    batches: Sequence[int] = (1, 8, 32),
    new_tokens: int = 384,
    *,
    children: Sequence[int] = (1, 4),
    corpus_parents: int = 9,
    threads: Sequence[int] = (2,),
    backends: Sequence[str] = ("jax", "torch"),
    domain: Domain | str | None = None,
    copy: str = "off",
) -> dict[str, Any]:
    """The benchmark as a dict (see the module docstring for the fields)."""
    if copy not in ("off", "on", "both"):
        raise ValueError(f"copy must be off, on or both, got {copy!r}")
    from jelm.lm.hf import save_hf
    from jelm.lm.model import param_count

    params, config, tokenizer, path, is_hf = load_any(model)
    copy_modes = {"off": (False,), "on": (True,), "both": (False, True)}[copy]
    copy_vocab = None
    if True in copy_modes:
        from jelm.lm.sampling.copy import copy_vocab as make_copy_vocab

        copy_vocab = make_copy_vocab(tokenizer, int(config.vocab_size))  # raises if it cannot

    def fits(pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], str]]:
        ids = [(tokenizer.encode(t), parent) for t, parent in pairs]
        return [(i, parent) for i, parent in ids if len(i) + new_tokens <= config.n_ctx]

    pool = fits(bench_pool(corpus_parents, domain=domain))
    families = bench_families(corpus_parents, domain=domain)
    by_parent = [f for f in (fits([(t, p) for t in ts]) for p, ts in families) if f]
    if not pool:
        raise ValueError(f"no prompt fits n_ctx={config.n_ctx} with --new-tokens {new_tokens}")
    workloads: dict[int, dict[int, list[list[int]]]] = {}
    parents: dict[int, dict[int, list[str]]] = {}
    for k in children:
        workloads[k], parents[k] = {}, {}
        for b in batches:
            chosen = (
                [pool[i % len(pool)] for i in range(b)]
                if k == 1
                else family_prompts(by_parent, b, k)
            )
            workloads[k][b] = [ids for ids, _ in chosen]
            parents[k][b] = [parent for _, parent in chosen]
    lengths = [len(p) for p, _ in pool]
    _log(f"{len(pool)} prompts, {min(lengths)}..{max(lengths)} tokens, model {path}")
    peaks = machine_peaks()
    res: dict[str, Any] = {
        "device": _device(),
        "machine": peaks,
        "model": {
            "params": param_count(params),
            "d_model": config.d_model,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_kv_head": config.kv_heads,
            "n_ctx": config.n_ctx,
            "vocab_size": config.vocab_size,
            "source": ("hf:" if is_hf else "") + str(path),
        },
        "prompt_tokens_mean": round(float(np.mean(lengths)), 1),
        "sampling": {
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "max_new_tokens": new_tokens,
            "stop": "eos",
            "prompts": len(pool),
            "copy": copy,
        },
        "jax": [],
        "torch": [],
    }
    eos, pad = tokenizer.eos_id, tokenizer.pad_id
    if "jax" in backends:
        res["jax"] = bench_jax(
            params,
            config,
            workloads,
            new_tokens,
            eos,
            pad,
            peaks,
            copy=copy_modes,
            parents=parents,
            copy_vocab=copy_vocab,
        )
    if "torch" in backends:
        with tempfile.TemporaryDirectory(prefix="jelm_bench_hf_") as tmp:
            if is_hf:  # run the original checkpoint
                hf_dir = path
            else:
                save_hf(tmp, params, config, tokenizer)
                hf_dir = Path(tmp)
            for n in threads:
                res["torch"] += bench_torch(hf_dir, workloads, new_tokens, eos, pad, n)
    free = [j for j in res["jax"] if not j["copy"]]  # the same work as torch's
    if free and res["torch"]:
        res["speedup"] = {
            f"children{j['children']}_b{j['batch']}": round(
                j["tokens_per_s"]
                / max(
                    t["tokens_per_s"]
                    for t in res["torch"]
                    if (t["children"], t["batch"]) == (j["children"], j["batch"])
                ),
                2,
            )
            for j in free
        }
    if copy == "both" and res["jax"]:
        by = {(j["children"], j["batch"], j["copy"]): j for j in res["jax"]}
        res["copy_speed"] = {
            f"children{k}_b{b}": round(j["tokens_per_s"] / by[(k, b, False)]["tokens_per_s"], 3)
            for (k, b, copying), j in by.items()
            if copying
        }
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def benchmark(
    config: ModelConfig | None = None,
    *,
    batches: Sequence[int] = (1, 8, 32),
    prompt_len: int = 800,
    new_tokens: int = 200,
    train_shape: tuple[int, int] = (8, 1024),
    parts: Sequence[str] = ("generate", "train"),
) -> dict[str, Any]:
    """Throughput of a random model: :func:`jelm.lm.sampling.generate` (tokens/s at each
    batch size on random prompts; temperature 0.8, top-p 0.95, no stop tokens, second call
    timed) and a training step (``jax.grad`` of ``masked_xent`` through ``forward``;
    tokens/s, best of 3 after compiling).

    Default model: GPT-2 layout, vocab 4096, d 256, 4 layers, 4 heads, context 2048.
    ``python -m jelm.lm.bench --synthetic [generate] [train]`` prints it as one JSON line.
    """
    import jax
    import jax.numpy as jnp

    from jelm.lm.model import ModelConfig, forward, init_params, masked_xent, param_count
    from jelm.lm.sampling import generate

    cfg = config or ModelConfig(vocab_size=4096, n_ctx=2048, d_model=256, n_layer=4, n_head=4)
    params = init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    res: dict[str, Any] = {
        "config": cfg.to_dict(),
        "params": param_count(params),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpus": os.cpu_count(),
    }

    def prompts(b: int) -> list[list[int]]:
        lens = prompt_len + rng.integers(-prompt_len // 40, prompt_len // 40 + 1, b)
        return [rng.integers(5, cfg.vocab_size, n).tolist() for n in lens]

    kw = dict(max_new_tokens=new_tokens, temperature=0.8, top_p=0.95)
    for b in batches if "generate" in parts else ():
        t0 = time.perf_counter()
        generate(params, cfg, prompts(b), jax.random.key(0), **kw)
        t1 = time.perf_counter()
        out = generate(params, cfg, prompts(b), jax.random.key(1), **kw)
        t2 = time.perf_counter()
        n = sum(len(g.tokens) for g in out)
        res[f"generate_b{b}"] = {
            "first_call_s": round(t1 - t0, 2),
            "s": round(t2 - t1, 2),
            "new_tokens": n,
            "tokens_per_s": round(n / (t2 - t1), 1),
        }
    if "train" in parts:
        b, t = train_shape
        toks = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, t + 1)), jnp.int32)
        pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        mask = jnp.ones((b, t), bool)

        def loss(p: Any) -> jax.Array:
            return masked_xent(forward(p, cfg, toks[:, :-1], pos, mask), toks[:, 1:], mask)

        step = jax.jit(jax.value_and_grad(loss))
        t0 = time.perf_counter()
        jax.block_until_ready(step(params))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            jax.block_until_ready(step(params))
            times.append(time.perf_counter() - t0)
        res[f"train_b{b}x{t}"] = {
            "first_call_s": round(compile_s, 2),
            "step_s": [round(x, 2) for x in times],
            "tokens_per_s": round(b * t / min(times), 1),
        }
    return res


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m jelm.lm.bench``: run the benchmark, print one JSON line, return it."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--model", default="shipped", help="shipped | <jelm dir> | hf:<dir>")
    add_domain_option(ap)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=384)
    ap.add_argument(
        "--children",
        type=int,
        nargs="+",
        default=[1, 4],
        help="workloads: 1 = the shuffled prompt pool; k > 1 = k children per parent",
    )
    ap.add_argument("--corpus-parents", type=int, default=9)
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2],
        help="torch intra-op thread counts (one set of torch rows per count)",
    )
    ap.add_argument("--backends", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    ap.add_argument(
        "--copy",
        choices=["off", "on", "both"],
        default="off",
        help="jelm samples each diff copying its parent (on), not (off), or both ways",
    )
    ap.add_argument(
        "--synthetic",
        nargs="*",
        choices=["generate", "train"],
        help="time a random model instead (generate and/or a training step; default both)",
    )
    args = ap.parse_args(argv)
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
        if args.synthetic is not None:
            res = benchmark(parts=args.synthetic or ("generate", "train"))
        else:
            res = run(
                args.model,
                args.batches,
                args.new_tokens,
                children=args.children,
                corpus_parents=args.corpus_parents,
                threads=args.threads,
                backends=args.backends,
                domain=args.domain,
                copy=args.copy,
            )
    print(json.dumps(res), file=stdout, flush=True)
    return res


if __name__ == "__main__":
    main()
