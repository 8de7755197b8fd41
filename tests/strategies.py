"""Hypothesis strategies for walkers.

``valid_walker_dicts(limits, max_joints)`` generates dicts in the paper's layout
(``Walker.to_dict``) that pass ``Walker.from_dict(d, limits)``. It aims at the edges of
what validation accepts, because that is where simulators break:

* sizes from the smallest walker (2 joints, 1 link) up to ``max_joints`` joints and up to
  ``limits.max_links`` links;
* joints spread over the whole coordinate box (some exactly on ``+-max_abs_coordinate``)
  or packed on a lattice barely wider than the minimum distance, plus, often, one pair of
  joints exactly ``min_joint_distance`` apart;
* one joint with exactly ``max_links_per_joint`` links;
* muscles with amplitude exactly ``+-max_amplitude``, all-bone, all-muscle and mixed
  walkers, zero and non-zero amplitudes on both kinds, phases anywhere in [-1e6, 1e6]
  cycles (mostly in [0, 1));
* connected walkers (a spanning tree) and walkers in several pieces.

Design: Hypothesis draws only the structural choices (size, layout, which extremes to
include, a seed); a ``random.Random`` seeded from the draw fills in the bulk (jitter,
link partners, per-link amplitude and phase). That keeps generation at a few milliseconds
and makes shrinking fast: a failing example shrinks towards 2 joints, a simple layout and
seed 0 instead of crawling through hundreds of per-link choices.

Usage (from a test module in ``tests/``)::

    from strategies import valid_walker_dicts

    @given(valid_walker_dicts(max_joints=16))
    def test_something(d): ...
"""

from __future__ import annotations

import math
import random

from hypothesis import strategies as st

from jelm.domains.sodarace.api import DEFAULT_LIMITS, WalkerLimits

__all__ = ["valid_walker_dicts"]

#: Phases are drawn from this range (cycles) when "anywhere"; validation accepts any
#: finite phase.
PHASE_RANGE = 1e6


def _too_close(p: tuple[float, float], points: list[tuple[float, float]], d: float) -> bool:
    # The same formula as validation (math.hypot), so "valid" means exactly valid.
    return any(math.hypot(p[0] - q[0], p[1] - q[1]) < d for q in points)


def _exact_neighbour(p: tuple[float, float], d: float, bound: float) -> tuple[float, float]:
    """A point exactly ``d`` from ``p`` along x (nudged by ulps if rounding fell short),
    towards whichever side stays inside the box."""
    x, y = p
    if x + d <= bound:
        q = x + d
        while q - x < d:
            q = math.nextafter(q, math.inf)
    else:
        q = x - d
        while x - q < d:
            q = math.nextafter(q, -math.inf)
    return (q, y)


def _joints(draw, rng: random.Random, limits: WalkerLimits, n_cap: int) -> list:
    d = max(limits.min_joint_distance, 0.0)
    bound = limits.max_abs_coordinate
    n = draw(st.one_of(st.just(2), st.just(n_cap), st.integers(2, n_cap)))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    span = cols - 1  # cols >= rows: lattice steps along the longer side
    # The widest lattice step that fits in the box, and the tightest allowed one.
    s_max = 2 * bound / span if span else 2 * bound
    s_min = d * (1 + 1e-9) if d > 0 else 1e-3
    if s_min > s_max:  # n joints cannot fit under these limits: use as many as fit
        cols = max(1, int(2 * bound / s_min) + 1)
        n = min(n, cols * cols)
        rows = math.ceil(n / cols)
        span = cols - 1
        s_max = 2 * bound / span if span else 2 * bound
    layout = draw(st.sampled_from(["random", "spread", "tight"]))
    if layout == "spread":  # corners of the lattice on the corners of the box
        step, jitter, x0, y0 = s_max, 0.0, -bound, -bound
    else:
        step = s_min if layout == "tight" else s_min + (s_max - s_min) * rng.random()
        jitter = 0.0 if layout == "tight" or rng.random() < 0.3 else rng.random() * (step - d) / 2
        jitter *= 0.999  # strictly less than half the slack, so cells never collide
        x_room = max(0.0, 2 * bound - 2 * jitter - (cols - 1) * step)
        y_room = max(0.0, 2 * bound - 2 * jitter - (rows - 1) * step)
        x0 = -bound + jitter + x_room * rng.random()
        y0 = -bound + jitter + y_room * rng.random()
    points: list[tuple[float, float]] = []
    for k in range(n):
        col, row = k % cols, k // cols
        x = x0 + col * step + rng.uniform(-jitter, jitter)
        y = y0 + row * step + rng.uniform(-jitter, jitter)
        if layout == "spread" and col == cols - 1:
            x = bound  # touch the far edges exactly
        if layout == "spread" and row == rows - 1 and rows > 1:
            y = bound
        points.append((min(max(x, -bound), bound), min(max(y, -bound), bound)))
    if n >= 2 and d > 0 and draw(st.booleans()):
        # Move joint 1 to exactly the minimum distance from joint 0. The float difference
        # of two x's equals d exactly only when x0 + d is representable, so first shift
        # the walker to put joint 0 at x = 0 when it still fits in the box; otherwise
        # settle for d rounded up by an ulp or two.
        x_first = points[0][0]
        if all(abs(x - x_first) <= bound for x, _ in points):
            points = [(x - x_first, y) for x, y in points]
        q = _exact_neighbour(points[0], d, bound)
        if abs(q[0]) <= bound and not _too_close(q, points[2:], d):
            points[1] = q
    # Safety net against float rounding and clamping: drop any joint too close to an
    # earlier one (normally none), but never go below two joints.
    kept: list[tuple[float, float]] = []
    for p in points:
        if not _too_close(p, kept, d):
            kept.append(p)
    if len(kept) < 2:
        kept = [(0.0, 0.0), (max(d, 1e-3) * 2, 0.0)]
    return kept


