"""The surface of a generated walker program (ELM arXiv 2206.08896v1, §3.1, §4).

ELM's diff models learnt from commits to code written by many people. jelm's corpus writes
its own programs (:mod:`.styles`), and a :class:`Writer` holds the choices that make one of
them look like one person wrote it: a naming convention and identifier vocabulary, module
constants or inline literals, the number format, which of the walker API's call forms a
muscle and a bone use, how loops and lists are written, and how much is commented. Every
choice is drawn once per program from the generator it is given.
"""

from __future__ import annotations

import keyword
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from jelm.programs.edits import format_float

__all__ = ["CONVENTIONS", "Writer", "indent"]

T = TypeVar("T")

#: Naming conventions of the identifiers a program chooses itself.
CONVENTIONS = ("snake", "camel", "short")

# Names a program never binds (keywords, builtins it calls, the API and module names).
_RESERVED = frozenset(keyword.kwlist) | {
    "abs", "all", "any", "dict", "enumerate", "float", "int", "len", "list", "map", "math",
    "max", "min", "print", "range", "round", "self", "sorted", "str", "sum", "tuple", "zip",
    "make_walker", "walker_creator", "id", "type", "set", "iter", "next", "object", "pow",
}  # fmt: skip

# role -> (snake_case names, camelCase names, short names); a program picks one per role.
_VOCAB: dict[str, tuple[str, str, str]] = {
    "creator": (
        "wc creator builder maker racer soda kit walker sr",
        "wc creator builder walkerMaker sodaKit bodyBuilder racer",
        "w c b wc sb",
    ),
    "joints": (
        "joints points nodes verts pts masses handles",
        "jointList points nodeList allPoints",
        "p js v ps",
    ),
    "top": ("top upper roof top_row crown", "top upperRow roof topRow", "t up hi"),
    "bottom": ("bottom lower floor bottom_row base", "bottom lowerRow floor bottomRow", "b dn lo"),
    "rim": ("rim ring outer loop_pts circle tyre shell", "rim ring outerRing loopPts shell", "r o"),
    "hub": ("hub center centre core mid axle pivot", "hub center core midPoint axle", "h c0 z"),
    "grid": ("grid mesh mat lattice cells net", "grid mesh mat lattice cellMap", "g m"),
    "cols": ("columns cols posts pairs bays", "columns cols posts pairs", "cs ps"),
    "feet": ("feet paws toes leaves tips", "feet paws toes leafNodes tipList", "fs ts"),
    "legs": ("legs limbs stilts struts", "legs limbs stilts", "ls"),
    "arms": ("arms spokes rays petals", "arms spokes rays petals", "a s"),
    "tips": ("tips ends outer_ring claws", "tips ends outerTips claws", "e"),
    "inner": ("inner near_ring knuckles elbows", "inner nearRing knuckles elbows", "n"),
    "arc": ("arc bow span canopy", "arc bow span canopy", "a"),
    "story_l": ("left left_side west lefts", "left leftSide west", "ll"),
    "story_r": ("right right_side east rights", "right rightSide east", "rr"),
    "done": ("seen done linked paired", "seen done linked paired", "sd"),
    "pair": ("pair key edge couple", "pair key edge couple", "pk"),
    "near": ("nearest order closest ranked", "nearest order closest ranked", "o"),
    "idx": ("k i n idx s", "k i n idx", "k i n"),
    "idx2": ("j m t", "j m t", "j m"),
    "row": ("row r y_i level", "row r yi level", "r"),
    "col": ("col c x_i slot", "col c xi slot", "c"),
    "x": ("x px xpos", "x px xPos", "x"),
    "y": ("y py ypos", "y py yPos", "y"),
    "angle": ("angle theta a ang", "angle theta ang", "a"),
    "phase": ("phase ph timing offset", "phase ph timing", "ph"),
    "amp": ("amp amplitude strength", "amp amplitude strength", "am"),
    "prev": ("prev last previous before", "prev last previous", "pv"),
    "low": ("low bottom_pt lo_pt base_pt", "low bottomPt loPt", "lo"),
    "high": ("high top_pt hi_pt head_pt", "high topPt hiPt", "hi"),
    "node": ("node joint pt here", "node joint pt here", "q"),
    "child": ("child kid sub branch", "child kid sub branch", "ch"),
    "left": ("left left_child lhs", "left leftChild lhs", "lc"),
    "right": ("right right_child rhs", "right rightChild rhs", "rc"),
    "hip": ("hip shoulder root_pt socket", "hip shoulder socket", "hp"),
    "knee": ("knee elbow joint_mid hinge", "knee elbow midJoint hinge", "kn"),
    "foot": ("foot paw toe sole", "foot paw toe sole", "f"),
    "line": ("line row entry record", "line row entry record", "ln"),
    "parts": ("parts fields cols words", "parts fields words", "fs"),
    "name": ("name label key tag", "name label key tag", "nm"),
    "a": ("a start src first", "a start src first", "a"),
    "b": ("b end dst second", "b end dst second", "b"),
    "table": ("table spec data", "table spec data", "tb"),
    "frame": ("frame body rig skel robot", "frame body rig skel robot", "f"),
    "xy": ("xy pos point coords", "xy pos point coords", "xy"),
    "count": ("count n_points how_many sides", "count nPoints howMany sides", "n m"),
    "radius": ("radius rad size dist", "radius rad size dist", "r"),
    "centre_y": ("cy height base_y mid_y", "cy height baseY midY", "h cy"),
    "level": ("depth level d generation", "depth level d generation", "d"),
    "spread": ("spread width reach span", "spread width reach span", "sp"),
    "shoulder": ("shoulder anchor above upper_pt", "shoulder anchor above upperPt", "sh"),
    "cos": ("ca cos_a ux", "ca cosA ux", "ca"),
    "sin": ("sa sin_a uy", "sa sinA uy", "sa"),
}

