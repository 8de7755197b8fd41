"""Body plans of generated walker programs (ELM arXiv 2206.08896v1, §4).

A :class:`Plan` is a walker drawn as geometry: its joints (with the group each belongs
to), its links (a bone has amplitude 0) and the parameters it was made from. Each plan
kind also knows how to write itself as a *parametric* program (loops over ``range``,
``math`` geometry, helpers, recursion) that builds exactly these joints and links in
this order; :mod:`.styles` can instead spell any plan out (statements, tables, named
joints, a class). ``draw_plan`` draws a kind and its parameters and returns only plans
that pass the walker limits with a margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jelm.domains.sodarace.api import WalkerLimits
from jelm.domains.sodarace.corpus.writer import Writer, indent

__all__ = ["PLANS", "Code", "Link", "Phases", "Plan", "draw_plan", "plan_problem"]

#: A link: (joint a, joint b, amplitude, phase in cycles, family); amplitude 0 is a bone.
Link = tuple[int, int, float, float, str]


@dataclass
class Code:
    """A program's parts: ``body`` (``make_walker``'s statements after the creator line,
    unindented, without the return), ``defs`` (top-level functions and classes, each a
    list of lines), ``tables`` (module-level data lines) and whether it uses ``math``."""

    body: list[str]
    defs: list[list[str]] = field(default_factory=list)
    tables: list[list[str]] = field(default_factory=list)
    math: bool = False


@dataclass
class Plan:
    """A walker as geometry: ``joints`` in the order the program adds them, ``groups`` (a
    word per joint: ``top``, ``rim``, ``knee``, ...), ``links`` and the kind's ``params``;
    ``code`` writes the plan as a parametric program (``None``: only spelt out);
    ``about`` says what it is in a few words (``a ring of 8 joints round a hub``)."""

    kind: str
    joints: list[tuple[float, float]]
    groups: list[str]
    links: list[Link]
    params: dict[str, Any]
    code: Callable[[Plan, Writer], Code] | None = None
    about: str = ""


@dataclass(frozen=True)
class Phases:
    """How the phases of a family of muscles follow their index ``k`` of ``n``: a wave
    (``k / n``, optionally shifted), a backward wave, steps (``(k * step) % 1.0``),
    alternation (0, 0.5), quarters, or one constant."""

    kind: str
    step: float = 0.0
    offset: float = 0.0

    def value(self, k: int, n: int) -> float:
        """The phase of muscle ``k`` of ``n`` (the same float the program computes)."""
        if self.kind == "wave":
            return k / n if self.offset == 0 else (k / n + self.offset) % 1.0
        if self.kind == "back":
            return (-k / n) % 1.0
        if self.kind == "steps":
            return (k * self.step) % 1.0
        if self.kind == "alt":
            return 0.5 * (k % 2)
        if self.kind == "quarter":
            return 0.25 * (k % 4)
        return self.offset

    def expr(self, w: Writer, var: str, n: str) -> str:
        """The phase as the program writes it, for index ``var`` of count ``n`` (names or
        literals; a compound count is parenthesised)."""
        n = f"({n})" if " " in n and not n.startswith("(") else n
        if self.kind == "wave":
            if self.offset == 0:
                return f"{var} / {n}"
            off = w.const("phase", w.num(self.offset))
            return f"({var} / {n} + {off}) % 1.0"
        if self.kind == "back":
            return f"(-{var} / {n}) % 1.0"
        if self.kind == "steps":
            return f"({var} * {w.const('step', w.num(self.step))}) % 1.0"
        if self.kind == "alt":
            return w.pick(
                (
                    f"0.5 * ({var} % 2)",
                    f"({var} % 2) * 0.5",
                    f"0.0 if {var} % 2 == 0 else 0.5",
                    f"[0.0, 0.5][{var} % 2]",
                )
            )
        if self.kind == "quarter":
            return w.pick((f"0.25 * ({var} % 4)", f"({var} % 4) * 0.25"))
        return w.const("phase", w.num(self.offset), "phase in cycles")


def _draw_phases(rng: np.random.Generator, allow_const: bool = True) -> Phases:
    """A phase pattern for a family of muscles (``const`` only if allowed)."""
    kinds = ["wave", "back", "steps", "alt", "quarter"] + (["const"] if allow_const else [])
    p = np.asarray([3, 1.2, 2.2, 2, 1, 0.6][: len(kinds)])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    step = float(rng.choice([0.1, 0.15, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.85]))
    offset = float(rng.choice([0.0, 0.0, 0.1, 0.25, 0.5, 0.75]))
    if kind == "const":
        offset = float(rng.choice([0.0, 0.25, 0.5]))
    return Phases(
        kind, step if kind == "steps" else 0.0, offset if kind in ("wave", "const") else 0.0
    )


def _r(rng: np.random.Generator, lo: float, hi: float, decimals: int = 1) -> float:
    """A uniform draw in ``[lo, hi)`` rounded to ``decimals`` places."""
    return round(float(rng.uniform(lo, hi)), decimals)


def _amp(rng: np.random.Generator, lo: float = 3.0, hi: float = 9.0) -> float:
    """A muscle amplitude in the seeds' range, one decimal."""
    return _r(rng, lo, hi)


def _plus(text: str, value: int, d: int) -> str:
    """``text + d`` for a name, the number itself for a literal (``N + 1`` or ``6``)."""
    if text.isdigit():
        return str(value + d)
    return f"{text} + {d}" if d > 0 else f"{text} - {-d}"


def _phase_line(w: Writer, ph: Phases, var: str, n: str, body: list[str]) -> str:
    """The phase expression, or a local name bound to it by a line appended to ``body``."""
    e = ph.expr(w, var, n)
    if len(e) > 12 and w.coin(0.5):
        name = w.name("phase")
        body.append(f"{name} = {e}")
        return name
    return e


def _x(x0: str, term: str) -> str:
    """``x0 + term``, or ``term`` alone when the offset is zero."""
    return term if x0 in ("0.0", "0") else f"{x0} + {term}"


# --------------------------------------------------------------------------- chain
def draw_chain(rng: np.random.Generator) -> Plan:
    """A snake of boxes lying on the ground; its top chord or diagonals are muscles."""
    n = int(rng.integers(3, 8))
    bw, bh = _r(rng, 1.5, 3.0), _r(rng, 1.2, 3.0)
    x0 = 0.0 if rng.random() < 0.6 else -round(n * bw / 2, 1)
    order = "rows" if rng.random() < 0.55 else "cols"
    top_first = bool(rng.random() < 0.5)
    active = ("top", "diag", "cross")[int(rng.integers(3))]
    ph, amp = _draw_phases(rng), _amp(rng)
    xs = [x0 + k * bw for k in range(n + 1)]
    joints: list[tuple[float, float]] = []
    groups: list[str] = []
    if order == "rows":
        rows = [("top", bh), ("bottom", 0.0)] if top_first else [("bottom", 0.0), ("top", bh)]
        for g, y in rows:
            joints += [(x, y) for x in xs]
            groups += [g] * (n + 1)
        t0 = 0 if top_first else n + 1
        b0 = n + 1 - t0
        top = [t0 + k for k in range(n + 1)]
        bot = [b0 + k for k in range(n + 1)]
    else:
        top, bot = [], []
        for x in xs:
            pair = [("top", bh), ("bottom", 0.0)] if top_first else [("bottom", 0.0), ("top", bh)]
            for g, y in pair:
                (top if g == "top" else bot).append(len(joints))
                joints.append((x, y))
                groups.append(g)
    links: list[Link] = [(top[k], bot[k], 0.0, 0.0, "post") for k in range(n + 1)]
    for k in range(n):
        p = ph.value(k, n)
        links.append((bot[k], bot[k + 1], 0.0, 0.0, "keel"))
        links.append(
            (
                top[k],
                top[k + 1],
                amp if active == "top" else 0.0,
                p if active == "top" else 0.0,
                "back",
            )
        )
        on = active != "top"
        links.append((bot[k], top[k + 1], amp if on else 0.0, p if on else 0.0, "brace"))
        if active == "cross":
            links.append((top[k], bot[k + 1], 0.0, 0.0, "brace"))
    params = dict(
        n=n, bw=bw, bh=bh, x0=x0, order=order, top_first=top_first, active=active, ph=ph, amp=amp
    )
    return Plan("chain", joints, groups, links, params, _code_chain, f"a snake of {n} boxes")


