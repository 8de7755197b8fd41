"""Walker programs of many shapes and hands, for corpus lineages to start from (ELM arXiv
2206.08896v1, §3.1, §4).

ELM's diff models were trained on commits to many people's code; a corpus whose lineages
all start at seven seeds teaches a model those seeds, not how to edit the program in its
prompt. :func:`random_program` writes a fresh program each call, drawn independently on
three axes:

* **body plan** (:data:`jelm.domains.sodarace.corpus.plans.PLANS`): a snake of boxes, a
  polygon with or without a hub, a lattice mat, a truss or zigzag, a recursive tree, a
  star, a box body on 2-6 legs of one or two bones, a ladder of leaning rungs, a triangle
  fan, an arch, a point cloud linked to nearest neighbours, a tower on stilts; with their
  sizes, shapes and phase patterns (waves, steps, alternation, quarters, constants);
* **code style** (:data:`STYLES`): the plan's own parametric program (``for``/``while``
  loops over ``range``, comprehensions, ``math`` geometry, helpers with parameters,
  nested functions, recursion), every joint and link spelt out (named joints, lists of
  joints, joint indices; direct calls, wrapper functions or a small class), tables of
  tuples iterated by one loop (one table, bones and muscles apart, a passive-flag column,
  ``zip`` of parallel lists, ``enumerate`` with computed phases), a dict of named joints
  with links as tuples of names, or a plain-text table parsed with ``split``;
* **surface** (:class:`jelm.domains.sodarace.corpus.writer.Writer`): naming convention and
  vocabulary (the creator too), module constants or inline literals, the call forms of
  muscles and bones, loop idioms, comment density, docstrings, blank lines, where helpers
  go.

Every program imports only the walker API (and ``math``), defines ``make_walker()``
returning ``<creator>.get_walker()``, builds a walker that passes the default limits
with a margin, has muscles, and is at most :data:`MAX_PROGRAM_CHARS` long. The same
generator state gives the same text.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable

import numpy as np

from jelm.domains.sodarace.corpus.plans import PLANS, Code, Link, Phases, Plan, draw_plan
from jelm.domains.sodarace.corpus.writer import Writer, indent

__all__ = ["MAX_PROGRAM_CHARS", "PLANS", "STYLES", "draw_program", "random_program"]

#: The longest program written (well under the corpus's 5,000-character cap, so that
#: lineages have room to grow).
MAX_PROGRAM_CHARS = 3500

API_IMPORT = "from jelm.programs.walker_api import walker_creator"


# --------------------------------------------------------------------------- helpers
def _coords(plan: Plan, w: Writer) -> list[tuple[str, str]]:
    """The plan's joint coordinates as the program spells them."""
    return [(w.coord(x), w.coord(y)) for x, y in plan.joints]


def _amp_text(w: Writer, amp: float) -> str:
    """An amplitude literal."""
    return w.num(amp, 1)


def _phase_text(w: Writer, phase: float) -> str:
    """A phase literal (cycles)."""
    return w.num(phase, 3)


def _reordered(plan: Plan, order: list[int]) -> Plan:
    """``plan`` with its joints in ``order`` (old indices, in the order a program adds
    them) and its links renumbered."""
    new = {old: k for k, old in enumerate(order)}
    links = [(new[a], new[b], amp, ph, fam) for a, b, amp, ph, fam in plan.links]
    return Plan(
        plan.kind,
        [plan.joints[i] for i in order],
        [plan.groups[i] for i in order],
        links,
        plan.params,
        plan.code,
        plan.about,
    )


def _with_links(plan: Plan, links: list[Link]) -> Plan:
    """``plan`` with other links (a style that recomputes the phases)."""
    return Plan(plan.kind, plan.joints, plan.groups, links, plan.params, plan.code, plan.about)


_FAMILY_NOTES: dict[str, tuple[str, ...]] = {
    "post": ("posts", "uprights hold the boxes open"),
    "keel": ("the floor", "bottom edges"),
    "back": ("the roof", "top edges"),
    "brace": ("diagonal braces", "braces"),
    "rim": ("the rim", "around the outside"),
    "spoke": ("spokes from the centre", "spokes"),
    "chord": ("chords", "across the body"),
    "row": ("rows", "along the rows"),
    "column": ("columns", "up the columns"),
    "diagonal": ("diagonals", "cross links"),
    "web": ("the web", "between the chords"),
    "branch": ("branches", "parent to child"),
    "twig": ("between siblings", "sibling muscles"),
    "arm": ("arms", "along each arm"),
    "reach": ("tips pulled to the centre",),
    "body": ("the body", "body frame"),
    "leg": ("legs", "leg bones"),
    "swing": ("swing muscles", "swing the legs"),
    "bend": ("bend the knees", "knee muscles"),
    "rung": ("rungs",),
    "rail": ("rails",),
    "edge": ("edges of the fan", "muscles along the arc"),
    "arc": ("arcs",),
    "near": ("nearest neighbours",),
    "floor": ("floors",),
    "wall": ("walls",),
    "stilt": ("stilts",),
}


