"""How a call's prompts become groups of rows that share a prefix, and the shapes they are
sampled at (host code, no JAX).

ELM asks for several children of one parent at a time (§3.1; and the archive hands out
the same elites again and again), so many prompts of one call begin with the same
parent program. :func:`make_plan` finds those shared prefixes (prompts sorted, neighbours
compared), picks how many rows a group holds (``rows``, a power of two: the one that
minimises the key/value slots a decode step reads, by the cost model of
:func:`_step_cost`), and cuts every set of prompts with one prefix into groups of at most
that many rows. Every row keeps at least one token of its own (its suffix), which gives
its first logits.

Shapes are bucketed so that calls with similar prompts reuse compiled programs: prefix
length by :func:`bucket_length`, suffix length by :func:`bucket_suffix`, group count by
:func:`bucket_batch`. A caller that samples again and again (an ELM run) also passes a
:class:`Shapes` record: a call then takes a (rows, prefix, suffix) shape already compiled
when it costs at most ``Shapes.slack`` times its own best, so that a run compiles a few
shapes instead of one per new mix of parents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

#: Prompts share a prefix only when it is at least this many tokens long.
MIN_SHARED = 32
#: A prompt joins a set of prompts with a common prefix only if that keeps at least this
#: fraction of the set's shared prefix, and of its own length.
KEEP_SHARED = 0.9
SHARED_OF_PROMPT = 0.8


def bucket_length(n: int) -> int:
    """Padded prompt length: the smaller of the next power of two and the next multiple of
    256, at least 16. Few buckets (at most 12 up to 2048) and at most 33% padding above 512
    tokens, where the prompts of ELM's diff models live."""
    n = max(n, 16)
    pow2 = 1 << (n - 1).bit_length()
    return min(pow2, -(-n // 256) * 256)


def bucket_suffix(n: int) -> int:
    """Padded suffix length: 1 for one token, else at least 16 and as :func:`bucket_length`."""
    return 1 if n <= 1 else bucket_length(n)


def bucket_batch(n: int) -> int:
    """Padded batch size: the next power of two."""
    return 1 << (max(n, 1) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Group:
    """Rows that share ``prefix``: prompt ``members[i]`` is ``prefix + suffixes[i]``."""

    prefix: tuple[int, ...]
    suffixes: tuple[tuple[int, ...], ...]
    members: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    """The groups of one call and its shapes: ``slots`` groups of ``rows`` rows sample at
    once, prefixes padded to ``prefix_len`` and suffixes to ``suffix_len``."""

    groups: tuple[Group, ...]
    rows: int
    slots: int
    prefix_len: int
    suffix_len: int


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_sets(prompts: Sequence[Sequence[int]]) -> list[tuple[int, list[int]]]:
    """Sets of prompts with a common prefix: ``(prefix length, prompt indices)``.

    Prompts are sorted; a neighbour joins the current set while the set keeps a common
    prefix of at least ``MIN_SHARED`` tokens, ``KEEP_SHARED`` of what it had and
    ``SHARED_OF_PROMPT`` of the newcomer's length (a common header alone does not make a
    set). The prefix is cut so that every member keeps at least one token of its own. A
    prompt that shares nothing is a set of its own, with the prefix all but its last token.
    """
    order = sorted(range(len(prompts)), key=lambda i: tuple(prompts[i]))
    sets: list[tuple[int, list[int]]] = []
    for i in order:
        if sets:
            shared, members = sets[-1]
            last = prompts[members[-1]]
            common = min(shared, _common(last, prompts[i]))
            if (
                common >= MIN_SHARED
                and common >= SHARED_OF_PROMPT * max(len(prompts[i]), len(prompts[members[0]]))
                and (len(members) == 1 or common >= KEEP_SHARED * shared)
            ):
                sets[-1] = (common, [*members, i])
                continue
        sets.append((len(prompts[i]), [i]))
    return [(min(shared, *(len(prompts[m]) - 1 for m in ms)), ms) for shared, ms in sets]


def _groups(
    sets: list[tuple[int, list[int]]], prompts: Sequence[Sequence[int]], rows: int
) -> list[Group]:
    """Each set cut into groups of at most ``rows`` prompts; a group shares the longest
    prefix its members have in common (all but the last token of a lone prompt)."""
    groups = []
    for _, members in sets:
        for start in range(0, len(members), rows):
            chunk = tuple(members[start : start + rows])
            shared = min(len(prompts[m]) - 1 for m in chunk)
            for m in chunk[1:]:
                shared = min(shared, _common(prompts[chunk[0]], prompts[m]))
            groups.append(
                Group(
                    prefix=tuple(prompts[chunk[0]][:shared]),
                    suffixes=tuple(tuple(prompts[m][shared:]) for m in chunk),
                    members=chunk,
                )
            )
    return groups


def _step_cost(
    groups: list[Group], rows: int, tail: int, prefix: int | None = None, suffix: int | None = None
) -> int:
    """Key/value slots a decode step reads for all of ``groups`` (padded shapes: every
    group's prefix once, every row, padding rows too, its suffix and ``tail`` generated
    slots; prefix and suffix padded to their buckets unless given)."""
    if prefix is None:
        prefix = bucket_length(max(len(g.prefix) for g in groups))
    if suffix is None:
        suffix = bucket_suffix(max(len(s) for g in groups for s in g.suffixes))
    return len(groups) * (prefix + rows * (suffix + tail))


@dataclasses.dataclass
class Shapes:
    """The (rows, prefix length, suffix length) shapes earlier plans used (host state kept
    by a caller across calls, :func:`make_plan`). A plan takes the cheapest known shape
    that fits its prompts if its decode step reads at most ``slack`` times the key/value
    slots of the plan's own best shape (:func:`_step_cost`); else it uses its best and
    records it."""

    slack: float = 1.5
    known: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)


def make_plan(
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    max_rows: int,
    share_prefixes: bool = True,
    rows: int | None = None,
    shapes: Shapes | None = None,
) -> Plan:
    """Groups and shapes for sampling ``prompts`` with at most ``max_rows`` rows at once
    (groups of ``rows`` rows if given, else of the cheapest size; with ``shapes``, a known
    shape within its slack, see :class:`Shapes`)."""
    if share_prefixes:
        sets = shared_sets(prompts)
    else:
        sets = [(len(p) - 1, [i]) for i, p in enumerate(prompts)]
    biggest = max(len(ms) for _, ms in sets)
    most = min(bucket_batch(biggest), max_rows)
    options = [1 << k for k in range(most.bit_length()) if 1 << k <= most]
    if rows is not None:
        options = [rows]
    tail = max_new_tokens // 2
    plans = {r: _groups(sets, prompts, r) for r in options}
    rows = min(options, key=lambda r: (_step_cost(plans[r], r, tail), r))
    groups = plans[rows]
    prefix_len = bucket_length(max(len(g.prefix) for g in groups))
    suffix_len = bucket_suffix(max(len(s) for g in groups for s in g.suffixes))
    if shapes is not None:
        best = _step_cost(groups, rows, tail)
        fits = []
        for r, p, s in shapes.known:
            if r not in options:
                continue
            cut = plans[r]
            if max(len(g.prefix) for g in cut) <= p and all(
                len(x) <= s for g in cut for x in g.suffixes
            ):
                fits.append((_step_cost(cut, r, tail, p, s), r, p, s))
        if fits and min(fits)[0] <= shapes.slack * best:
            _, rows, prefix_len, suffix_len = min(fits)
            groups = plans[rows]
        elif (rows, prefix_len, suffix_len) not in shapes.known:
            shapes.known.append((rows, prefix_len, suffix_len))
    groups.sort(key=lambda g: g.members[0])
    return Plan(
        groups=tuple(groups),
        rows=rows,
        slots=bucket_batch(min(len(groups), max(1, max_rows // rows))),
        prefix_len=prefix_len,
        suffix_len=suffix_len,
    )