# roles named as a pair: the same position in both lists (a/b, src/dst, x/y, px/py, ...)
_PARTNER = {
    "a": "b",
    "x": "y",
    "cos": "sin",
    "top": "bottom",
    "story_l": "story_r",
    "low": "high",
    "left": "right",
}
_FIRST = {v: k for k, v in _PARTNER.items()}

# role -> UPPER_CASE names of a module constant
_CONSTS: dict[str, str] = {
    "amp": "AMPLITUDE AMP STRENGTH PULL MUSCLE_AMP FORCE SQUEEZE",
    "amp2": "KNEE_AMPLITUDE BEND_AMP LIFT_AMP SECOND_AMP TUG FLEX",
    "phase": "PHASE START_PHASE PHASE0 OFFSET TIMING",
    "phase2": "PHASE_B OTHER_PHASE LAG KNEE_OFFSET BEND_OFFSET",
    "step": "PHASE_STEP STEP WAVE_STEP SHIFT DELAY STAGGER",
    "n": "N COUNT N_SEG SEGMENTS SECTIONS PIECES",
    "n_rim": "N_RIM SIDES N_SIDES CORNERS N_POINTS",
    "n_legs": "N_LEGS LEGS LEG_COUNT FEET",
    "rows": "ROWS N_ROWS HEIGHT_CELLS LAYERS",
    "cols": "COLS N_COLS WIDTH_CELLS COLUMNS",
    "levels": "LEVELS FLOORS STORIES N_LEVELS",
    "depth": "DEPTH LEVELS GENERATIONS TREE_DEPTH",
    "k_near": "K NEIGHBOURS N_NEAR LINKS_PER_POINT",
    "width": "WIDTH BOX_W CELL SPACING DX BAY",
    "height": "HEIGHT BOX_H TALL DY RISE",
    "dx": "DX GAP STEP_X PITCH SPACING",
    "dy": "DY STEP_Y RISE LAYER_GAP",
    "radius": "RADIUS R SIZE RIM_RADIUS OUTER",
    "radius2": "INNER INNER_RADIUS R2 HOLE",
    "cx": "CX CENTER_X X0 MID_X",
    "cy": "CY CENTER_Y Y0 MID_Y AXLE_HEIGHT",
    "x0": "X0 START_X LEFT ORIGIN_X",
    "lean": "LEAN TILT SLANT SKEW",
    "drop": "DROP FALL BRANCH_DROP DESCENT",
    "spread": "SPREAD FAN_OUT SPAN HALF_WIDTH",
    "shrink": "SHRINK RATIO DECAY TAPER",
    "start": "START_ANGLE A0 FIRST_ANGLE OPENING",
    "sweep": "SWEEP ARC SPREAD_DEG ANGLE_RANGE",
    "leg_len": "LEG LENGTH LEG_LENGTH HIP_HEIGHT STANCE",
    "thick": "THICKNESS BODY_H DEPTH_Y SLAB",
    "knee_dx": "KNEE_DX KNEE_OUT BEND KNEE_SHIFT",
    "foot_dx": "FOOT_DX SPLAY REACH TOE_OUT",
    "stilt": "STILT LIFT STILT_LEN CLEARANCE",
    "splay": "SPLAY FOOT_OUT WIDE STANCE_W",
    "scale_x": "MUL_X SCRAMBLE_X STRIDE_X",
    "scale_y": "MUL_Y SCRAMBLE_Y STRIDE_Y",
    "box_w": "FIELD_W BOX_WIDTH AREA_W",
    "box_h": "FIELD_H BOX_HEIGHT AREA_H",
    "r1": "R1 INNER ARM ELBOW_R",
    "r2": "R2 OUTER REACH TIP_R",
}