def _families(links: list[Link]) -> list[tuple[str, list[Link]]]:
    """Links grouped by family, families in order of first appearance."""
    out: dict[str, list[Link]] = {}
    for link in links:
        out.setdefault(link[4], []).append(link)
    return list(out.items())


def _joint_names(plan: Plan, w: Writer) -> list[str]:
    """A distinct identifier per joint: ``knee0``/``knee_1`` by group, or ``j3``."""
    if w.coin(0.35):
        prefix = w.pick(("j", "p", "n", "v", "pt", "node"))
        names = [f"{prefix}{i}" for i in range(len(plan.joints))]
    else:
        counts: dict[str, int] = {}
        for g in plan.groups:
            counts[g] = counts.get(g, 0) + 1
        seen: dict[str, int] = {}
        names = []
        for g in plan.groups:
            base = w.name(g)
            k = seen.get(g, 0)
            seen[g] = k + 1
            names.append(base if counts[g] == 1 else w.label(base, k))
    singles = {w.name(g) for g in plan.groups}
    if len(set(names)) != len(names) or any(n in w.used and n not in singles for n in names):
        names = [f"joint_{i}" for i in range(len(plan.joints))]
    w.used.update(names)
    return names


def _table(name: str, rows: list[str], w: Writer, header: str = "") -> list[str]:
    """A module- or function-level list of table rows, optionally with a header comment."""
    head = [f"    # {header}"] if header and w.coin(w.comment_rate) else []
    return [f"{name} = [", *head, *indent(w.pack(rows)), "]"]


# --------------------------------------------------------------------------- styles
def _style_loops(plan: Plan, w: Writer) -> tuple[Code, Plan]:
    """The plan's own parametric program."""
    assert plan.code is not None
    return plan.code(plan, w), plan


#: How a comment names a plan's joint group.
_GROUP_WORDS = {
    "story_l": "left side",
    "story_r": "right side",
    "hub": "centre",
    "low": "lower ends",
    "high": "upper ends",
    "joints": "points",
}

_Calls = tuple[
    list[list[str]],  # top-level definitions
    list[str],  # make_walker's first statements
    Callable[[str, str], str],  # a joint at (x, y)
    Callable[[str, str], str],  # a bone between two joint references
    Callable[[str, str, str, str], str],  # a muscle: joints, amplitude, phase
]


def _api_calls(w: Writer, how: str, by_index: bool) -> _Calls:
    """The statements that add joints, bones and muscles: the walker API itself
    (``direct``), module functions wrapping it (``helpers``), or the methods of a small
    class holding the creator (``class``; with ``by_index`` it also keeps the joints and
    takes indices)."""
    c = w.creator
    if how == "direct":
        return [], [], lambda x, y: f"{c}.add_joint({x}, {y})", w.bone, w.muscle
    a, b, am, ph = w.name("a"), w.name("b"), w.name("amp"), w.name("phase")
    if how == "helpers":
        bfn = w.func("bone", "strut", "rod", "tie", "link")
        mfn = w.func("muscle", "motor", "pull", "spring", "drive")
        defs = [
            [
                f"def {bfn}({c}, {a}, {b}):",
                *indent(w.doc("A passive bone between two joints.")),
                "    " + w.bone(a, b),
            ],
            [
                f"def {mfn}({c}, {a}, {b}, {am}, {ph}):",
                *indent(w.doc("An active muscle; the phase is in cycles.")),
                "    " + w.muscle(a, b, am, ph),
            ],
        ]
        return (
            defs,
            [],
            lambda x, y: f"{c}.add_joint({x}, {y})",
            lambda i, j: f"{bfn}({c}, {i}, {j})",
            lambda i, j, amp, phase: f"{mfn}({c}, {i}, {j}, {amp}, {phase})",
        )
    cls = _free(w, ("Frame", "Body", "Rig", "Skeleton", "Builder", "Creature", "Robot"))
    obj = w.name("frame")
    jfn = w.func("joint", "node", "pin", "point", "mass")
    bfn = w.func("bone", "strut", "rod", "tie")
    mfn = w.func("muscle", "motor", "pull", "spring", "drive")
    inner = w.fresh("creator")
    x, y = w.name("x"), w.name("y")
    me = f"self.{inner}"
    lines = [f"class {cls}:", *indent([*w.doc("Wraps the walker creator."), ""])]
    lines += [f"    def __init__(self, {inner}):", f"        {me} = {inner}"]
    if by_index:
        pts = f"self.{w.name('joints')}"
        lines += [
            f"        {pts} = []",
            "",
            f"    def {jfn}(self, {x}, {y}):",
            f"        {pts}.append({me}.add_joint({x}, {y}))",
            "",
            f"    def {bfn}(self, {a}, {b}):",
            "        " + w.bone(f"{pts}[{a}]", f"{pts}[{b}]", me),
            "",
            f"    def {mfn}(self, {a}, {b}, {am}, {ph}):",
            "        " + w.muscle(f"{pts}[{a}]", f"{pts}[{b}]", am, ph, me),
        ]
    else:
        lines += [
            "",
            f"    def {jfn}(self, {x}, {y}):",
            f"        return {me}.add_joint({x}, {y})",
            "",
            f"    def {bfn}(self, {a}, {b}):",
            "        " + w.bone(a, b, me),
            "",
            f"    def {mfn}(self, {a}, {b}, {am}, {ph}):",
            "        " + w.muscle(a, b, am, ph, me),
        ]
    return (
        [lines],
        [f"{obj} = {cls}({c})"],
        lambda x, y: f"{obj}.{jfn}({x}, {y})",
        lambda i, j: f"{obj}.{bfn}({i}, {j})",
        lambda i, j, amp, phase: f"{obj}.{mfn}({i}, {j}, {amp}, {phase})",
    )