def _code_chain(p: Plan, w: Writer) -> Code:
    """The snake as loops: two rows (or columns of pairs) of joints, then posts, floor, roof and
    braces bay by bay."""
    q = p.params
    n, c = q["n"], w.creator
    N = w.const("n", str(n), "boxes in the snake")
    W = w.const("width", w.num(q["bw"], 1))
    H = w.const("height", w.num(q["bh"], 1))
    X0 = w.const("x0", w.num(q["x0"], 1)) if q["x0"] else "0.0"
    AMP = w.const("amp", w.num(q["amp"], 1))
    k = w.name("idx")
    top, bot = w.name("top"), w.name("bottom")
    body: list[str] = []
    x_term = _x(X0, f"{k} * {W}")
    if q["order"] == "rows":
        rows = [(top, H), (bot, "0.0")] if q["top_first"] else [(bot, "0.0"), (top, H)]
        body += w.note("two rows of joints, one per box edge", "the joints, row by row")
        for name, y in rows:
            body += w.make_list(name, k, _plus(N, n, 1), f"{c}.add_joint({x_term}, {y})")
    else:
        cols, x = w.name("cols"), w.name("x")
        pair = f"{c}.add_joint({x}, {H}), {c}.add_joint({x}, 0.0)"
        if not q["top_first"]:
            pair = f"{c}.add_joint({x}, 0.0), {c}.add_joint({x}, {H})"
        body += w.note("one column of two joints per box edge", "columns, left to right")
        body += [f"{cols} = []"]
        body += w.loop(k, _plus(N, n, 1), [f"{x} = {x_term}", f"{cols}.append(({pair}))"])
        names = f"{top}, {bot}" if q["top_first"] else f"{bot}, {top}"
        if w.coin(0.5):
            col = w.name("pair")
            t, b = (0, 1) if q["top_first"] else (1, 0)
            body += [f"{top} = [{col}[{t}] for {col} in {cols}]"]
            body += [f"{bot} = [{col}[{b}] for {col} in {cols}]"]
        else:
            body += [f"{names} = map(list, zip(*{cols}))"]
    body += w.gap()
    body += w.note("posts", "the vertical edges are bones", "uprights")
    body += w.loop(k, _plus(N, n, 1), [w.bone(f"{top}[{k}]", f"{bot}[{k}]")])
    body += w.gap()
    inner: list[str] = [w.bone(f"{bot}[{k}]", f"{bot}[{k} + 1]")]
    phase = _phase_line(w, q["ph"], k, N, inner)
    if q["active"] == "top":
        inner.append(w.muscle(f"{top}[{k}]", f"{top}[{k} + 1]", AMP, phase))
        inner.append(w.bone(f"{bot}[{k}]", f"{top}[{k} + 1]"))
    else:
        inner.append(w.bone(f"{top}[{k}]", f"{top}[{k} + 1]"))
        inner.append(w.muscle(f"{bot}[{k}]", f"{top}[{k} + 1]", AMP, phase))
        if q["active"] == "cross":
            inner.append(w.bone(f"{top}[{k}]", f"{bot}[{k} + 1]"))
    body += w.note("each box: floor, roof and a diagonal", "link neighbouring boxes")
    body += w.loop(k, N, inner)
    return Code(body)


# --------------------------------------------------------------------------- ring
def draw_ring(rng: np.random.Generator) -> Plan:
    """A polygon of bones, with a hub of muscle spokes or muscle chords across it."""
    hub = bool(rng.random() < 0.55)
    n = int(rng.integers(5, 11 if hub else 13))
    r = _r(rng, 2.5, 6.0)
    cy = round(r + float(rng.choice([0.0, 0.0, 0.3, 0.5, 1.0])), 1)
    a0 = float(rng.choice([0.0, 0.0, 90.0, 15.0, 30.0, 45.0]))
    chords = (
        "none"
        if hub and rng.random() < 0.6
        else ("skip" if n % 2 or rng.random() < 0.5 else "across")
    )
    hub_first = bool(rng.random() < 0.6)
    ph, amp = _draw_phases(rng), _amp(rng)
    rim = [
        (
            r * math.cos(math.radians(a0 + k * 360 / n)),
            cy + r * math.sin(math.radians(a0 + k * 360 / n)),
        )
        for k in range(n)
    ]
    joints, groups = list(rim), ["rim"] * n
    off = 0
    if hub:
        if hub_first:
            joints, groups, off = [(0.0, cy), *joints], ["hub", *groups], 1
        else:
            joints, groups = [*joints, (0.0, cy)], [*groups, "hub"]
    h = 0 if hub_first else n
    links: list[Link] = [(off + k, off + (k + 1) % n, 0.0, 0.0, "rim") for k in range(n)]
    if hub:
        links += [(h, off + k, amp, ph.value(k, n), "spoke") for k in range(n)]
    if chords == "skip":
        a2 = amp if not hub else round(amp * 0.5, 1)
        links += [(off + k, off + (k + 2) % n, a2, ph.value(k, n), "chord") for k in range(n)]
    elif chords == "across":
        m = n // 2
        links += [(off + k, off + k + m, amp, ph.value(k, m), "chord") for k in range(m)]
    params = dict(
        n=n, r=r, cy=cy, a0=a0, hub=hub, chords=chords, ph=ph, amp=amp, hub_first=hub_first
    )
    about = f"a ring of {n} joints" + (" round a hub" if hub else "")
    return Plan("ring", joints, groups, links, params, _code_ring, about)


def _angle(w: Writer, var: str, n: str, a0: float, sweep: str = "360") -> str:
    """The angle of point ``var`` of ``n`` starting at ``a0`` degrees, as the program
    writes it (radians)."""
    if a0 == 0 and sweep == "360":
        return w.pick(
            (
                f"math.tau * {var} / {n}",
                f"math.radians({var} * 360 / {n})",
                f"2 * math.pi * ({var} / {n})",
            )
        )
    start = w.const("start", w.num(a0, 1), "degrees")
    return f"math.radians({start} + {var} * {sweep} / {n})"


def _code_ring(p: Plan, w: Writer) -> Code:
    """The polygon with ``math`` geometry (inline, a nested function or a helper), its rim closed
    three ways, then spokes or chords."""
    q = p.params
    n, c = q["n"], w.creator
    N = w.const("n_rim", str(n), "corners of the polygon")
    R = w.const("radius", w.num(q["r"], 1))
    CY = w.const("cy", w.num(q["cy"], 1), "height of the centre")
    AMP = w.const("amp", w.num(q["amp"], 1))
    k, rim, hub = w.name("idx"), w.name("rim"), w.name("hub")
    angle = _angle(w, k, N, q["a0"])
    body: list[str] = []
    defs: list[list[str]] = []
    if q["hub"] and q["hub_first"]:
        body += w.note("the hub", "centre joint")
        body += [f"{hub} = {c}.add_joint(0.0, {CY})"]
    variant = w.pick(("inline", "nested", "helper"))
    a, x, y = w.name("angle"), w.name("x"), w.name("y")
    if variant == "inline":
        pre = [f"{a} = {angle}", f"{x} = {R} * math.cos({a})", f"{y} = {CY} + {R} * math.sin({a})"]
        body += w.note("corners of the polygon", "rim joints around the circle")
        body += [f"{rim} = []", *w.loop(k, N, [*pre, f"{rim}.append({c}.add_joint({x}, {y}))"])]
    elif variant == "nested":
        fn = w.func("corner", "on_circle", "point_at", "place")
        body += [
            f"def {fn}({k}):",
            *indent(w.note("angle measured from the x axis")),
            f"    {a} = {angle}",
            f"    return {R} * math.cos({a}), {CY} + {R} * math.sin({a})",
            "",
        ]
        item = f"{c}.add_joint(*{fn}({k}))"
        body += w.make_list(rim, k, N, item)
    else:
        fn = w.func("polygon", "circle_points", "make_ring", "place_ring")
        cnt, rad, hgt = w.name("count"), w.name("radius"), w.name("centre_y")
        pts = w.fresh("joints")
        inner_angle = _angle(w, k, cnt, q["a0"])
        defs.append(
            [
                f"def {fn}({c}, {cnt}, {rad}, {hgt}):",
                *indent(w.doc("A ring of joints evenly spaced on a circle.")),
                f"    {pts} = []",
                *indent(
                    w.loop(
                        k,
                        cnt,
                        [
                            f"{a} = {inner_angle}",
                            f"{x} = {rad} * math.cos({a})",
                            f"{y} = {hgt} + {rad} * math.sin({a})",
                            f"{pts}.append({c}.add_joint({x}, {y}))",
                        ],
                    )
                ),
                f"    return {pts}",
            ]
        )
        body += [f"{rim} = {fn}({c}, {N}, {R}, {CY})"]
    if q["hub"] and not q["hub_first"]:
        body += [f"{hub} = {c}.add_joint(0.0, {CY})"]
    body += w.gap()
    close = w.pick(("mod", "minus", "zip"))
    body += w.note("the rim is a ring of bones", "close the polygon", "edges")
    if close == "mod":
        body += w.loop(k, N, [w.bone(f"{rim}[{k}]", f"{rim}[({k} + 1) % {N}]")])
    elif close == "minus":
        body += w.loop(k, N, [w.bone(f"{rim}[{k} - 1]", f"{rim}[{k}]")])
    else:
        a_, b_ = w.name("a"), w.name("b")
        body += [f"for {a_}, {b_} in zip({rim}, {rim}[1:] + {rim}[:1]):", "    " + w.bone(a_, b_)]
    inner: list[str] = []
    if q["hub"]:
        phase = _phase_line(w, q["ph"], k, N, inner)
        inner.append(w.muscle(hub, f"{rim}[{k}]", AMP, phase))
    if q["chords"] == "skip":
        amp2 = AMP if not q["hub"] else w.const("amp2", w.num(round(q["amp"] * 0.5, 1), 1))
        if not inner:
            phase = _phase_line(w, q["ph"], k, N, inner)
        inner.append(w.muscle(f"{rim}[{k}]", f"{rim}[({k} + 2) % {N}]", amp2, phase))
    if inner:
        body += w.gap() + w.note("muscles, one wave round the body", "spokes and chords")
        body += w.loop(k, N, inner)
    if q["chords"] == "across":
        half = w.name("idx2")
        body += w.gap() + w.note("muscles straight across the ring")
        lines = [f"{half} = {N} // 2"]
        inner = []
        phase = _phase_line(w, q["ph"], k, half, inner)
        inner.append(w.muscle(f"{rim}[{k}]", f"{rim}[{k} + {half}]", AMP, phase))
        body += lines + w.loop(k, half, inner)
    return Code(body, defs, math=True)


