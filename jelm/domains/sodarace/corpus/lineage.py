"""Lineages of edits and the corpus they make (ELM arXiv 2206.08896v1, §3.1, §4).

Each lineage starts at a seed (or, with ``generated > 0``, sometimes at a freshly
written program of :mod:`.styles`) and takes up to ``max_depth + 1`` edits in a row; every
accepted edit is an example and its child the next parent. The message class is drawn
first with the paper's odds, then a kind of that class; a rejected edit is retried within
the class. Each lineage has its own generator, so a corpus does not depend on how its
lineages are spread over processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jelm.domains.sodarace.api import DEFAULT_LIMITS, Walker, WalkerLimits
from jelm.domains.sodarace.corpus.base import FILE_NAME, CorpusStats, Example
from jelm.domains.sodarace.corpus.kinds import CLASSES, edit_text
from jelm.domains.sodarace.corpus.program import Program, build
from jelm.domains.sodarace.corpus.run import make_runner
from jelm.domains.sodarace.corpus.styles import random_program
from jelm.domains.sodarace.prompts import COMMIT_MESSAGES
from jelm.domains.sodarace.seeds import SEED_NAMES, seed_source
from jelm.mutation.base import unified_diff
from jelm.programs.trusted import TrustedRunner

__all__ = ["MAX_CHARS", "generate_corpus", "make_corpus"]

_MESSAGE_ODDS: dict[str, float] = dict(COMMIT_MESSAGES)

#: The longest program kept (5,000 chars is about 1,500 tokens of jelm's tokenizer,
#: leaving room for the diff in a 2,048-token context).
MAX_CHARS = 5000


def _resolve_seed(seed: str) -> str:
    if seed in SEED_NAMES:
        return seed_source(seed)
    if "def make_walker" in seed:
        return seed
    raise ValueError(f"unknown seed {seed!r}: a name in SEED_NAMES or a program's source")


def _same_walker(a: Walker, b: Walker) -> bool:
    return a.joints == b.joints and a.muscles == b.muscles


@dataclass(frozen=True)
class _Config:
    """The knobs of one corpus (sent to worker processes)."""

    seed: int
    sources: tuple[str, ...]
    max_depth: int
    branch: float
    max_chars: int
    limits: WalkerLimits
    timeout_s: float
    max_tries: int
    generated: float = 0.0


_ROOTS: dict[tuple[tuple[str, ...], WalkerLimits], list[Program]] = {}


def _roots(cfg: _Config, runner: TrustedRunner) -> list[Program]:
    """The seed programs, run once per process."""
    key = (cfg.sources, cfg.limits)
    if key not in _ROOTS:
        roots = []
        for src in cfg.sources:
            root, reason = build(src, 0, cfg.limits, runner)
            if root is None:
                raise ValueError(f"seed {src[:60]!r}... does not build a valid walker: {reason}")
            roots.append(root)
        _ROOTS.clear()
        _ROOTS[key] = roots
    return _ROOTS[key]


_LINEAGES_PER_BLOCK = 32
_Row = tuple[Example, int, bool]  # an example, its parent's depth, from a generated root

#: Third seed word of the generator that decides whether a lineage starts from a generated
#: program and writes it: ``(seed, lineage, _GENERATED)``, apart from the lineage's own.
_GENERATED = 0x5EED
#: Generated programs tried for one lineage before it starts from a seed after all.
_GENERATED_TRIES = 5


def _generated_root(
    cfg: _Config, lineage: int, runner: TrustedRunner, stats: CorpusStats
) -> Program | None:
    """With odds ``cfg.generated``, a freshly written program (:func:`random_program`)
    that builds a valid walker, to start lineage ``lineage`` from; ``None`` for a seed.
    Programs that do not build (or are longer than ``max_chars``) are counted in
    ``stats`` and replaced, at most ``_GENERATED_TRIES`` times."""
    gen = np.random.default_rng([cfg.seed, lineage, _GENERATED])
    if gen.random() >= cfg.generated:
        return None
    for _ in range(_GENERATED_TRIES):
        text = random_program(gen)
        stats.generated_tried += 1
        if len(text) > cfg.max_chars:
            prog, reason = None, "too_long"
        else:
            prog, reason = build(text, 0, cfg.limits, runner)
        if prog is not None:
            return prog
        stats.generated_rejected[reason] += 1
    return None


def _run_block(cfg: _Config, block: int) -> tuple[list[_Row], CorpusStats]:
    """The examples of lineages ``block * 32 ..`` (each lineage has its own generator,
    seeded by ``(seed, lineage)``, so a corpus does not depend on how blocks are spread
    over processes)."""
    stats = CorpusStats()
    rows: list[_Row] = []
    class_msgs = [msg for msg, _ in CLASSES]
    class_p = np.asarray([_MESSAGE_ODDS[m] for m in class_msgs])
    class_p = class_p / class_p.sum()
    class_kinds = [(list(w), np.asarray(list(w.values())) / sum(w.values())) for _, w in CLASSES]

    runner = make_runner(cfg.timeout_s)
    roots = _roots(cfg, runner)

    def child_of(parent: Program, rng: np.random.Generator) -> tuple[Program, str, str] | None:
        c = int(rng.choice(len(class_msgs), p=class_p))
        names, p = class_kinds[c]
        for _ in range(cfg.max_tries):
            kind = names[int(rng.choice(len(names), p=p))]
            stats.attempts[kind] += 1
            text = edit_text(parent, kind, rng, cfg.limits)
            if text is None or text == parent.text:
                stats.no_site[kind] += 1
                continue
            if len(text) > cfg.max_chars:
                prog, reason = None, "too_long"
            else:
                prog, reason = build(text, parent.depth + 1, cfg.limits, runner)
                if prog is not None and _same_walker(prog.walker, parent.walker):
                    prog, reason = None, "no_effect"
            if prog is None:
                stats.rejected[reason] += 1
                stats.rejected_by_kind[kind] += 1
                continue
            return prog, kind, class_msgs[c]
        return None

    def emit(parent: Program, made: tuple[Program, str, str], fresh: bool) -> None:
        child, kind, msg = made
        diff = unified_diff(parent.text, child.text, FILE_NAME)
        rows.append((Example(parent.text, child.text, msg, diff, kind), parent.depth, fresh))

    for lineage in range(block * _LINEAGES_PER_BLOCK, (block + 1) * _LINEAGES_PER_BLOCK):
        rng = np.random.default_rng([cfg.seed, lineage])
        node = roots[int(rng.integers(len(roots)))]  # drawn always: seeded lineages stay put
        root = _generated_root(cfg, lineage, runner, stats) if cfg.generated > 0 else None
        if root is not None:
            node = root
            stats.generated_roots += 1
        for _ in range(cfg.max_depth + 1):
            made = child_of(node, rng)
            if made is None:
                break
            emit(node, made, root is not None)
            if rng.random() < cfg.branch:
                sibling = child_of(node, rng)
                if sibling is not None:
                    emit(node, sibling, root is not None)
            node = made[0]
    return rows, stats


def _run_block_star(args: tuple[_Config, int]) -> tuple[list[_Row], CorpusStats]:
    return _run_block(*args)


def _check_progress(rows: list[_Row], blocks: int) -> None:
    if not rows and blocks >= 4:
        raise RuntimeError(
            f"no edit of the seeds gave a valid, different walker in {blocks * _LINEAGES_PER_BLOCK}"
            " lineages: are the seeds editable (numbers, add_muscle calls, make_walker)?"
        )


def generate_corpus(
    n: int,
    seed: int = 0,
    seeds: Sequence[str] = SEED_NAMES,
    *,
    max_depth: int = 10,
    branch: float = 0.25,
    max_chars: int = MAX_CHARS,
    limits: WalkerLimits = DEFAULT_LIMITS,
    timeout_s: float = 1.0,
    max_tries: int = 12,
    workers: int = 1,
    generated: float = 0.0,
) -> tuple[list[Example], CorpusStats]:
    """``n`` examples and the statistics of making them, shuffled (``corpus[:k]`` is a
    fair sample); ``jelm/domains/sodarace/CORPUS.md`` has the recipe.

    Args:
        n: number of examples.
        seed: the seed; the same arguments give the same corpus, whatever ``workers``.
        seeds: seed names (``SEED_NAMES``) or program sources to start lineages from.
        max_depth: most earlier edits a parent carries (lineages are ``max_depth + 1``
            edits long, so parent depths are roughly uniform on ``0..max_depth``).
        branch: chance that a parent also gets a second child, which is not followed.
        max_chars: children (hence parents) longer than this are dropped.
        limits: walker validation limits every child must pass.
        timeout_s: wall-clock limit for running one program (main thread only).
        max_tries: edits tried (within the drawn message class) before a lineage ends.
        workers: processes (``spawn``ed, so safe next to JAX); 1 runs in this process.
        generated: share of lineages that start from a freshly written program
            (:func:`jelm.domains.sodarace.corpus.styles.random_program`, drawn by a
            generator of its own, so the other lineages are those of ``generated=0``)
            instead of a seed; 0 gives the seed-only corpus, byte for byte.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= generated <= 1.0:
        raise ValueError(f"generated must be a share in [0, 1], got {generated}")
    if not seeds:
        raise ValueError("no seeds")
    t0 = time.perf_counter()
    cfg = _Config(
        seed,
        tuple(_resolve_seed(s) for s in seeds),
        max_depth,
        branch,
        max_chars,
        limits,
        timeout_s,
        max_tries,
        generated,
    )
    stats = CorpusStats()
    rows: list[_Row] = []
    block = 0
    if workers <= 1:
        while len(rows) < n:
            got, st = _run_block(cfg, block)
            rows.extend(got)
            stats.merge(st)
            block += 1
            _check_progress(rows, block)
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            while len(rows) < n:
                # blocks for the examples still missing (about 13 per lineage), in order
                need = max(workers, math.ceil((n - len(rows)) / (13 * _LINEAGES_PER_BLOCK)))
                jobs = [(cfg, b) for b in range(block, block + need)]
                block += need
                for got, st in pool.imap(_run_block_star, jobs):
                    if len(rows) < n:
                        rows.extend(got)
                        stats.merge(st)
                _check_progress(rows, block)
    rows = rows[:n]
    order = np.random.default_rng(seed).permutation(len(rows))
    examples = [rows[i][0] for i in order]
    for e, depth, fresh in rows:
        stats.generated_examples += fresh
        stats.kinds[e.kind] += 1
        stats.messages[e.message] += 1
        stats.depths[depth] += 1
    stats.examples = len(examples)
    stats.seconds = time.perf_counter() - t0
    return examples, stats


def make_corpus(
    n: int,
    seed: int = 0,
    seeds: Sequence[str] = SEED_NAMES,
    *,
    workers: int = 1,
    generated: float = 0.0,
) -> list[Example]:
    """``n`` diff-model training examples made from ``seeds`` (and, for a ``generated``
    share of lineages, from freshly written programs), shuffled (deterministic for
    ``seed``, whatever ``workers``); see :func:`generate_corpus` for the other knobs and
    ``jelm/domains/sodarace/CORPUS.md`` for the recipe and its measured rates."""
    return generate_corpus(n, seed, seeds, workers=workers, generated=generated)[0]