def _style_explicit(plan: Plan, w: Writer) -> tuple[Code, Plan]:
    """Every joint and link a statement: named joints, lists of joints or joint indices;
    the walker API called directly, through wrapper functions or through a small class."""
    binding = w.pick(("names", "groups", "indices"), (0.5, 0.3, 0.2))
    how = w.pick(("direct", "helpers", "class"), (0.55, 0.25, 0.2))
    defs, body, joint, bone, muscle = _api_calls(w, how, binding == "indices")
    coords = _coords(plan, w)
    order = list(range(len(plan.joints)))
    refs: list[str]
    if binding == "indices":
        refs = [str(i) for i in range(len(plan.joints))]
        body += w.note("joints; the links below refer to them by index", "joints (by index)")
        tag = w.coin(0.6)
        body += [joint(*coords[i]) + (f"  # {i}" if tag else "") for i in order]
    elif binding == "names":
        refs = _joint_names(plan, w)
        last = None
        for i, name in enumerate(refs):
            g = plan.groups[i]
            if g != last:
                if last is not None and w.blank_in_body and w.coin(0.5):
                    body.append("")
                body += w.note(_GROUP_WORDS.get(g, g), f"{_GROUP_WORDS.get(g, g)} joints")
                last = g
            body.append(f"{name} = {joint(*coords[i])}")
    else:  # one list per group
        groups: dict[str, list[int]] = {}
        for i, g in enumerate(plan.groups):
            groups.setdefault(g, []).append(i)
        order = [i for ids in groups.values() for i in ids]
        refs = [""] * len(plan.joints)
        for g, ids in groups.items():
            name = w.name(g)
            body += w.note(_GROUP_WORDS.get(g, g), f"the {_GROUP_WORDS.get(g, g)}")
            if len(ids) == 1:
                body.append(f"{name} = {joint(*coords[ids[0]])}")
                refs[ids[0]] = name
            else:
                body += [f"{name} = [", *indent([joint(*coords[i]) + "," for i in ids]), "]"]
                for k, i in enumerate(ids):
                    refs[i] = f"{name}[{k}]"
    amps: dict[float, str] = {}
    for _, _, amp, _, _ in plan.links:
        if amp and amp not in amps:
            amps[amp] = w.const("amp", _amp_text(w, amp)) if len(amps) < 3 else _amp_text(w, amp)
    for fam, links in _families(plan.links):
        body += w.gap() + w.note(*_FAMILY_NOTES.get(fam, (fam,)))
        for a, b, amp, ph, _ in links:
            if amp:
                body.append(muscle(refs[a], refs[b], amps[amp], _phase_text(w, ph)))
            else:
                body.append(bone(refs[a], refs[b]))
    return Code(body, defs), _reordered(plan, order)