# --------------------------------------------------------------------------- grid
def draw_grid(rng: np.random.Generator) -> Plan:
    """A mat of rows x cols joints: bones along the rows and columns, muscles on the
    diagonals (or on the top row)."""
    rows, cols = int(rng.integers(2, 4)), int(rng.integers(3, 6))
    dx, dy = _r(rng, 1.5, 2.6), _r(rng, 1.2, 2.4)
    active = ("diag", "xdiag", "top")[int(rng.integers(3))]
    ph, amp = _draw_phases(rng), _amp(rng)
    store = ("dict", "nested", "flat")[int(rng.integers(3))]
    joints = [(c * dx, r * dy) for r in range(rows) for c in range(cols)]
    at = {(r, c): r * cols + c for r in range(rows) for c in range(cols)}
    links: list[Link] = []
    for r in range(rows):
        for c in range(cols):
            if c + 1 < cols:
                on = active == "top" and r == rows - 1
                links.append(
                    (
                        at[r, c],
                        at[r, c + 1],
                        amp if on else 0.0,
                        ph.value(c, cols) if on else 0.0,
                        "row",
                    )
                )
            if r + 1 < rows:
                links.append((at[r, c], at[r + 1, c], 0.0, 0.0, "column"))
            if r + 1 < rows and c + 1 < cols:
                on = active != "top"
                links.append(
                    (
                        at[r, c],
                        at[r + 1, c + 1],
                        amp if on else 0.0,
                        ph.value(c, cols) if on else 0.0,
                        "diagonal",
                    )
                )
                if active == "xdiag":
                    links.append((at[r + 1, c], at[r, c + 1], 0.0, 0.0, "diagonal"))
    params = dict(rows=rows, cols=cols, dx=dx, dy=dy, active=active, ph=ph, amp=amp, store=store)
    about = f"a mat of {rows} x {cols} joints"
    return Plan("grid", joints, ["grid"] * len(joints), links, params, _code_grid, about)


def _code_grid(p: Plan, w: Writer) -> Code:
    """The mat as nested loops over a dict keyed ``(row, col)``, a list of rows or a flat list
    behind a nested accessor."""
    q = p.params
    c = w.creator
    R = w.const("rows", str(q["rows"]))
    C = w.const("cols", str(q["cols"]))
    DX = w.const("dx", w.num(q["dx"], 1))
    DY = w.const("dy", w.num(q["dy"], 1))
    AMP = w.const("amp", w.num(q["amp"], 1))
    g, r, k = w.name("grid"), w.name("row"), w.name("col")
    add = f"{c}.add_joint({k} * {DX}, {r} * {DY})"
    body: list[str] = []
    body += w.note("joints row by row", "the lattice")
    if q["store"] == "dict":
        ref = lambda rr, cc: f"{g}[{rr}, {cc}]"
        if w.comprehension:
            body += [
                f"{g} = {{",
                f"    ({r}, {k}): {add}",
                f"    for {r} in range({R})",
                f"    for {k} in range({C})",
                "}",
            ]
        else:
            body += [
                f"{g} = {{}}",
                f"for {r} in range({R}):",
                f"    for {k} in range({C}):",
                f"        {g}[{r}, {k}] = {add}",
            ]
    elif q["store"] == "nested":
        ref = lambda rr, cc: f"{g}[{rr}][{cc}]"
        one = f"{g} = [[{add} for {k} in range({C})] for {r} in range({R})]"
        if len(one) > 88:
            one = f"{g} = [\n    [{add} for {k} in range({C})]\n    for {r} in range({R})\n]"
        body += one.split("\n")
    else:
        fn = w.func("at", "node", "cell", "idx_of")
        ref = lambda rr, cc: f"{fn}({rr}, {cc})"
        body += [
            f"{g} = []",
            f"for {r} in range({R}):",
            f"    for {k} in range({C}):",
            f"        {g}.append({add})",
        ]
        body += ["", f"def {fn}({r}, {k}):", f"    return {g}[{r} * {C} + {k}]", ""]
    body += w.gap()
    inner: list[str] = []
    phase = _phase_line(w, q["ph"], k, C, inner)
    top_on = q["active"] == "top"
    row_line = w.bone(ref(r, k), ref(r, f"{k} + 1"))
    if top_on:
        row_line = w.muscle(ref(r, k), ref(r, f"{k} + 1"), AMP, phase)
        inner.append(f"if {k} + 1 < {C}:")
        inner += [
            f"    if {r} == {R} - 1:",
            "        " + row_line,
            "    else:",
            "        " + w.bone(ref(r, k), ref(r, f"{k} + 1")),
        ]
    else:
        inner += [f"if {k} + 1 < {C}:", "    " + row_line]
    inner += [f"if {r} + 1 < {R}:", "    " + w.bone(ref(r, k), ref(f"{r} + 1", k))]
    diag = (
        w.bone(ref(r, k), ref(f"{r} + 1", f"{k} + 1"))
        if top_on
        else w.muscle(ref(r, k), ref(f"{r} + 1", f"{k} + 1"), AMP, phase)
    )
    dl = [diag]
    if q["active"] == "xdiag":
        dl.append(w.bone(ref(f"{r} + 1", k), ref(r, f"{k} + 1")))
    inner += [f"if {r} + 1 < {R} and {k} + 1 < {C}:", *indent(dl)]
    body += w.note("bones along rows and columns, muscles on the diagonals", "links")
    body += [f"for {r} in range({R}):", f"    for {k} in range({C}):", *indent(inner, 2)]
    return Code(body)