def indent(lines: Sequence[str], levels: int = 1) -> list[str]:
    """``lines`` indented by ``levels`` * 4 spaces (blank lines stay empty)."""
    pad = "    " * levels
    return [pad + s if s else s for s in lines]


class Writer:
    """One program's hand: every surface choice is drawn once, at construction.

    ``name(role)`` gives the program's identifier for a role (the same each time),
    ``fresh(role)`` another one; ``const(role, text)`` a module constant or the literal;
    ``muscle``/``bone`` an ``add_muscle`` call in the program's form; ``loop`` and
    ``make_list`` a ``for``/``while`` loop or a comprehension; ``note`` a comment, or none.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.convention = self.pick(CONVENTIONS, (0.5, 0.28, 0.22))
        self.used: set[str] = set(_RESERVED)
        self._names: dict[str, str] = {}
        #: module constants in the order they were made: (name, literal, comment)
        self.consts: list[tuple[str, str, str]] = []
        self._const_of: dict[tuple[str, str], str] = {}
        self.const_share = self.pick((0.0, 0.6, 1.0), (0.3, 0.25, 0.45))
        self.muscle_form = self.pick(("pos4", "pos5", "kw", "kwp"), (0.35, 0.35, 0.18, 0.12))
        self.bone_form = self.pick(("two", "kw", "flag"), (0.7, 0.18, 0.12))
        if self.muscle_form == "pos5" and self.rng.random() < 0.3:
            self.bone_form = "pos5"
        self.comment_rate = self.pick((0.0, 0.35, 0.8), (0.25, 0.4, 0.35))
        self.int_coords = self.rng.random() < 0.25  # whole coordinates as ints ("4", not "4.0")
        self.while_share = self.pick((0.0, 0.15, 0.6), (0.6, 0.3, 0.1))
        self.comprehension = self.rng.random() < 0.55
        self.blank_in_body = self.rng.random() < 0.7
        self.label_sep = "_" if self.convention == "snake" and self.coin(0.5) else ""
        self.creator = self.name("creator")

    # -- drawing ----------------------------------------------------------------------
    def pick(self, items: Sequence[T], weights: Sequence[float] | None = None) -> T:
        """One of ``items`` (uniform, or with relative ``weights``)."""
        if weights is None:
            return items[int(self.rng.integers(len(items)))]
        w = np.asarray(weights, dtype=np.float64)
        return items[int(self.rng.choice(len(items), p=w / w.sum()))]

    def coin(self, p: float) -> bool:
        """True with probability ``p``."""
        return bool(self.rng.random() < p)

    # -- names ------------------------------------------------------------------------
    def _options(self, role: str, conv: str | None = None) -> list[str]:
        """The names this program may give ``role`` (its convention, now and then another)."""
        snake, camel, short = _VOCAB[role]
        table = {"snake": snake, "camel": camel, "short": short}
        if conv is None:
            conv = self.convention if self.coin(0.85) else self.pick(CONVENTIONS)
        return table[conv].split()

    def _pair(self, first: str) -> None:
        """Name ``first`` and its partner role together (``src``/``dst``, ``px``/``py``)."""
        conv = self.convention if self.coin(0.85) else self.pick(CONVENTIONS)
        for c in (conv, *CONVENTIONS):  # this program's convention, else any other
            one, two = self._options(first, c), self._options(_PARTNER[first], c)
            free = [
                i
                for i in range(min(len(one), len(two)))
                if one[i] not in self.used and two[i] not in self.used and one[i] != two[i]
            ]
            if free:
                i = self.pick(free)
                self._names[first], self._names[_PARTNER[first]] = one[i], two[i]
                self.used.update((one[i], two[i]))
                return
        self._names[first] = self.fresh(first)
        self._names[_PARTNER[first]] = self.fresh(_PARTNER[first])

    def fresh(self, role: str) -> str:
        """A new identifier for ``role`` not used yet in this program."""
        options = [o for o in self._options(role) if o not in self.used]
        if options:
            name = self.pick(options)
        else:
            base, k = self._options(role)[0], 2
            while f"{base}{k}" in self.used:
                k += 1
            name = f"{base}{k}"
        self.used.add(name)
        return name

    def name(self, role: str) -> str:
        """This program's identifier for ``role`` (drawn the first time, then the same)."""
        if role not in self._names:
            if role in _PARTNER or role in _FIRST:
                self._pair(_FIRST.get(role, role))
            else:
                self._names[role] = self.fresh(role)
        return self._names[role]

    def func(self, *options: str) -> str:
        """A function or method name out of ``options`` (snake_case words; camelCase
        when the program's convention is camel), not used yet."""
        names = [self._camel(o) if self.convention == "camel" else o for o in options]
        free = [n for n in names if n not in self.used] or [names[0] + "_"]
        name = self.pick(free)
        self.used.add(name)
        return name

    @staticmethod
    def _camel(name: str) -> str:
        """``snake_case`` -> ``snakeCase``."""
        head, *rest = name.split("_")
        return head + "".join(r.capitalize() for r in rest)

    def label(self, word: str, k: int) -> str:
        """The name of joint ``k`` of a group called ``word`` (``knee2``, ``knee_2``)."""
        return f"{word}{self.label_sep}{k}"

    # -- numbers and constants ---------------------------------------------------------
    @staticmethod
    def num(value: float, decimals: int = 2) -> str:
        """A float literal (``2.5``, ``0.25``, ``3.0``)."""
        return format_float(float(value), decimals)

    def coord(self, value: float) -> str:
        """A coordinate literal, as an int when it is whole and the program writes so."""
        text = format_float(float(value), 2)
        if self.int_coords and text.endswith(".0"):
            return text[:-2]
        return text

    def const(self, role: str, text: str, comment: str = "", force: bool = False) -> str:
        """A module constant for ``role`` with value ``text`` (its name), or ``text`` itself
        when this program writes the value inline (``force``: always a constant)."""
        key = (role, text)
        if key in self._const_of:
            return self._const_of[key]
        if not force and not self.coin(self.const_share):
            return text
        options = [n for n in _CONSTS[role].split() if n not in self.used]
        if not options:
            base, k = _CONSTS[role].split()[0], 2
            while f"{base}_{k}" in self.used:
                k += 1
            options = [f"{base}_{k}"]
        name = self.pick(options)
        self.used.add(name)
        self.consts.append((name, text, comment if self.coin(self.comment_rate) else ""))
        self._const_of[key] = name
        return name

    # -- the walker API ----------------------------------------------------------------
    def muscle(self, a: str, b: str, amp: str, phase: str, recv: str | None = None) -> str:
        """An ``add_muscle`` call of an active muscle in this program's form."""
        r = recv or self.creator
        form = self.muscle_form
        if form == "pos4":
            return f"{r}.add_muscle({a}, {b}, {amp}, {phase})"
        if form == "pos5":
            return f"{r}.add_muscle({a}, {b}, False, {amp}, {phase})"
        if form == "kw":
            return f"{r}.add_muscle({a}, {b}, amplitude={amp}, phase={phase})"
        return f"{r}.add_muscle({a}, {b}, passive=False, amplitude={amp}, phase={phase})"

    def bone(self, a: str, b: str, recv: str | None = None) -> str:
        """An ``add_muscle`` call of a passive bone in this program's form."""
        r = recv or self.creator
        form = self.bone_form
        if form == "kw":
            return f"{r}.add_muscle({a}, {b}, passive=True)"
        if form == "flag":
            return f"{r}.add_muscle({a}, {b}, True)"
        if form == "pos5":
            return f"{r}.add_muscle({a}, {b}, True, 0.0, 0.0)"
        return f"{r}.add_muscle({a}, {b})"

    # -- statements ---------------------------------------------------------------------
    def loop(self, var: str, bound: str, body: list[str], start: str = "") -> list[str]:
        """``for var in range([start, ]bound):`` over ``body``, or the same as a ``while``
        loop (``body`` must not ``continue``)."""
        if self.coin(self.while_share) and not any("continue" in s for s in body):
            return [
                f"{var} = {start or 0}",
                f"while {var} < {bound}:",
                *indent(body),
                f"    {var} += 1",
            ]
        rng_args = f"{start}, {bound}" if start else bound
        return [f"for {var} in range({rng_args}):", *indent(body)]

    def make_list(
        self, name: str, var: str, bound: str, item: str, pre: Sequence[str] = ()
    ) -> list[str]:
        """``name`` = a list of ``item`` for ``var`` in ``range(bound)``: a comprehension, an
        ``append`` loop or a ``while`` loop (``pre``: statements computing the item)."""
        if not pre and self.comprehension:
            one = f"{name} = [{item} for {var} in range({bound})]"
            if len(one) <= 88:
                return [one]
            return [f"{name} = [", f"    {item}", f"    for {var} in range({bound})", "]"]
        return [f"{name} = []", *self.loop(var, bound, [*pre, f"{name}.append({item})"])]

    def pack(self, rows: Sequence[str], width: int = 88) -> list[str]:
        """Table rows (``(...),``), one a line or up to a few to a line, each line at most
        ``width`` characters."""
        per = self.pick((1, 1, 2, 3, 4, 6))
        out: list[str] = []
        for row in rows:
            if out and out[-1].count("),") < per and len(out[-1]) + 1 + len(row) <= width:
                out[-1] += " " + row
            else:
                out.append(row)
        return out

    def note(self, *texts: str) -> list[str]:
        """A comment line (one of ``texts``) or nothing, at this program's comment rate."""
        if texts and self.coin(self.comment_rate):
            return [f"# {self.pick(texts)}"]
        return []

    def doc(self, text: str) -> list[str]:
        """A one-line docstring ``text``, or nothing, at this program's comment rate."""
        return [f'"""{text}"""'] if self.coin(self.comment_rate) else []

    def gap(self) -> list[str]:
        """A blank line between paragraphs of a function, or nothing."""
        return [""] if self.blank_in_body else []