_TABLE_NAMES = {
    "points": ("POINTS", "JOINTS", "NODES", "COORDS", "SHAPE", "VERTICES"),
    "links": ("LINKS", "EDGES", "CONNECTIONS", "SPRINGS", "WIRING"),
    "bones": ("BONES", "STRUTS", "RODS", "FRAME", "RIGID"),
    "muscles": ("MUSCLES", "MOTORS", "ACTUATORS", "DRIVES", "PULLS"),
    "pairs": ("MUSCLE_PAIRS", "PULL_PAIRS", "MOTOR_ENDS"),
    "amps": ("AMPS", "AMPLITUDES", "STRENGTHS"),
    "phases": ("PHASES", "TIMINGS", "DELAYS"),
}


def _free(w: Writer, options: tuple[str, ...] | list[str]) -> str:
    """One of ``options`` not used yet in the program (now used)."""
    free = [n for n in options if n not in w.used] or [options[0] + "_"]
    name = w.pick(free)
    w.used.add(name)
    return name


def _table_name(w: Writer, what: str, local: bool) -> str:
    """A free name for a table of ``what`` (UPPER_CASE, or lower case inside a function)."""
    return _free(w, [n.lower() if local else n for n in _TABLE_NAMES[what]])


def _style_table(plan: Plan, w: Writer) -> tuple[Code, Plan]:
    """Tables of tuples (points; links) iterated by one loop each."""
    c = w.creator
    local = w.coin(0.3)
    layout = w.pick(("one", "two", "flag", "zip", "enum"), (0.25, 0.3, 0.15, 0.12, 0.18))
    make = w.pick(("comp", "star", "loop", "while", "index"), (0.3, 0.15, 0.25, 0.1, 0.2))
    coords = _coords(plan, w)
    P = _table_name(w, "points", local)
    tables: list[list[str]] = []
    body: list[str] = []
    pts_rows = [f"({x}, {y})," for x, y in coords]
    tables.append(_table(P, pts_rows, w, "x, y"))
    pts = w.name("joints")
    x, y, xy = w.name("x"), w.name("y"), w.name("xy")
    k = w.name("idx")
    body += w.note("the joints", "add every point", "joints from the table")
    if make == "comp":
        body += [f"{pts} = [{c}.add_joint({x}, {y}) for {x}, {y} in {P}]"]
    elif make == "star":
        body += [f"{pts} = [{c}.add_joint(*{xy}) for {xy} in {P}]"]
    elif make == "loop":
        body += [
            f"{pts} = []",
            f"for {x}, {y} in {P}:",
            f"    {pts}.append({c}.add_joint({x}, {y}))",
        ]
    elif make == "while":
        body += [
            f"{pts} = []",
            f"{k} = 0",
            f"while {k} < len({P}):",
            f"    {x}, {y} = {P}[{k}]",
            f"    {pts}.append({c}.add_joint({x}, {y}))",
            f"    {k} += 1",
        ]
    else:
        body += [f"for {x}, {y} in {P}:", f"    {c}.add_joint({x}, {y})"]

    def ref(v: str) -> str:
        return v if make == "index" else f"{pts}[{v}]"

    bones = [(a, b) for a, b, amp, _, _ in plan.links if not amp]
    muscles = [(a, b, amp, ph) for a, b, amp, ph, _ in plan.links if amp]
    a, b, am, ph = w.name("a"), w.name("b"), w.name("amp"), w.name("phase")
    body += w.gap()
    links = plan.links
    if layout == "one":
        L = _table_name(w, "links", local)
        rows = [
            f"({i}, {j}, {_amp_text(w, amp) if amp else '0.0'}, {_phase_text(w, p) if amp else '0.0'}),"  # noqa: E501
            for i, j, amp, p, _ in plan.links
        ]
        tables.append(_table(L, rows, w, "joint, joint, amplitude, phase (amplitude 0: a bone)"))
        if w.muscle_form == "pos4" and w.coin(0.6):
            inner = [f"{c}.add_muscle({ref(a)}, {ref(b)}, {am}, {ph})"]
        else:
            inner = [
                f"if {am} == 0:" if w.coin(0.5) else f"if not {am}:",
                "    " + w.bone(ref(a), ref(b)),
                "else:",
                "    " + w.muscle(ref(a), ref(b), am, ph),
            ]
        body += [f"for {a}, {b}, {am}, {ph} in {L}:", *indent(inner)]
    elif layout == "flag":
        L = _table_name(w, "links", local)
        pv = _free(w, ("passive", "is_bone", "rigid", "fixed"))
        rows = [
            f"({i}, {j}, {not amp}, {_amp_text(w, amp) if amp else '0.0'}, {_phase_text(w, p) if amp else '0.0'}),"  # noqa: E501
            for i, j, amp, p, _ in plan.links
        ]
        tables.append(_table(L, rows, w, "a, b, passive, amplitude, phase"))
        body += [
            f"for {a}, {b}, {pv}, {am}, {ph} in {L}:",
            f"    {c}.add_muscle({ref(a)}, {ref(b)}, {pv}, {am}, {ph})",
        ]
    else:
        B = _table_name(w, "bones", local)
        tables.append(_table(B, [f"({i}, {j})," for i, j in bones], w, "bones"))
        body += [f"for {a}, {b} in {B}:", "    " + w.bone(ref(a), ref(b))]
        if layout == "two":
            M = _table_name(w, "muscles", local)
            rows = [
                f"({i}, {j}, {_amp_text(w, amp)}, {_phase_text(w, p)})," for i, j, amp, p in muscles
            ]
            tables.append(_table(M, rows, w, "a, b, amplitude, phase"))
            body += [f"for {a}, {b}, {am}, {ph} in {M}:", "    " + w.muscle(ref(a), ref(b), am, ph)]
        elif layout == "zip":
            M = _table_name(w, "pairs", local)
            A = _table_name(w, "amps", local)
            F = _table_name(w, "phases", local)
            tables.append(_table(M, [f"({i}, {j})," for i, j, _, _ in muscles], w))
            tables.append([f"{A} = [{', '.join(_amp_text(w, m[2]) for m in muscles)}]"])
            tables.append([f"{F} = [{', '.join(_phase_text(w, m[3]) for m in muscles)}]"])
            body += [
                f"for ({a}, {b}), {am}, {ph} in zip({M}, {A}, {F}):",
                "    " + w.muscle(ref(a), ref(b), am, ph),
            ]
        else:  # enum: one amplitude, phases computed from the muscle's position
            M = _table_name(w, "muscles", local)
            amp = muscles[0][2]
            AMP = w.const("amp", _amp_text(w, amp), force=not local)
            rule = w.pick((Phases("wave"), Phases("steps", 0.3), Phases("alt"), Phases("back")))
            n = len(muscles)
            tables.append(_table(M, [f"({i}, {j})," for i, j, _, _ in muscles], w, "muscles"))
            phase = rule.expr(w, k, f"len({M})")
            body += [
                f"for {k}, ({a}, {b}) in enumerate({M}):",
                "    " + w.muscle(ref(a), ref(b), AMP, phase),
            ]
            ms = iter(range(n))
            links = [
                (i, j, amp, rule.value(next(ms), n), f) if m else (i, j, 0.0, 0.0, f)
                for i, j, m, _, f in plan.links
            ]
    if local:
        body = [line for t in tables for line in t] + w.gap() + body
        tables = []
    return Code(body, tables=tables), _with_links(plan, links)