# --------------------------------------------------------------------------- truss
def draw_truss(rng: np.random.Generator) -> Plan:
    """A Warren truss (a bridge of triangles) lying on its bottom chord."""
    n = int(rng.integers(3, 7))
    half, h = _r(rng, 0.8, 1.5), _r(rng, 1.2, 2.5)
    active = ("top", "diag")[int(rng.integers(2))]
    layout = ("rows", "zigzag")[int(rng.integers(2))]
    ph, amp = _draw_phases(rng), _amp(rng)
    links: list[Link] = []
    if layout == "rows":
        bw = round(2 * half, 1)
        joints = [(k * bw, 0.0) for k in range(n + 1)] + [((k + 0.5) * bw, h) for k in range(n)]
        groups = ["bottom"] * (n + 1) + ["top"] * n
        for k in range(n):
            t = n + 1 + k
            links.append((k, k + 1, 0.0, 0.0, "chord"))
            on = active == "diag"
            links.append((k, t, amp if on else 0.0, ph.value(k, n) if on else 0.0, "web"))
            links.append((t, k + 1, 0.0, 0.0, "web"))
            if k + 1 < n:
                on = active == "top"
                links.append((t, t + 1, amp if on else 0.0, ph.value(k, n) if on else 0.0, "chord"))
        params = dict(n=n, bw=bw, h=h, active=active, layout=layout, ph=ph, amp=amp)
    else:
        m = 2 * n + 1
        joints = [(k * half, h * (k % 2)) for k in range(m)]
        groups = ["joints"] * m
        links += [(k, k + 1, 0.0, 0.0, "web") for k in range(m - 1)]
        for k in range(m - 2):
            on = k % 2 == 1
            links.append((k, k + 2, amp if on else 0.0, ph.value(k, m) if on else 0.0, "chord"))
        params = dict(n=n, half=half, h=h, active="top", layout=layout, ph=ph, amp=amp)
    return Plan("truss", joints, groups, links, params, _code_truss, f"a truss of {n} triangles")


def _code_truss(p: Plan, w: Writer) -> Code:
    """The truss as two chords of joints and one loop of triangles, or as one zigzag list whose odd
    chords are muscles."""
    q = p.params
    n, c = q["n"], w.creator
    N = w.const("n", str(n), "triangles along the bottom")
    H = w.const("height", w.num(q["h"], 1))
    AMP = w.const("amp", w.num(q["amp"], 1))
    k = w.name("idx")
    body: list[str] = []
    if q["layout"] == "rows":
        W = w.const("width", w.num(q["bw"], 1))
        bot, top = w.name("bottom"), w.name("top")
        body += w.note("the bottom chord", "joints on the ground")
        body += w.make_list(bot, k, _plus(N, n, 1), f"{c}.add_joint({k} * {W}, 0.0)")
        body += w.note("apexes between them", "top joints over the middle of each bay")
        body += w.make_list(top, k, N, f"{c}.add_joint(({k} + 0.5) * {W}, {H})")
        body += w.gap()
        inner: list[str] = [w.bone(f"{bot}[{k}]", f"{bot}[{k} + 1]")]
        phase = _phase_line(w, q["ph"], k, N, inner)
        if q["active"] == "diag":
            inner.append(w.muscle(f"{bot}[{k}]", f"{top}[{k}]", AMP, phase))
        else:
            inner.append(w.bone(f"{bot}[{k}]", f"{top}[{k}]"))
        inner.append(w.bone(f"{top}[{k}]", f"{bot}[{k} + 1]"))
        if q["active"] == "top":
            inner += [
                f"if {k} + 1 < {N}:",
                "    " + w.muscle(f"{top}[{k}]", f"{top}[{k} + 1]", AMP, phase),
            ]
        else:
            inner += [f"if {k} > 0:", "    " + w.bone(f"{top}[{k} - 1]", f"{top}[{k}]")]
        body += w.note("one triangle per bay", "chords and web")
        body += w.loop(k, N, inner)
    else:
        HALF = w.const("dx", w.num(q["half"], 1), "half a bay")
        pts = w.name("joints")
        body += w.note("a zigzag: even joints on the ground, odd ones up", "zigzag joints")
        body += w.make_list(pts, k, f"2 * {N} + 1", f"{c}.add_joint({k} * {HALF}, {H} * ({k} % 2))")
        body += w.gap()
        body += w.loop(k, f"len({pts}) - 1", [w.bone(f"{pts}[{k}]", f"{pts}[{k} + 1]")])
        inner = []
        phase = _phase_line(w, q["ph"], k, f"len({pts})", inner)
        inner += [
            f"if {k} % 2:",
            "    " + w.muscle(f"{pts}[{k}]", f"{pts}[{k} + 2]", AMP, phase),
            "else:",
            "    " + w.bone(f"{pts}[{k}]", f"{pts}[{k} + 2]"),
        ]
        body += w.note("chords skip one joint: muscles on top, bones below")
        body += w.loop(k, f"len({pts}) - 2", inner)
    return Code(body)


# --------------------------------------------------------------------------- tree
def draw_tree(rng: np.random.Generator) -> Plan:
    """A binary tree hanging from its root: bones to the children, a muscle between
    each pair of siblings; the leaves stand on the ground."""
    depth = int(rng.integers(2, 4))
    drop = _r(rng, 1.2, 2.5)
    spread = _r(rng, 2.5, 4.0)
    shrink = 0.5 if depth == 3 or rng.random() < 0.5 else 0.6
    p0 = float(rng.choice([0.0, 0.25, 0.5]))
    dl, dr = float(rng.choice([0.1, 0.25, 0.3])), float(rng.choice([0.5, 0.6, 0.75]))
    amp = _amp(rng)
    y_root = depth * drop
    joints: list[tuple[float, float]] = [(0.0, y_root)]
    groups = ["hub"]
    links: list[Link] = []

    def grow(node: int, d: int, sp: float, phase: float) -> None:
        if d == 0:
            return
        x, y = joints[node]
        left, right = len(joints), len(joints) + 1
        joints.extend([(x - sp, y - drop), (x + sp, y - drop)])
        groups.extend(["node", "node"])
        links.extend([(node, left, 0.0, 0.0, "branch"), (node, right, 0.0, 0.0, "branch")])
        links.append((left, right, amp, phase, "twig"))
        grow(left, d - 1, sp * shrink, (phase + dl) % 1.0)
        grow(right, d - 1, sp * shrink, (phase + dr) % 1.0)

    grow(0, depth, spread, p0)
    params = dict(
        depth=depth,
        drop=drop,
        spread=spread,
        shrink=shrink,
        p0=p0,
        dl=dl,
        dr=dr,
        amp=amp,
        y_root=y_root,
    )
    return Plan("tree", joints, groups, links, params, _code_tree, f"a tree {depth} levels deep")


def _code_tree(p: Plan, w: Writer) -> Code:
    """The tree as a recursive function (module-level, or nested in ``make_walker``) that returns
    the leaves."""
    q = p.params
    c = w.creator
    D = w.const("depth", str(q["depth"]), "levels below the root")
    DROP = w.const("drop", w.num(q["drop"], 1))
    SPREAD = w.const("spread", w.num(q["spread"], 1))
    SHRINK = w.const("shrink", w.num(q["shrink"], 1))
    AMP = w.const("amp", w.num(q["amp"], 1))
    fn = w.func("grow", "branch", "split", "sprout", "fork")
    node, d, sp, ph = w.name("node"), w.name("level"), w.name("spread"), w.name("phase")
    left, right, feet = w.name("left"), w.name("right"), w.name("feet")
    nested = w.coin(0.4)  # a function inside make_walker, using its creator

    def call(*args: str) -> str:
        return f"{fn}({', '.join(args if nested else (c, *args))})"

    def down(child: str, turn: float) -> str:
        return call(child, f"{d} - 1", f"{sp} * {SHRINK}", f"({ph} + {w.num(turn)}) % 1.0")

    lines = [
        f"def {call(node, d, sp, ph)}:",
        *indent(w.doc("Add two children under a node, recursively; return the leaves.")),
        f"    if {d} == 0:",
        f"        return [{node}]",
        f"    {left} = {c}.add_joint({node}[0] - {sp}, {node}[1] - {DROP})",
        f"    {right} = {c}.add_joint({node}[0] + {sp}, {node}[1] - {DROP})",
        "    " + w.bone(node, left),
        "    " + w.bone(node, right),
        "    " + w.muscle(left, right, AMP, ph),
    ]
    last = f"    return {down(left, q['dl'])} + {down(right, q['dr'])}"
    if len(last) > 92 or w.coin(0.3):
        lines += [
            f"    {feet} = {down(left, q['dl'])}",
            f"    {feet} += {down(right, q['dr'])}",
            f"    return {feet}",
        ]
    else:
        lines.append(last)
    root = w.name("hub")
    y = w.num(q["y_root"], 2) if D.isdigit() else f"{D} * {DROP}"
    body = w.note("the root, high enough for the leaves to touch the ground")
    body += [f"{root} = {c}.add_joint(0.0, {y})"]
    body += [f"{w.name('tips')} = {call(root, D, SPREAD, w.num(q['p0']))}"]
    if nested:
        return Code([*lines, "", *body])
    return Code(body, [lines])


