"""Structural edits of the corpus (ELM arXiv 2206.08896v1, §3.1, §4): the kinds of the
"Changed make_walker function." message.

``add_limb``, ``add_link`` and ``add_loop_links`` add parts next to existing joints (the
joint expressions ``make_walker`` bound, and where their joints are); ``remove_muscle``,
``remove_call``, ``duplicate_statement``, ``edit_helper``, ``change_loop_bound``,
``swap_passive`` and ``phase_expression`` rewrite or remove lines and expressions. Each
takes the parent, the generator and the walker limits and returns text edits, or ``None``
when the parent has no site for it.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable

import numpy as np

from jelm.domains.sodarace.api import Walker, WalkerLimits
from jelm.domains.sodarace.corpus.base import Edits, pick
from jelm.domains.sodarace.corpus.numbers import FACTORS, clamp, tunable, values_edits
from jelm.domains.sodarace.corpus.program import MATH_SWAPS, Program, Stmt, WalkerSites
from jelm.programs.edits import format_float, is_number, literal_text, splice

__all__ = [
    "add_limb",
    "add_link",
    "add_loop_links",
    "change_loop_bound",
    "duplicate_statement",
    "edit_helper",
    "phase_expression",
    "remove_call",
    "remove_muscle",
    "swap_passive",
]


def _amp_text(p: Program, rng: np.random.Generator) -> str:
    consts = [n.name for n in p.sites.nums if n.role == "const" and "AMPLITUDE" in n.name]
    if consts and rng.random() < 0.4:
        return pick(rng, consts)
    return format_float(float(rng.uniform(2.0, 9.0)), 1)


def _phase_text(rng: np.random.Generator) -> str:
    return format_float(float(rng.integers(0, 20)) * 0.05, 2)


def _fresh(s: WalkerSites, base: str, used: set[str]) -> str:
    name, k = base, 2
    while name in s.names or name in used:
        name, k = f"{base}{k}", k + 1
    used.add(name)
    return name


def _degrees(w: Walker) -> list[int]:
    deg = [0] * w.n_joints
    for i, j, _ in w.muscles:
        deg[i] += 1
        deg[j] += 1
    return deg


def _insert_before_return(p: Program, block: list[str]) -> Edits | None:
    """Insert ``block`` (lines without indentation) at the end of ``make_walker``."""
    s = p.sites
    if s.ret_line is None:
        return None
    return [s.src.insert_before(s.ret_line, s.ret_indent, block)]


def _free_spot(w: Walker, x: float, y: float, limits: WalkerLimits, min_gap: float = 0.6) -> bool:
    bound = limits.max_abs_coordinate - 1
    if abs(x) > bound or y < 0 or y > bound:
        return False
    return all(math.hypot(x - a, y - b) >= min_gap for a, b in w.joints)


_LIMB_NAMES = ("leg", "tail", "arm", "limb", "spike", "toe", "hook", "flap")
_LEG_COMMENTS = (
    "# an extra leg",
    "# add a leg",
    "# a new leg under {a}",
    "# one more leg, pushed by a muscle",
    "# a knee and a foot hanging from {a}",
)
_LIMB_COMMENTS = (
    "# add a limb",
    "# a tail hanging off {a}",
    "# extra limb for grip",
    "# a new joint held by a bone and a muscle",
    "# a small flap on {a}",
)


def _near(p: Program, a: int, refs: list[tuple[str, int]], k: int = 6) -> list[tuple[str, int]]:
    ax, ay = p.walker.joints[a]
    others = sorted(
        {j: (e, j) for e, j in reversed(refs) if j != a}.values(),
        key=lambda r: (
            math.hypot(p.walker.joints[r[1]][0] - ax, p.walker.joints[r[1]][1] - ay),
            r[1],
        ),
    )
    return others[:k]


def add_limb(p: Program, rng: np.random.Generator, limits: WalkerLimits) -> Edits | None:
    wc = p.sites.creator  # the program's walker_creator
    refs, _ = p.refs
    if len(refs) < 2:
        return None
    deg = _degrees(p.walker)
    cands = [r for r in refs if deg[r[1]] <= limits.max_links_per_joint - 2]
    if not cands:
        return None
    a_expr, a = pick(rng, cands)
    near = [r for r in _near(p, a, refs) if deg[r[1]] < limits.max_links_per_joint]
    if not near:
        return None
    b_expr, _ = pick(rng, near)
    ax, ay = p.walker.joints[a]
    used: set[str] = set()
    base = pick(rng, _LIMB_NAMES)
    relative = rng.random() < 0.5 and "," not in a_expr
    amp, phase = _amp_text(p, rng), _phase_text(rng)
    block: list[str] = []
    two = rng.random() < 0.5 and ay >= 2.0
    if rng.random() < 0.6:
        block.append(pick(rng, _LEG_COMMENTS if two else _LIMB_COMMENTS).format(a=a_expr))
    for _ in range(8):
        dx = format_float(float(rng.uniform(-4.0, 4.0)), 1)
        if two:  # knee and foot: a leg
            drop = float(rng.uniform(1.0, max(1.2, ay)))
            kx, ky = ax + float(dx), ay - drop / 2
            fx, fy = ax + float(dx) * 0.5, max(0.0, ay - drop)
            kx, ky, fx, fy = (round(v, 1) for v in (kx, ky, fx, fy))
            if _free_spot(p.walker, kx, ky, limits) and _free_spot(p.walker, fx, fy, limits):
                if math.hypot(kx - fx, ky - fy) < 0.6:
                    continue
                knee, foot = _fresh(p.sites, "knee", used), _fresh(p.sites, "foot", used)
                if relative:
                    kx_t = f"{a_expr}[0] + {format_float(kx - ax, 1)}".replace("+ -", "- ")
                    ky_t = f"{a_expr}[1] - {format_float(ay - ky, 1)}".replace("- -", "+ ")
                    fx_t = f"{a_expr}[0] + {format_float(fx - ax, 1)}".replace("+ -", "- ")
                else:
                    kx_t, ky_t, fx_t = (format_float(v, 1) for v in (kx, ky, fx))
                block += [
                    f"{knee} = {wc}.add_joint({kx_t}, {ky_t})",
                    f"{foot} = {wc}.add_joint({fx_t}, {format_float(fy, 1)})",
                    f"{wc}.add_muscle({a_expr}, {knee})",
                    f"{wc}.add_muscle({knee}, {foot})",
                    f"{wc}.add_muscle({b_expr}, {knee}, False, {amp}, {phase})",
                ]
                return _insert_before_return(p, block)
        else:  # one joint held by a bone and a muscle
            r = float(rng.uniform(1.5, 5.0))
            th = float(rng.uniform(0, 2 * math.pi))
            x, y = round(ax + r * math.cos(th), 1), round(max(0.0, ay + r * math.sin(th)), 1)
            if _free_spot(p.walker, x, y, limits):
                new = _fresh(p.sites, base, used)
                if relative:
                    xt = f"{a_expr}[0] + {format_float(x - ax, 1)}".replace("+ -", "- ")
                    yt = f"{a_expr}[1] + {format_float(y - ay, 1)}".replace("+ -", "- ")
                else:
                    xt, yt = format_float(x, 1), format_float(y, 1)
                block += [
                    f"{new} = {wc}.add_joint({xt}, {yt})",
                    f"{wc}.add_muscle({a_expr}, {new})",
                    f"{wc}.add_muscle({b_expr}, {new}, False, {amp}, {phase})",
                ]
                return _insert_before_return(p, block)
    return None


def add_link(p: Program, rng: np.random.Generator, limits: WalkerLimits) -> Edits | None:
    wc = p.sites.creator  # the program's walker_creator
    refs, _ = p.refs
    if len(refs) < 2:
        return None
    deg = _degrees(p.walker)
    linked = {(min(i, j), max(i, j)) for i, j, _ in p.walker.muscles}
    cap = limits.max_links_per_joint
    cands = [r for r in refs if deg[r[1]] < cap]
    if len(cands) < 2:
        return None
    for _ in range(6):
        a_expr, a = pick(rng, cands)
        near = [r for r in _near(p, a, cands) if (min(a, r[1]), max(a, r[1])) not in linked]
        if not near:
            continue
        b_expr, _ = pick(rng, near)
        block = []
        if rng.random() < 0.4:
            block.append(pick(rng, ("# brace the body", "# one more link", "# a new muscle")))
        if rng.random() < 0.35:
            block.append(f"{wc}.add_muscle({a_expr}, {b_expr})")
        else:
            amp, phase = _amp_text(p, rng), _phase_text(rng)
            block.append(f"{wc}.add_muscle({a_expr}, {b_expr}, False, {amp}, {phase})")
        return _insert_before_return(p, block)
    return None


def add_loop_links(p: Program, rng: np.random.Generator) -> Edits | None:
    wc = p.sites.creator  # the program's walker_creator
    _, lists = p.refs
    lists = [(name, idx) for name, idx in lists if len(idx) >= 3]
    if not lists:
        return None
    name, idx = pick(rng, lists)
    k = "k" if "k" not in p.sites.top_names else "i"
    step = int(rng.integers(1, 3))
    other = name
    if rng.random() < 0.4:
        same = [n for n, ix in lists if len(ix) == len(idx) and n != name]
        if same:
            other = pick(rng, same)
            step = int(rng.integers(0, 2))
    if other == name and step == 0:
        step = 1
    target = f"{other}[{k} + {step}]" if step else f"{other}[{k}]"
    bound = f"range(len({name}) - {step})" if step else f"range(len({name}))"
    if rng.random() < 0.3 and step:
        target = f"{other}[({k} + {step}) % len({other})]"
        bound = f"range(len({name}))"
    if rng.random() < 0.5:
        call = f"{wc}.add_muscle({name}[{k}], {target})"
        comment = "# brace the joints with bones"
    else:
        call = (
            f"{wc}.add_muscle({name}[{k}], {target}, False, {_amp_text(p, rng)}, {k} / len({name}))"
        )
        comment = "# a wave of muscles along the body"
    block = ([comment] if rng.random() < 0.6 else []) + [f"for {k} in {bound}:", f"    {call}"]
    return _insert_before_return(p, block)


def _removable(s: WalkerSites, st: Stmt) -> bool:
    return st.siblings > 1 and s.src.whole_lines(st.node)


def _remove_lines(s: WalkerSites, st: Stmt, rng: np.random.Generator) -> Edits:
    """Delete a statement's lines; at the end of a paragraph, usually (odds 0.7) with the
    comment lines above it."""
    plain, wider = s.src.removal(st.node)
    return [wider if wider is not None and rng.random() < 0.7 else plain]


def _is_call_to(node: ast.stmt, names: tuple[str, ...] | None, exclude: tuple[str, ...] = ()):
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    f = node.value.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return (names is None or name in names) and name not in exclude


def remove_muscle(p: Program, rng: np.random.Generator) -> Edits | None:
    s = p.sites
    cands = [st for st in s.stmts if _is_call_to(st.node, ("add_muscle",)) and _removable(s, st)]
    if not cands:
        return None
    return _remove_lines(s, pick(rng, cands), rng)


def remove_call(p: Program, rng: np.random.Generator) -> Edits | None:
    s = p.sites
    cands = [
        st
        for st in s.stmts
        if _is_call_to(st.node, None, ("add_muscle", "add_joint", "append")) and _removable(s, st)
    ]
    if not cands:
        return None
    return _remove_lines(s, pick(rng, cands), rng)


def duplicate_statement(p: Program, rng: np.random.Generator) -> Edits | None:
    """Duplicate a statement that builds part of the walker (a call of the walker API or
    of a helper), usually changing one number of the copy; a copied joint always moves."""
    s = p.sites
    api = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(s.receivers))) + r")\.")
    helpers = tuple(f"{f}(" for f in s.funcs if f != "make_walker")
    cands = []
    for st in s.stmts:
        node = st.node
        if not isinstance(node, (ast.Expr, ast.Assign)) or not isinstance(node.value, ast.Call):
            continue
        a, b = s.src.statement_lines(node)
        seg = s.text[a:b]
        if s.src.whole_lines(node) and (api.search(seg) or any(h in seg for h in helpers)):
            cands.append((st, a, b))
    if not cands:
        return None
    st, start, end = pick(rng, cands)
    copy = s.text[start:end]
    if not copy.endswith("\n"):
        copy += "\n"
    joints = [c for c in s.joint_calls if start <= c.args[0][0] < end and len(c.args) == 2]
    nums = [n for n in s.nums if start <= n.start and n.end <= end and n.role != "range"]
    edits: Edits = []
    if joints:
        call = pick(rng, joints)
        a, b = call.args[int(rng.integers(2))]
        d = format_float(float(rng.uniform(1.0, 3.0)), 1)
        if (is_number(call.node.args[0]) and a == call.args[0][0]) or (
            is_number(call.node.args[1]) and a == call.args[1][0]
        ):
            value = float(s.text[a:b]) + float(d) * pick(rng, (-1, 1))
            edits.append((a, b, format_float(value, 1)))
        else:
            edits.append((b, b, f" {pick(rng, ('+', '-'))} {d}"))
    elif nums and rng.random() < 0.75:
        n = pick(rng, nums)
        if n.role == "index" or n.is_int:
            value = n.value + pick(rng, (-1, 1, 1, 2))
            if n.role == "index" and n.value >= 0:
                value = abs(value)
        else:
            value = n.value * pick(rng, FACTORS)
        text = literal_text(n, clamp(n, value))
        if text is not None:
            edits.append((n.start, n.end, text))
    if edits:
        copy = splice(copy, [(x - start, y - start, t) for x, y, t in edits]) or copy
    return [(end, end, copy if s.text[end - 1 : end] == "\n" else "\n" + copy)]


def edit_helper(p: Program, rng: np.random.Generator) -> Edits | None:
    s = p.sites
    helpers = [f for f in s.funcs if f != "make_walker"]
    if not helpers:
        return None
    func = pick(rng, helpers)
    ops: list[Callable[[], Edits | None]] = []
    nums = [n for n in tunable(s.nums) if n.func == func]
    if nums:

        def perturb() -> Edits | None:
            k = min(len(nums), int(rng.integers(1, 4)))
            chosen = [nums[i] for i in sorted(rng.choice(len(nums), size=k, replace=False))]
            return values_edits(
                [
                    (n, n.value + pick(rng, (-1, 1)))
                    if n.is_int
                    else (n, n.value * float(rng.uniform(0.5, 1.5)) if n.value else 0.3)
                    for n in chosen
                ]
            )

        ops.append(perturb)
    fns = [m for m in s.mathfns if m[0] == func]
    if fns:

        def swap_fn() -> Edits | None:
            _, a, b, name = pick(rng, fns)
            return [(a, b, pick(rng, MATH_SWAPS[name]))]

        ops.append(swap_fn)
    adds = [o for o in s.addops if o[0] == func]
    if adds:

        def swap_op() -> Edits | None:
            _, at, ch = pick(rng, adds)
            return [(at, at + 1, "-" if ch == "+" else "+")]

        ops.append(swap_op)
    terms = [t for t in s.terms if t[0] == func]
    if terms:

        def add_term() -> Edits | None:
            _, at, params = pick(rng, terms)
            c = format_float(float(rng.uniform(0.1, 0.9)), 1)
            sign = pick(rng, ("+", "-"))
            return [(at, at, f" {sign} {c} * {pick(rng, params)}")]

        ops.append(add_term)
    body = [
        st
        for st in s.stmts
        if st.func == func and _is_call_to(st.node, ("add_muscle",)) and _removable(s, st)
    ]
    if body:
        ops.append(lambda: _remove_lines(s, pick(rng, body), rng))
    if not ops:
        return None
    return pick(rng, ops)()


def change_loop_bound(p: Program, rng: np.random.Generator) -> Edits | None:
    s = p.sites
    if not s.ranges:
        return None
    call = pick(rng, s.ranges)
    args = call.node.args
    if len(args) == 1 or rng.random() < 0.7:
        node, (a, b) = args[min(1, len(args) - 1)], call.args[min(1, len(args) - 1)]
        text = s.text[a:b]
        if is_number(node):
            if not text.lstrip("-").isdigit():
                return None
            value = int(text) + pick(rng, (-2, -1, 1, 2))
            return None if value < 0 else [(a, b, str(value))]
        atomic = isinstance(node, (ast.Name, ast.Call, ast.Attribute, ast.Subscript))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and is_number(node.right):
            r0, r1 = s.src.span(node.right)
            if not s.text[r0:r1].isdigit():
                return None
            value = int(s.text[r0:r1]) + pick(rng, (-1, 1))
            if value <= 0:
                return [(s.src.span(node.left)[1], r1, "")]
            return [(r0, r1, str(value))]
        if isinstance(node, (ast.BinOp, ast.Name, ast.Call, ast.Attribute, ast.Subscript)):
            opts = [f"{text} - 1", f"{text} + 1", f"{text} - 2"]
            if atomic:
                opts.append(f"{text} // 2")
            if len(args) == 1:
                opts.append(f"1, {text}")
            return [(a, b, pick(rng, opts))]
        return None
    node, (a, b) = args[0], call.args[0]
    if is_number(node) and s.text[a:b].isdigit():
        value = int(s.text[a:b]) + pick(rng, (-1, 1, 2))
        return None if value < 0 else [(a, b, str(value))]
    return None


def swap_passive(p: Program, rng: np.random.Generator) -> Edits | None:
    s = p.sites
    if not s.muscles:
        return None
    call = pick(rng, s.muscles)
    args = call.node.args
    if len(args) == 2 and not call.node.keywords:
        end = call.args[1][1]
        return [(end, end, f", False, {_amp_text(p, rng)}, {_phase_text(rng)}")]
    if len(args) == 5 and type(args[2]) is ast.Constant and type(args[2].value) is bool:
        a, b = call.args[2]
        if args[2].value is False and rng.random() < 0.35:
            return [(call.args[1][1], call.args[4][1], "")]  # muscle -> plain bone
        return [(a, b, "True" if args[2].value is False else "False")]
    return None


def phase_expression(p: Program, rng: np.random.Generator) -> Edits | None:
    s = p.sites
    if not s.phase_exprs:
        return None
    a, b = pick(rng, s.phase_exprs)
    text = s.text[a:b]
    if "\n" in text:
        return None
    choice = int(rng.integers(3))
    if choice == 0:
        new = f"({text} + {format_float(float(rng.integers(1, 20)) * 0.05, 2)}) % 1.0"
    elif choice == 1:
        new = f"(-{text}) % 1.0" if not text.startswith("-") else text[1:]
    else:
        new = f"({text} * 2) % 1.0"
    return [(a, b, new)]