def _quote(w: Writer) -> str:
    """The program's string quote."""
    return '"' if w.coin(0.8) else "'"


def _style_named(plan: Plan, w: Writer) -> tuple[Code, Plan]:
    """A dict of named joints and links as tuples of names."""
    c = w.creator
    q = _quote(w)
    names = _joint_names(plan, w)
    coords = _coords(plan, w)
    J = _table_name(w, "points", False)
    B = _table_name(w, "bones", False)
    M = _table_name(w, "muscles", False)
    tables = [
        [
            f"{J} = {{",
            *[f"    {q}{n}{q}: ({x}, {y})," for n, (x, y) in zip(names, coords, strict=True)],
            "}",
        ]
    ]
    bones = [f"({q}{names[a]}{q}, {q}{names[b]}{q})," for a, b, amp, _, _ in plan.links if not amp]
    muscles = [
        f"({q}{names[a]}{q}, {q}{names[b]}{q}, {_amp_text(w, amp)}, {_phase_text(w, ph)}),"
        for a, b, amp, ph, _ in plan.links
        if amp
    ]
    tables.append(_table(B, bones, w, "bones"))
    tables.append(_table(M, muscles, w, "muscles: a, b, amplitude, phase"))
    at, nm = w.name("joints"), w.name("name")
    x, y, xy = w.name("x"), w.name("y"), w.name("xy")
    a, b, am, ph = w.name("a"), w.name("b"), w.name("amp"), w.name("phase")
    body = w.note("joints by name", "named joints")
    how = w.pick(("comp", "loop", "star"))
    if how == "comp":
        body += [f"{at} = {{{nm}: {c}.add_joint({x}, {y}) for {nm}, ({x}, {y}) in {J}.items()}}"]
    elif how == "star":
        body += [f"{at} = {{{nm}: {c}.add_joint(*{xy}) for {nm}, {xy} in {J}.items()}}"]
    else:
        body += [
            f"{at} = {{}}",
            f"for {nm}, ({x}, {y}) in {J}.items():",
            f"    {at}[{nm}] = {c}.add_joint({x}, {y})",
        ]
    body += w.gap()
    body += [f"for {a}, {b} in {B}:", "    " + w.bone(f"{at}[{a}]", f"{at}[{b}]")]
    body += [
        f"for {a}, {b}, {am}, {ph} in {M}:",
        "    " + w.muscle(f"{at}[{a}]", f"{at}[{b}]", am, ph),
    ]
    return Code(body, tables=tables), plan