# --------------------------------------------------------------------------- star
def draw_star(rng: np.random.Generator) -> Plan:
    """A centre with arms of one or two bones; muscles join neighbouring arm ends (or
    pull each arm's tip towards the centre)."""
    n = int(rng.integers(3, 9))
    two = bool(rng.random() < 0.6)
    r1 = _r(rng, 1.5, 3.0)
    r2 = round(r1 + _r(rng, 1.2, 2.5), 1)
    reach = two and n <= 5 and rng.random() < 0.5
    a0 = float(rng.choice([0.0, 90.0, 270.0, 30.0]))
    cy = round((r2 if two else r1) + float(rng.choice([0.3, 0.5, 1.0])), 1)
    ph, amp = _draw_phases(rng), _amp(rng)
    joints: list[tuple[float, float]] = [(0.0, cy)]
    groups = ["hub"]
    inner, tips = [], []
    for k in range(n):
        ang = math.radians(a0 + k * 360 / n)
        co, si = math.cos(ang), math.sin(ang)
        inner.append(len(joints))
        joints.append((r1 * co, cy + r1 * si))
        groups.append("inner")
        if two:
            tips.append(len(joints))
            joints.append((r2 * co, cy + r2 * si))
            groups.append("tips")
    ends = tips if two else inner
    links: list[Link] = []
    for k in range(n):
        links.append((0, inner[k], 0.0, 0.0, "arm"))
        if two:
            links.append((inner[k], tips[k], 0.0, 0.0, "arm"))
        if reach:
            links.append((0, tips[k], amp, ph.value(k, n), "reach"))
        else:
            links.append((ends[k], ends[(k + 1) % n], amp, ph.value(k, n), "web"))
    params = dict(n=n, two=two, r1=r1, r2=r2, reach=reach, a0=a0, cy=cy, ph=ph, amp=amp)
    return Plan("star", joints, groups, links, params, _code_star, f"a star of {n} arms")


def _code_star(p: Plan, w: Writer) -> Code:
    """The star: one loop placing the arms with ``cos``/``sin``, one linking them."""
    q = p.params
    n, c = q["n"], w.creator
    N = w.const("n", str(n), "arms")
    R1 = w.const("r1", w.num(q["r1"], 1))
    R2 = w.const("r2", w.num(q["r2"], 1)) if q["two"] else ""
    CY = w.const("cy", w.num(q["cy"], 1))
    AMP = w.const("amp", w.num(q["amp"], 1))
    k, hub, inn, tip = w.name("idx"), w.name("hub"), w.name("inner"), w.name("tips")
    a = w.name("angle")
    body = w.note("the centre", "body centre")
    body += [f"{hub} = {c}.add_joint(0.0, {CY})", f"{inn} = []"] + (
        [f"{tip} = []"] if q["two"] else []
    )
    co, si = w.name("cos"), w.name("sin")
    pre = [f"{a} = {_angle(w, k, N, q['a0'])}", f"{co}, {si} = math.cos({a}), math.sin({a})"]
    pre.append(f"{inn}.append({c}.add_joint({R1} * {co}, {CY} + {R1} * {si}))")
    if q["two"]:
        pre.append(f"{tip}.append({c}.add_joint({R2} * {co}, {CY} + {R2} * {si}))")
    body += w.note("arms", "one arm per direction") + w.loop(k, N, pre) + w.gap()
    ends = tip if q["two"] else inn
    inner = [w.bone(hub, f"{inn}[{k}]")]
    if q["two"]:
        inner.append(w.bone(f"{inn}[{k}]", f"{tip}[{k}]"))
    phase = _phase_line(w, q["ph"], k, N, inner)
    if q["reach"]:
        inner.append(w.muscle(hub, f"{tip}[{k}]", AMP, phase))
    else:
        inner.append(w.muscle(f"{ends}[{k}]", f"{ends}[({k} + 1) % {N}]", AMP, phase))
    body += w.note("bones along the arms, muscles between them", "links") + w.loop(k, N, inner)
    return Code(body, math=True)


# --------------------------------------------------------------------------- legged
def draw_legged(rng: np.random.Generator) -> Plan:
    """A box body on 2, 3, 4 or 6 legs of one or two bones, each swung by muscles."""
    n = int(rng.choice([2, 3, 4, 6]))
    bw = _r(rng, 1.5, 3.0 if n < 6 else 2.2)
    th = _r(rng, 1.0, 2.0)
    ll = _r(rng, 2.0, 4.0)
    two = bool(rng.random() < 0.6)
    kdx = _r(rng, 0.5, 1.2) * (1 if rng.random() < 0.7 else -1)
    fdx = float(rng.choice([0.0, 0.3, -0.3, 0.5])) if two else float(rng.choice([0.5, -0.5, 0.8]))
    ph = _draw_phases(rng, allow_const=False)
    off = float(rng.choice([0.25, 0.5, 0.75]))
    amp, amp2 = _amp(rng, 4.0, 9.0), _amp(rng, 2.0, 6.0)
    x0 = 0.0
    top = [(x0 + k * bw, ll + th) for k in range(n)]
    hips = [(x0 + k * bw, ll) for k in range(n)]
    joints = top + hips
    groups = ["top"] * n + ["hip"] * n
    links: list[Link] = []
    for k in range(n - 1):
        links += [(k, k + 1, 0.0, 0.0, "body"), (n + k, n + k + 1, 0.0, 0.0, "body")]
        links.append((n + k, k + 1, 0.0, 0.0, "body"))
    links += [(k, n + k, 0.0, 0.0, "body") for k in range(n)]
    for k in range(n):
        hx, hy = hips[k]
        p = ph.value(k, n)
        if two:
            kn, ft = len(joints), len(joints) + 1
            joints += [(hx + kdx, hy / 2), (hx + fdx, 0.0)]
            groups += ["knee", "foot"]
            links += [(n + k, kn, 0.0, 0.0, "leg"), (kn, ft, 0.0, 0.0, "leg")]
            links.append((k, kn, amp, p, "swing"))
            links.append((n + k, ft, amp2, (p + off) % 1.0, "bend"))
        else:
            ft = len(joints)
            joints.append((hx + fdx, 0.0))
            groups.append("foot")
            links += [(n + k, ft, 0.0, 0.0, "leg"), (k, ft, amp, p, "swing")]
    params = dict(
        n=n, bw=bw, th=th, ll=ll, two=two, kdx=kdx, fdx=fdx, ph=ph, off=off, amp=amp, amp2=amp2
    )
    return Plan("legged", joints, groups, links, params, _code_legged, f"a body on {n} legs")