def _links(draw, rng: random.Random, limits: WalkerLimits, n: int) -> list:
    max_deg = limits.max_links_per_joint
    max_links = limits.max_links
    degree = [0] * n
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()

    def add(i: int, j: int) -> None:
        key = (min(i, j), max(i, j))
        if i == j or key in seen or len(pairs) >= max_links:
            return
        if degree[i] >= max_deg or degree[j] >= max_deg:
            return
        seen.add(key)
        degree[i] += 1
        degree[j] += 1
        pairs.append((i, j))

    # A hub: one joint with exactly max_links_per_joint links (it stays full).
    if n > max_deg and max_links >= max_deg and draw(st.booleans()):
        hub = rng.randrange(n)
        for k in rng.sample([k for k in range(n) if k != hub], max_deg):
            add(hub, k)
    # A spanning tree (a connected walker), or not.
    if draw(st.booleans()):
        for k in range(1, n):
            parents = [p for p in range(k) if degree[p] < max_deg]
            if parents:
                add(k, rng.choice(parents))
    # Then either fill up to the link cap (a dense walker) or add a few random links.
    if draw(st.integers(0, 4)) == 4:
        for offset in range(1, n):
            for i in range(n):
                add(i, (i + offset) % n)
            if len(pairs) >= max_links:
                break
    else:
        for _ in range(draw(st.integers(0, min(max_links, 3 * n)))):
            add(rng.randrange(n), rng.randrange(n))
    if not pairs:
        add(0, 1)
    return pairs


def _props(rng: random.Random, limits: WalkerLimits, muscle_share: float, phases: str) -> dict:
    cap = limits.max_amplitude
    u = rng.random()
    if u < 0.15:
        amplitude = cap
    elif u < 0.3:
        amplitude = -cap
    elif u < 0.4:
        amplitude = 0.0
    else:
        amplitude = rng.uniform(-cap, cap)
    if phases == "unit":
        phase = rng.random()
    elif phases == "special":
        phase = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, -1.0, 0.999999])
    else:  # anywhere
        phase = rng.uniform(-PHASE_RANGE, PHASE_RANGE)
    kind = "muscle" if rng.random() < muscle_share else "distance"
    return {"type": kind, "amplitude": amplitude, "phase": phase}


@st.composite
def valid_walker_dicts(
    draw, limits: WalkerLimits = DEFAULT_LIMITS, max_joints: int | None = None
) -> dict:
    """Walker dicts (``Walker.to_dict`` layout) that pass validation under ``limits``.

    ``max_joints`` caps the number of joints below ``limits.max_joints`` (e.g. to keep a
    physics test small); it must be at least 2.
    """
    n_cap = limits.max_joints if max_joints is None else min(max_joints, limits.max_joints)
    if n_cap < 2:
        raise ValueError(f"valid_walker_dicts needs room for 2 joints, got {n_cap}")
    if limits.max_links < 1 or limits.max_links_per_joint < 1:
        raise ValueError("valid_walker_dicts needs limits that allow at least one link")
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    joints = _joints(draw, rng, limits, n_cap)
    pairs = _links(draw, rng, limits, len(joints))
    muscle_share = draw(st.sampled_from([0.5, 1.0, 0.0, 0.2, 0.8]))
    phases = draw(st.sampled_from(["unit", "special", "anywhere"]))
    muscles = [[i, j, _props(rng, limits, muscle_share, phases)] for i, j in pairs]
    return {"joints": [[x, y] for x, y in joints], "muscles": muscles}