def _style_text(plan: Plan, w: Writer) -> tuple[Code, Plan]:
    """A plain-text table of joints and links, parsed with ``split``."""
    c = w.creator
    named = w.coin(0.6)
    comma = w.coin(0.3)
    kinds = w.coin(0.5)
    sep = ", " if comma else " "
    part = w.name("xy")
    names = _joint_names(plan, w) if named else [str(i) for i in range(len(plan.joints))]
    coords = _coords(plan, w)
    S = _free(w, ("SHAPE", "BODY", "LAYOUT", "POINTS_TEXT", "SPEC"))
    L = _free(w, ("WIRING", "LINKS_TEXT", "CONNECTIONS", "LINKS"))
    if named:
        jrows = [f"{n}{sep}{x}{sep}{y}" for n, (x, y) in zip(names, coords, strict=True)]
    else:
        jrows = [f"{x}{sep}{y}" for x, y in coords]
    lrows = []
    for a, b, amp, ph, _ in plan.links:
        head = ("muscle" if amp else "bone") + sep if kinds else ""
        tail = f"{sep}{_amp_text(w, amp)}{sep}{_phase_text(w, ph)}" if amp else ""
        lrows.append(f"{head}{names[a]}{sep}{names[b]}{tail}")
    tables = [[f'{S} = """', *jrows, '"""'], [f'{L} = """', *lrows, '"""']]
    at, line, f = w.name("joints"), w.name("line"), w.name("parts")
    x, y, nm = w.name("x"), w.name("y"), w.name("name")
    strip = w.pick((".strip().splitlines()", '.strip().split("\\n")', ".splitlines()"))
    skip = strip == ".splitlines()"

    def fields(v: str) -> str:
        if comma:
            return f'[{part}.strip() for {part} in {v}.split(",")]'
        return f"{v}.split()"

    def get(v: str) -> str:
        return f"{at}[{v}]" if named else f"{at}[int({v})]"

    body = w.note("read the joints", "parse the shape table")
    body += [f"{at} = {{}}" if named else f"{at} = []", f"for {line} in {S}{strip}:"]
    loop: list[str] = [f"if not {line}.strip():", "    continue"] if skip else []
    if named:
        loop += [
            f"{nm}, {x}, {y} = {fields(line)}",
            f"{at}[{nm}] = {c}.add_joint(float({x}), float({y}))",
        ]
    else:
        loop += [f"{x}, {y} = {fields(line)}"]
        loop += [f"{at}.append({c}.add_joint(float({x}), float({y})))"]
    body += indent(loop) + w.gap()
    body += w.note("then the links", "links: two joints, or two joints and a motion")
    body += [f"for {line} in {L}{strip}:"]
    loop = [f"if not {line}.strip():", "    continue"] if skip else []
    loop += [f"{f} = {fields(line)}"]
    if kinds:
        loop += [
            f'if {f}[0] == "bone":',
            "    " + w.bone(get(f"{f}[1]"), get(f"{f}[2]")),
            "else:",
            "    " + w.muscle(get(f"{f}[1]"), get(f"{f}[2]"), f"float({f}[3])", f"float({f}[4])"),
        ]
    else:
        loop += [
            f"if len({f}) == 2:",
            "    " + w.bone(get(f"{f}[0]"), get(f"{f}[1]")),
            "else:",
            "    " + w.muscle(get(f"{f}[0]"), get(f"{f}[1]"), f"float({f}[2])", f"float({f}[3])"),
        ]
    body += indent(loop)
    return Code(body, tables=tables), plan


#: Code styles: how a plan becomes a program (``loops`` only for plans that have their
#: own parametric program).
STYLES: dict[str, Callable[[Plan, Writer], tuple[Code, Plan]]] = {
    "loops": _style_loops,
    "explicit": _style_explicit,
    "table": _style_table,
    "named": _style_named,
    "text": _style_text,
}
_STYLE_ODDS = {"loops": 0.45, "explicit": 0.2, "table": 0.18, "named": 0.1, "text": 0.07}