def _code_legged(p: Plan, w: Writer) -> Code:
    """The body as two rows of joints; the legs inline, by a helper or by a nested function, one per
    hip."""
    q = p.params
    n, c = q["n"], w.creator
    N = w.const("n_legs", str(n))
    BW = w.const("width", w.num(q["bw"], 1), "between hips")
    TH = w.const("thick", w.num(q["th"], 1))
    LL = w.const("leg_len", w.num(q["ll"], 1), "hip height")
    AMP = w.const("amp", w.num(q["amp"], 1))
    k, top, hips = w.name("idx"), w.name("top"), w.name("hip") + "s"
    w.used.add(hips)
    body = w.note("the body: a row of shoulders over a row of hips", "body box")
    body += w.make_list(top, k, N, f"{c}.add_joint({k} * {BW}, {LL} + {TH})")
    body += w.make_list(hips, k, N, f"{c}.add_joint({k} * {BW}, {LL})")
    body += w.gap()
    body += w.loop(
        k,
        _plus(N, n, -1),
        [
            w.bone(f"{top}[{k}]", f"{top}[{k} + 1]"),
            w.bone(f"{hips}[{k}]", f"{hips}[{k} + 1]"),
            w.bone(f"{hips}[{k}]", f"{top}[{k} + 1]"),
        ],
    )
    if w.coin(0.5):
        a_, b_ = w.name("a"), w.name("b")
        body += [f"for {a_}, {b_} in zip({top}, {hips}):", "    " + w.bone(a_, b_)]
    else:
        body += w.loop(k, N, [w.bone(f"{top}[{k}]", f"{hips}[{k}]")])
    body += w.gap()
    hip, sh, ph = w.name("hip"), w.name("shoulder"), w.name("phase")
    knee, foot = w.name("knee"), w.name("foot")
    how = w.pick(("helper", "nested", "inline"))
    recv = c
    leg: list[str] = []
    if q["two"]:
        KDX = w.const("knee_dx", w.num(q["kdx"], 1))
        fdx = w.const("foot_dx", w.num(q["fdx"], 1)) if q["fdx"] else ""
        OFF = w.const("phase2", w.num(q["off"]), "knee lags the swing")
        AMP2 = w.const("amp2", w.num(q["amp2"], 1))
        leg += [
            f"{knee} = {recv}.add_joint({hip}[0] + {KDX}, {hip}[1] / 2)",
            f"{foot} = {recv}.add_joint({hip}[0]{' + ' + fdx if fdx else ''}, 0.0)",
            w.bone(hip, knee, recv),
            w.bone(knee, foot, recv),
            w.muscle(sh, knee, AMP, ph, recv),
            w.muscle(hip, foot, AMP2, f"({ph} + {OFF}) % 1.0", recv),
        ]
    else:
        FDX = w.const("foot_dx", w.num(q["fdx"], 1))
        leg += [
            f"{foot} = {recv}.add_joint({hip}[0] + {FDX}, 0.0)",
            w.bone(hip, foot, recv),
            w.muscle(sh, foot, AMP, ph, recv),
        ]
    defs: list[list[str]] = []
    feet = w.name("feet")
    phase_of_k = q["ph"].expr(w, k, N)
    if how == "inline":
        pre = [f"{hip}, {sh} = {hips}[{k}], {top}[{k}]", f"{ph} = {phase_of_k}"]
        body += w.note("legs", "one leg under every hip") + w.loop(k, N, pre + leg)
        return Code(body, defs)
    fn = w.func("add_leg", "leg", "attach_leg", "hang_leg", "grow_leg")
    head = w.doc("A leg under the hip, swung from the shoulder above it; returns the foot.")
    if how == "nested":
        body += [f"def {fn}({hip}, {sh}, {ph}):", *indent(head + leg), f"    return {foot}", ""]
        call = f"{fn}({hips}[{k}], {top}[{k}], {phase_of_k})"
    else:
        defs.append(
            [f"def {fn}({c}, {hip}, {sh}, {ph}):", *indent(head + leg), f"    return {foot}"]
        )
        call = f"{fn}({c}, {hips}[{k}], {top}[{k}], {phase_of_k})"
    body += w.note("legs", "a leg under each hip, phases staggered")
    if w.comprehension and len(call) < 70:
        body += [f"{feet} = [{call} for {k} in range({N})]"]
    else:
        body += w.loop(k, N, [call])
    return Code(body, defs)


# --------------------------------------------------------------------------- ladder
def draw_ladder(rng: np.random.Generator) -> Plan:
    """Leaning rungs (bones) joined by a bottom rail of bones and a top rail of muscles,
    built rung by rung."""
    n = int(rng.integers(4, 8))
    s, h = _r(rng, 1.5, 2.5), _r(rng, 1.5, 2.5)
    lean = _r(rng, 0.3, 1.0) * (1 if rng.random() < 0.5 else -1)
    ph, amp = _draw_phases(rng), _amp(rng)
    joints: list[tuple[float, float]] = []
    links: list[Link] = []
    for k in range(n):
        joints += [(k * s, 0.0), (k * s + lean, h)]
        lo, hi = 2 * k, 2 * k + 1
        links.append((lo, hi, 0.0, 0.0, "rung"))
        if k:
            links.append((lo - 2, lo, 0.0, 0.0, "rail"))
            links.append((hi - 2, hi, amp, ph.value(k, n), "rail"))
            links.append((lo - 2, hi, 0.0, 0.0, "brace"))
    params = dict(n=n, s=s, h=h, lean=lean, ph=ph, amp=amp)
    groups = ["low", "high"] * n
    return Plan("ladder", joints, groups, links, params, _code_ladder, f"a ladder of {n} rungs")


def _code_ladder(p: Plan, w: Writer) -> Code:
    """The ladder rung by rung, each linked to the previous one (kept in a tuple or two names)."""
    q = p.params
    n, c = q["n"], w.creator
    N = w.const("n", str(n), "rungs")
    S = w.const("dx", w.num(q["s"], 1))
    H = w.const("height", w.num(q["h"], 1))
    LEAN = w.const("lean", w.num(q["lean"], 1))
    AMP = w.const("amp", w.num(q["amp"], 1))
    k, lo, hi, prev = w.name("idx"), w.name("low"), w.name("high"), w.name("prev")
    inner = [
        f"{lo} = {c}.add_joint({k} * {S}, 0.0)",
        f"{hi} = {c}.add_joint({k} * {S} + {LEAN}, {H})",
        w.bone(lo, hi),
    ]
    link: list[str] = []
    phase = _phase_line(w, q["ph"], k, N, link)
    if w.coin(0.5):
        link += [
            w.bone(f"{prev}[0]", lo),
            w.muscle(f"{prev}[1]", hi, AMP, phase),
            w.bone(f"{prev}[0]", hi),
        ]
        inner += [f"if {prev} is not None:", *indent(link), f"{prev} = ({lo}, {hi})"]
        body = [f"{prev} = None", *w.loop(k, N, inner)]
    else:
        plo, phi = w.fresh("low"), w.fresh("high")
        link += [w.bone(plo, lo), w.muscle(phi, hi, AMP, phase), w.bone(plo, hi)]
        inner += [f"if {k} > 0:", *indent(link), f"{plo}, {phi} = {lo}, {hi}"]
        body = w.loop(k, N, inner)
    return Code(w.note("rung by rung, linking each to the one before", "build the ladder") + body)


# --------------------------------------------------------------------------- fan
def draw_fan(rng: np.random.Generator) -> Plan:
    """A triangle fan: spokes of bone from a pivot to an arc whose edges are muscles."""
    m = int(rng.integers(4, 10))
    r = _r(rng, 3.0, 6.0)
    a0 = float(rng.choice([10.0, 20.0, 30.0]))
    sweep = float(rng.choice([120.0, 140.0, 160.0]))
    py = float(rng.choice([0.0, 0.5, 1.0]))
    ph, amp = _draw_phases(rng), _amp(rng)
    pivot_first = bool(rng.random() < 0.7)
    arc = [
        (
            r * math.cos(math.radians(a0 + k * sweep / (m - 1))),
            py + r * math.sin(math.radians(a0 + k * sweep / (m - 1))),
        )
        for k in range(m)
    ]
    off = 1 if pivot_first else 0
    pv = 0 if pivot_first else m
    joints = [(0.0, py), *arc] if pivot_first else [*arc, (0.0, py)]
    groups = ["hub", *["arc"] * m] if pivot_first else [*["arc"] * m, "hub"]
    links: list[Link] = [(pv, off + k, 0.0, 0.0, "spoke") for k in range(m)]
    links += [(off + k, off + k + 1, amp, ph.value(k, m - 1), "edge") for k in range(m - 1)]
    params = dict(m=m, r=r, a0=a0, sweep=sweep, py=py, ph=ph, amp=amp, pivot_first=pivot_first)
    return Plan("fan", joints, groups, links, params, _code_fan, f"a fan of {m - 1} triangles")


def _code_fan(p: Plan, w: Writer) -> Code:
    """The fan: a pivot, an arc of joints by angle, spokes and muscles along the arc."""
    q = p.params
    m, c = q["m"], w.creator
    M = w.const("n", str(m), "points on the arc")
    R = w.const("radius", w.num(q["r"], 1))
    PY = w.const("cy", w.num(q["py"], 1), "height of the pivot")
    SW = w.const("sweep", w.num(q["sweep"], 1), "degrees")
    AMP = w.const("amp", w.num(q["amp"], 1))
    k, hub, arc, a = w.name("idx"), w.name("hub"), w.name("arc"), w.name("angle")
    last = _plus(M, m, -1)
    ang = _angle(w, k, f"({last})" if " " in last else last, q["a0"], SW)
    pivot = [f"{hub} = {c}.add_joint(0.0, {PY})"]
    pre = [f"{a} = {ang}"]
    item = f"{c}.add_joint({R} * math.cos({a}), {PY} + {R} * math.sin({a}))"
    body = (pivot if q["pivot_first"] else []) + w.note("the arc", "points on the arc")
    body += w.make_list(arc, k, M, item, pre)
    body += [] if q["pivot_first"] else pivot
    body += w.gap()
    j = w.name("node")
    body += [f"for {j} in {arc}:", "    " + w.bone(hub, j)]
    inner: list[str] = []
    phase = _phase_line(w, q["ph"], k, _plus(M, m, -1), inner)
    inner.append(w.muscle(f"{arc}[{k}]", f"{arc}[{k} + 1]", AMP, phase))
    body += w.note("muscles along the arc", "the edges pull in turn")
    body += w.loop(k, _plus(M, m, -1), inner)
    return Code(body, math=True)