# --------------------------------------------------------------------------- layout
_ABOUT: dict[str, tuple[str, ...]] = {
    "chain": (
        "A snake of {n} boxes.",
        "Caterpillar: a chain of {n} square cells lying on the ground.",
        "Boxes in a row that ripple as their muscles fire in turn.",
        "Segmented crawler made of {n} boxes.",
    ),
    "ring": (
        "A polygon of {n} joints.",
        "Wheel-like body: {n} rim joints on a circle.",
        "A ring that rolls when its muscles contract in sequence.",
        "Round crawler with {n} corners.",
    ),
    "grid": (
        "A mat of {rows} x {cols} joints.",
        "Lattice walker: a flat grid of cells.",
        "Grid of joints braced by bones, driven through its diagonals.",
    ),
    "truss": (
        "A truss of {n} triangles.",
        "Bridge-shaped crawler: a Warren truss lying on the ground.",
        "Zigzag truss whose chords pull in turn.",
    ),
    "tree": (
        "A tree of joints, {depth} levels deep.",
        "Branching walker: each node splits in two down to the ground.",
        "Recursive body: binary branches with muscles between siblings.",
    ),
    "star": (
        "A star with {n} arms.",
        "Starfish: arms around a centre joint.",
        "Radial body of {n} arms pulled by muscles.",
    ),
    "legged": (
        "A body on {n} legs.",
        "Walker with {n} legs under a box body.",
        "Box body carried by {n} legs that swing in turn.",
        "Animal-like walker: a stiff body and {n} legs.",
    ),
    "ladder": (
        "A ladder of {n} leaning rungs.",
        "Rungs joined by rails; the top rail is made of muscles.",
        "Inchworm-like ladder lying on its side.",
    ),
    "fan": (
        "A fan of triangles around a pivot.",
        "Half-open fan: bones from a pivot, muscles along the arc.",
        "Triangle fan walker with {m} points on its arc.",
    ),
    "arch": (
        "An arch of {m} bays.",
        "Bridge arch standing on its ends, flexed by diagonal muscles.",
        "Half-ring arch made of two concentric arcs.",
    ),
    "cloud": (
        "{m} points, each linked to its nearest neighbours.",
        "Point-cloud walker: fixed scattered points joined to their neighbours.",
        "Irregular body from scattered joints.",
    ),
    "tower": (
        "A tower of {levels} storeys on two stilts.",
        "Stilt walker: a braced tower on splayed feet.",
        "Tall walker that rocks on its stilts.",
    ),
}
_DETAILS = (
    "Phases are in cycles (0 to 1).",
    "Bones keep the shape; muscles move it.",
    "Muscles fire in turn, so a wave runs through the body.",
    "Neighbouring muscles work out of step with each other.",
    "Every amplitude stays well below the limit of 10.",
    "The lowest joints rest on the ground (y = 0).",
    "All numbers are in simulator units.",
    "Nothing here is random: the same program always builds the same walker.",
)
_MAKE_DOCS = (
    "Build the walker.",
    "Return the walker.",
    "Assemble joints and links.",
    "Build and return the walker.",
    "Make the body.",
)


def _docstring(plan: Plan, w: Writer) -> list[str]:
    """The module docstring (or a header comment, or nothing)."""
    form = w.pick(("doc", "long", "comment", "none"), (0.35, 0.25, 0.1, 0.3))
    if form == "none":
        return []
    first = w.pick([*_ABOUT[plan.kind], plan.about[:1].upper() + plan.about[1:] + "."])
    first = first.format(**plan.params)
    if form == "comment":
        return [f"# {first}", ""]
    if form == "doc":
        return [f'"""{first}"""', ""]
    extra = [w.pick(_DETAILS) for _ in range(int(w.rng.integers(1, 3)))]
    extra = list(dict.fromkeys(extra))
    text = textwrap.wrap(" ".join(extra), 88)
    return [f'"""{first}', "", *text, '"""', ""]


def _assemble(plan: Plan, w: Writer, code: Code) -> str:
    """The program's text from its parts, in this writer's layout."""
    tidy = w.coin(0.75)
    sep = ["", ""] if tidy else [""]
    out = _docstring(plan, w)
    if code.math:
        out += ["import math", "", API_IMPORT] if tidy else ["import math", API_IMPORT]
    else:
        out += [API_IMPORT]
    top: list[list[str]] = []
    if w.consts:
        above = w.coin(0.3)
        block: list[str] = []
        for name, text, note in w.consts:
            if note and above:
                block += [f"# {note}", f"{name} = {text}"]
            else:
                block.append(f"{name} = {text}" + (f"  # {note}" if note else ""))
        top.append(block)
    top += code.tables
    mk = ["def make_walker():"]
    if w.coin(w.comment_rate * 0.5):
        mk.append(f'    """{w.pick(_MAKE_DOCS)}"""')
    mk += [f"    {w.creator} = walker_creator()"]
    mk += [""] if w.blank_in_body and w.coin(0.5) else []
    mk += [*indent(code.body), f"    return {w.creator}.get_walker()"]
    # helpers usually come first; sometimes after make_walker (called only at run time)
    blocks = [mk, *code.defs] if w.coin(0.15) else [*code.defs, mk]
    if top:
        out += ["", *[line for i, t in enumerate(top) for line in ([""] if i else []) + t]]
    for block in blocks:
        out += sep + block
    return _squeeze("\n".join(out) + "\n")