# --------------------------------------------------------------------------- arch
def draw_arch(rng: np.random.Generator) -> Plan:
    """A half-ring arch of two concentric arcs standing on its four feet; the diagonals
    of its bays are muscles."""
    m = int(rng.integers(3, 7))
    r_out = _r(rng, 4.0, 7.0)
    r_in = round(r_out - _r(rng, 1.0, 2.0), 1)
    ph, amp = _draw_phases(rng), _amp(rng)
    paired = bool(rng.random() < 0.5)
    ang = [math.pi * k / m for k in range(m + 1)]
    outer = [(r_out * math.cos(t), r_out * math.sin(t)) for t in ang]
    inner = [(r_in * math.cos(t), r_in * math.sin(t)) for t in ang]
    if paired:
        joints = [pt for pair in zip(outer, inner, strict=True) for pt in pair]
        groups = ["arc", "inner"] * (m + 1)
        o, i = [2 * k for k in range(m + 1)], [2 * k + 1 for k in range(m + 1)]
    else:
        joints = outer + inner
        groups = ["arc"] * (m + 1) + ["inner"] * (m + 1)
        o, i = list(range(m + 1)), [m + 1 + k for k in range(m + 1)]
    links: list[Link] = [(o[k], i[k], 0.0, 0.0, "rung") for k in range(m + 1)]
    for k in range(m):
        links += [(o[k], o[k + 1], 0.0, 0.0, "arc"), (i[k], i[k + 1], 0.0, 0.0, "arc")]
        links.append((o[k], i[k + 1], amp, ph.value(k, m), "diagonal"))
    params = dict(m=m, r_out=r_out, r_in=r_in, ph=ph, amp=amp, paired=paired)
    return Plan("arch", joints, groups, links, params, _code_arch, f"an arch of {m} bays")


def _code_arch(p: Plan, w: Writer) -> Code:
    """The arch: both arcs bay by bay (or one list each), rungs, then arc bones and diagonal
    muscles."""
    q = p.params
    m, c = q["m"], w.creator
    M = w.const("n", str(m), "bays")
    RO = w.const("radius", w.num(q["r_out"], 1))
    RI = w.const("radius2", w.num(q["r_in"], 1))
    AMP = w.const("amp", w.num(q["amp"], 1))
    k, out, inn, a = w.name("idx"), w.name("arc"), w.name("inner"), w.name("angle")
    theta = w.pick((f"math.pi * {k} / {M}", f"{k} * math.pi / {M}"))
    body: list[str] = []
    if q["paired"]:
        co, si = w.name("cos"), w.name("sin")
        pre = [
            f"{a} = {theta}",
            f"{co}, {si} = math.cos({a}), math.sin({a})",
            f"{out}.append({c}.add_joint({RO} * {co}, {RO} * {si}))",
            f"{inn}.append({c}.add_joint({RI} * {co}, {RI} * {si}))",
        ]
        body += w.note("both arcs, bay by bay", "outer and inner arc")
        body += [f"{out}, {inn} = [], []", *w.loop(k, _plus(M, m, 1), pre)]
    else:
        for name, rad in ((out, RO), (inn, RI)):
            body += w.make_list(
                name,
                k,
                _plus(M, m, 1),
                f"{c}.add_joint({rad} * math.cos({theta}), {rad} * math.sin({theta}))",
            )
    body += w.gap()
    body += w.loop(k, _plus(M, m, 1), [w.bone(f"{out}[{k}]", f"{inn}[{k}]")])
    inner = [w.bone(f"{out}[{k}]", f"{out}[{k} + 1]"), w.bone(f"{inn}[{k}]", f"{inn}[{k} + 1]")]
    phase = _phase_line(w, q["ph"], k, M, inner)
    inner.append(w.muscle(f"{out}[{k}]", f"{inn}[{k} + 1]", AMP, phase))
    body += w.note("bays: two arc bones and a diagonal muscle") + w.loop(k, M, inner)
    return Code(body, math=True)


# --------------------------------------------------------------------------- cloud
_RULES = {
    "sum3": ("({i} + {j}) % 3 == 0", lambda i, j: (i + j) % 3 == 0),
    "odd": ("({i} * {j}) % 2 == 1", lambda i, j: (i * j) % 2 == 1),
    "gap": ("abs({i} - {j}) > 2", lambda i, j: abs(i - j) > 2),
    "even": ("({i} + {j}) % 2 == 0", lambda i, j: (i + j) % 2 == 0),
}


def draw_cloud(rng: np.random.Generator) -> Plan:
    """Points scattered by a table or a formula, each linked to its nearest neighbours;
    a rule on the two indices makes some links muscles."""
    m = int(rng.integers(7, 14))
    kn = int(rng.choice([2, 2, 3]))
    rule = ("sum3", "odd", "gap", "even")[int(rng.integers(4))]
    ph, amp = _draw_phases(rng), _amp(rng)
    source = "table" if rng.random() < 0.5 else "formula"
    bw, bh = _r(rng, 6.0, 10.0), _r(rng, 3.0, 6.0)
    mx, my = _r(rng, 1.1, 4.9), _r(rng, 1.1, 3.9)
    if source == "formula":
        pts = [((k * mx) % bw, (k * my) % bh) for k in range(m)]
    else:
        pts = []
        while len(pts) < m:
            x, y = _r(rng, 0.0, bw), _r(rng, 0.0, bh)
            if all(math.hypot(x - a, y - b) >= 0.8 for a, b in pts):
                pts.append((x, y))
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    for i, pt in enumerate(pts):
        order = sorted(
            range(m), key=lambda j, pt=pt: (pts[j][0] - pt[0]) ** 2 + (pts[j][1] - pt[1]) ** 2
        )
        for j in order[1 : kn + 1]:
            key = (min(i, j), max(i, j))
            if key in seen:
                continue
            seen.add(key)
            on = _RULES[rule][1](i, j)
            links.append((i, j, amp if on else 0.0, ph.value(i, m) if on else 0.0, "near"))
    params = dict(m=m, kn=kn, rule=rule, ph=ph, amp=amp, source=source, bw=bw, bh=bh, mx=mx, my=my)
    return Plan("cloud", pts, ["node"] * m, links, params, _code_cloud, f"{m} scattered points")


def _code_cloud(p: Plan, w: Writer) -> Code:
    """The cloud: points from a table or a modular recipe, each linked to its nearest neighbours
    found with ``sorted``."""
    q = p.params
    m, c = q["m"], w.creator
    K = w.const("k_near", str(q["kn"]), "neighbours per point")
    AMP = w.const("amp", w.num(q["amp"], 1))
    k, pts = w.name("idx"), w.name("joints")
    body: list[str] = []
    tables: list[list[str]] = []
    if q["source"] == "formula":
        M = w.const("n", str(m), "points")
        MX = w.const("scale_x", w.num(q["mx"], 1))
        MY = w.const("scale_y", w.num(q["my"], 1))
        BW = w.const("box_w", w.num(q["bw"], 1))
        BH = w.const("box_h", w.num(q["bh"], 1))
        body += w.note("scatter the points with a fixed recipe (no randomness)", "points")
        item = f"{c}.add_joint(({k} * {MX}) % {BW}, ({k} * {MY}) % {BH})"
        body += w.make_list(pts, k, M, item)
    else:
        T = w.pick([t for t in ("POINTS", "SPOTS", "DOTS", "SCATTER") if t not in w.used])
        w.used.add(T)  # (module constants never take these names)
        rows = [f"({w.coord(x)}, {w.coord(y)})," for x, y in p.joints]
        tables.append([f"{T} = [", *indent(w.pack(rows)), "]"])
        x, y = w.name("x"), w.name("y")
        body += [f"{pts} = [{c}.add_joint({x}, {y}) for {x}, {y} in {T}]"]
    i, j = w.name("idx2"), w.fresh("idx2")
    pt, near, seen, key = w.name("node"), w.name("near"), w.name("done"), w.name("pair")
    dist = w.pick(
        (
            f"({pts}[{j}][0] - {pt}[0]) ** 2 + ({pts}[{j}][1] - {pt}[1]) ** 2",
            f"({pt}[0] - {pts}[{j}][0]) ** 2 + ({pt}[1] - {pts}[{j}][1]) ** 2",
        )
    )
    phase = q["ph"].expr(w, i, f"len({pts})")
    test = _RULES[q["rule"]][0].format(i=i, j=j)
    body += w.gap() + w.note("link every point to its nearest neighbours", "nearest neighbours")
    body += [
        f"{seen} = set()",
        f"for {i}, {pt} in enumerate({pts}):",
        f"    {near} = sorted(range(len({pts})), key=lambda {j}: {dist})",
        f"    for {j} in {near}[1 : {K} + 1]:",
        f"        {key} = (min({i}, {j}), max({i}, {j}))",
        f"        if {key} in {seen}:",
        "            continue",
        f"        {seen}.add({key})",
        f"        if {test}:",
        "            " + w.muscle(f"{pts}[{i}]", f"{pts}[{j}]", AMP, phase),
        "        else:",
        "            " + w.bone(f"{pts}[{i}]", f"{pts}[{j}]"),
    ]
    return Code(body, tables=tables)


# --------------------------------------------------------------------------- tower
def draw_tower(rng: np.random.Generator) -> Plan:
    """A tower of braced storeys on two stilts; the storeys' diagonals and the stilts
    have muscles."""
    levels = int(rng.integers(2, 5))
    wd, sh = _r(rng, 1.5, 2.5), _r(rng, 1.5, 2.5)
    stilt, splay = _r(rng, 1.5, 3.0), _r(rng, 0.3, 1.5)
    ph, amp = _draw_phases(rng), _amp(rng)
    amp2, p2 = _amp(rng, 2.0, 6.0), float(rng.choice([0.25, 0.5]))
    accumulate = bool(rng.random() < 0.5)
    joints: list[tuple[float, float]] = []
    y = stilt
    for lv in range(levels + 1):
        yy = y if accumulate else stilt + lv * sh
        joints += [(0.0, yy), (wd, yy)]
        y += sh
    fl, fr = len(joints), len(joints) + 1
    joints += [(-splay, 0.0), (wd + splay, 0.0)]
    groups = ["story_l", "story_r"] * (levels + 1) + ["foot", "foot"]
    L = [2 * lv for lv in range(levels + 1)]
    Rr = [2 * lv + 1 for lv in range(levels + 1)]
    links: list[Link] = [(L[lv], Rr[lv], 0.0, 0.0, "floor") for lv in range(levels + 1)]
    for lv in range(levels):
        links += [(L[lv], L[lv + 1], 0.0, 0.0, "wall"), (Rr[lv], Rr[lv + 1], 0.0, 0.0, "wall")]
        a, b = (L[lv], Rr[lv + 1]) if lv % 2 == 0 else (Rr[lv], L[lv + 1])
        links.append((a, b, amp, ph.value(lv, levels), "brace"))
    links += [(L[0], fl, 0.0, 0.0, "stilt"), (Rr[0], fr, 0.0, 0.0, "stilt")]
    links += [(L[1], fl, amp2, 0.0, "stilt"), (Rr[1], fr, amp2, p2, "stilt")]
    params = dict(
        levels=levels,
        wd=wd,
        sh=sh,
        stilt=stilt,
        splay=splay,
        ph=ph,
        amp=amp,
        amp2=amp2,
        p2=p2,
        accumulate=accumulate,
    )
    return Plan("tower", joints, groups, links, params, _code_tower, f"a tower of {levels} storeys")


def _code_tower(p: Plan, w: Writer) -> Code:
    """The tower storey by storey (a ``while`` on the height or a ``for`` over the storeys), then
    the stilts."""
    q = p.params
    lv, c = q["levels"], w.creator
    LV = w.const("levels", str(lv))
    W = w.const("width", w.num(q["wd"], 1))
    SH = w.const("height", w.num(q["sh"], 1), "storey height")
    ST = w.const("stilt", w.num(q["stilt"], 1))
    SP = w.const("splay", w.num(q["splay"], 1))
    AMP = w.const("amp", w.num(q["amp"], 1))
    AMP2 = w.const("amp2", w.num(q["amp2"], 1))
    k, left, right, y = w.name("idx"), w.name("story_l"), w.name("story_r"), w.name("y")
    body = w.note("storeys from the bottom up", "the tower")
    body += [f"{left}, {right} = [], []"]
    if q["accumulate"]:
        body += [
            f"{y} = {ST}",
            f"while len({left}) <= {LV}:",
            f"    {left}.append({c}.add_joint(0.0, {y}))",
            f"    {right}.append({c}.add_joint({W}, {y}))",
            f"    {y} += {SH}",
        ]
    else:
        body += w.loop(
            k,
            _plus(LV, lv, 1),
            [
                f"{y} = {ST} + {k} * {SH}",
                f"{left}.append({c}.add_joint(0.0, {y}))",
                f"{right}.append({c}.add_joint({W}, {y}))",
            ],
        )
    base = w.name("foot")
    sides = {"snake": ("_l", "_r"), "camel": ("L", "R"), "short": ("1", "2")}[w.convention]
    fl, fr = base + sides[0], base + sides[1]
    w.used.update((fl, fr))
    body += w.note("stilts", "two feet, splayed")
    body += [f"{fl} = {c}.add_joint(-{SP}, 0.0)", f"{fr} = {c}.add_joint({W} + {SP}, 0.0)"]
    body += w.gap()
    body += w.loop(k, _plus(LV, lv, 1), [w.bone(f"{left}[{k}]", f"{right}[{k}]")])
    inner = [
        w.bone(f"{left}[{k}]", f"{left}[{k} + 1]"),
        w.bone(f"{right}[{k}]", f"{right}[{k} + 1]"),
    ]
    phase = _phase_line(w, q["ph"], k, LV, inner)
    inner += [
        f"if {k} % 2 == 0:",
        "    " + w.muscle(f"{left}[{k}]", f"{right}[{k} + 1]", AMP, phase),
        "else:",
        "    " + w.muscle(f"{right}[{k}]", f"{left}[{k} + 1]", AMP, phase),
    ]
    body += w.note("walls and alternating diagonal muscles") + w.loop(k, LV, inner)
    body += w.gap() + w.note("the stilts: a bone and a muscle each")
    body += [
        w.bone(f"{left}[0]", fl),
        w.bone(f"{right}[0]", fr),
        w.muscle(f"{left}[1]", fl, AMP2, "0.0"),
        w.muscle(f"{right}[1]", fr, AMP2, w.num(q["p2"])),
    ]
    return Code(body)


# --------------------------------------------------------------------------- drawing
#: Plan kinds and their drawing functions.
PLANS: dict[str, Callable[[np.random.Generator], Plan]] = {
    "chain": draw_chain,
    "ring": draw_ring,
    "grid": draw_grid,
    "truss": draw_truss,
    "tree": draw_tree,
    "star": draw_star,
    "legged": draw_legged,
    "ladder": draw_ladder,
    "fan": draw_fan,
    "arch": draw_arch,
    "cloud": draw_cloud,
    "tower": draw_tower,
}

_MARGIN = WalkerLimits(min_joint_distance=0.5, max_abs_coordinate=60.0, max_links_per_joint=9)


def plan_problem(plan: Plan, limits: WalkerLimits = _MARGIN) -> str | None:
    """Why ``plan`` is not a walker that passes ``limits`` (by default tighter than the
    validation limits, so edits of it still have room), or ``None``."""
    pts, links = plan.joints, plan.links
    if not pts or len(pts) > limits.max_joints or len(links) > limits.max_links:
        return "size"
    if any(
        abs(x) > limits.max_abs_coordinate or abs(y) > limits.max_abs_coordinate or y < -1e-9
        for x, y in pts
    ):
        return "coordinates"
    for i, (x, y) in enumerate(pts):
        for a, b in pts[i + 1 :]:
            if math.hypot(x - a, y - b) < limits.min_joint_distance:
                return "spacing"
    deg = [0] * len(pts)
    pairs = set()
    for a, b, amp, _, _ in links:
        if a == b or (min(a, b), max(a, b)) in pairs or abs(amp) > limits.max_amplitude:
            return "link"
        pairs.add((min(a, b), max(a, b)))
        deg[a] += 1
        deg[b] += 1
    if max(deg) > limits.max_links_per_joint:
        return "degree"
    if sum(1 for link in links if link[2] != 0) < 2:
        return "muscles"
    return None


def draw_plan(rng: np.random.Generator, kinds: tuple[str, ...] = tuple(PLANS)) -> Plan:
    """A plan of one of ``kinds`` (uniformly) that passes :func:`plan_problem`."""
    for _ in range(100):
        plan = PLANS[kinds[int(rng.integers(len(kinds)))]](rng)
        if plan_problem(plan) is None:
            return plan
    raise RuntimeError("no valid plan in 100 draws")