def _top_level(text: str, closing: int) -> tuple[int, list[str]]:
    """Where the bracket closing at ``closing`` opens, and the comma-separated parts
    between them (brackets and strings inside parts are skipped)."""
    depth, quote, start = 0, "", -1
    for i in range(closing, -1, -1):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in ")]}":
            depth += 1
        elif ch in "([{":
            depth -= 1
            if depth == 0:
                start = i
                break
    inner = text[start + 1 : closing]
    parts, depth, quote, last = [], 0, "", 0
    for i, ch in enumerate(inner):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[last:i].strip())
            last = i + 1
    parts.append(inner[last:].strip())
    return start, parts


def _split_for(inner: str) -> list[str]:
    """A comprehension's element and its ``for`` clauses (at bracket depth 0)."""
    cuts, depth, quote = [], 0, ""
    for i, ch in enumerate(inner):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and inner.startswith(" for ", i):
            cuts.append(i)
    bounds = [0, *cuts, len(inner)]
    return [inner[a:b].strip() for a, b in itertools.pairwise(bounds)]


def _wrap(line: str, limit: int = 99) -> list[str]:
    """A statement longer than ``limit`` split the way a formatter would: the outermost
    bracket that closes the line opened on its own line, its contents on one indented
    line, one part a line, or (a comprehension) one clause a line."""
    body = line.lstrip()
    if len(line) <= limit or body.startswith(("#", '"', "'")):
        return [line]
    core, tail = (line[:-1], ",") if line.endswith(",") else (line, "")
    if core[-1] not in ")]}":
        return [line]
    pad = line[: len(line) - len(body)]
    start, parts = _top_level(core, len(core) - 1)
    if start <= len(pad) or (core[start - 1] == " " and core[start] == "("):
        return [line]
    head, close = core[: start + 1], pad + core[-1] + tail
    if len(parts) == 1:
        clauses = _split_for(parts[0])
        return [head, *[x for c in clauses for x in _wrap(f"{pad}    {c}", limit)], close]
    joined = ", ".join(parts)
    if len(pad) + 4 + len(joined) <= limit:
        return [head, f"{pad}    {joined}", close]
    return [head, *[x for p in parts for x in _wrap(f"{pad}    {p},", limit)], close]


def _squeeze(text: str) -> str:
    """No more than two blank lines in a row, none at the start of a block, and long
    lines wrapped."""
    lines = [part for line in text.split("\n") for part in _wrap(line)]
    out: list[str] = []
    for line in lines:
        if (
            not line.strip()
            and out
            and not out[-1].strip()
            and len(out) > 1
            and not out[-2].strip()
        ):
            continue
        if not line.strip() and out and out[-1].rstrip().endswith(":"):
            continue
        out.append(line.rstrip())
    while out and not out[0]:
        out.pop(0)
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- entry
def _pick_style(plan: Plan, w: Writer) -> str:
    """A code style for ``plan`` (spelt-out statements only for small plans)."""
    names = [s for s in _STYLE_ODDS if s != "loops" or plan.code is not None]
    if len(plan.joints) > 22 or len(plan.links) > 48:
        names = [s for s in names if s != "explicit"]
    return w.pick(names, [_STYLE_ODDS[s] for s in names])


def draw_program(rng: np.random.Generator) -> tuple[str, Plan, str]:
    """``(text, plan, style)``: a program, the walker it builds (joints in the order the
    program adds them; coordinates and phases as the program computes them, up to the
    rounding of spelt-out numbers) and its code style."""
    for _ in range(40):
        plan = draw_plan(rng)
        w = Writer(rng)
        style = _pick_style(plan, w)
        code, built = STYLES[style](plan, w)
        text = _assemble(built, w, code)
        if len(text) <= MAX_PROGRAM_CHARS:
            return text, built, style
    raise RuntimeError("no program short enough in 40 draws")


def random_program(rng: np.random.Generator) -> str:
    """The source of a fresh walker program drawn with ``rng`` (body plan, code style and
    surface each drawn independently; the same generator state gives the same text)."""
    return draw_program(rng)[0]
