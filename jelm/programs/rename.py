"""Consistent renaming of the names a program defines: training-data augmentation for the
diff model (ELM, arXiv 2206.08896v1, §3.1).

A diff copies most of its lines from the parent in the prompt. A model trained on edits of
a few programs can learn their text by heart instead of copying it, and then writes the
memorised lines under a parent it never saw, so its diffs do not apply. Giving the same
programs fresh names (the same new name for every use of an old one, in parent and child
alike) leaves copying as the only way to predict the lines.

:func:`defined_names` finds what a program names itself (functions, classes, arguments,
assigned and loop variables); :func:`rename` rewrites those tokens and nothing else
(attributes, keywords of calls to functions the program does not define, comments,
strings and formatting stay); :func:`fresh_names` draws new names in the old ones'
case style.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import tokenize
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["RenameError", "defined_names", "fresh_names", "rename"]

_WORDS = (
    "a", "arm", "axle", "b", "bar", "base", "beam", "body", "bone", "brace", "c", "cell",
    "chain", "core", "cross", "d", "deck", "edge", "end", "foot", "frame", "gap", "grip",
    "hub", "i", "idx", "j", "joint", "k", "knee", "leg", "level", "limb", "link", "loop",
    "m", "mass", "mid", "motor", "n", "node", "p", "pad", "part", "phase", "pin", "pivot",
    "pt", "q", "rad", "rib", "ring", "rod", "root", "row", "s", "seg", "shift", "side",
    "size", "span", "spoke", "step", "strut", "t", "tip", "top", "u", "unit", "v", "w",
    "wave", "x", "y", "z", "zone",
)  # fmt: skip


class RenameError(ValueError):
    """The program cannot be renamed safely (it does not parse, or uses f-strings)."""


def _kwarg_names_of_foreign_calls(tree: ast.AST, defined: set[str]) -> set[str]:
    """Keyword names in calls to functions the program does not define (``f(x=1)`` of an
    API function must keep ``x``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            callee = node.func
            own = isinstance(callee, ast.Name) and callee.id in defined
            if not own:
                out.update(k.arg for k in node.keywords if k.arg)
    return out


def defined_names(source: str, keep: Iterable[str] = ()) -> list[str]:
    """The names ``source`` defines itself, except ``keep``, builtins, imported names and
    names also used as attributes (a method is called as ``obj.name``, which
    :func:`rename` leaves alone). :class:`RenameError` if it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise RenameError(f"the program does not parse: {exc}") from None
    found: dict[str, None] = {}
    imported: set[str] = set()
    attributes: set[str] = set()  # ``obj.name``: a method or field, reached by attribute
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.setdefault(node.name)
        elif isinstance(node, ast.arg):
            found.setdefault(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            found.setdefault(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            imported.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            found.update(dict.fromkeys(node.names))
        elif isinstance(node, ast.Attribute):
            attributes.add(node.attr)
    excluded = set(keep) | imported | attributes | set(dir(builtins)) | {"self", "cls"}
    excluded |= _kwarg_names_of_foreign_calls(tree, set(found))
    return [n for n in found if n not in excluded and not n.startswith("__")]


def rename(source: str, mapping: Mapping[str, str]) -> str:
    """``source`` with every name token in ``mapping`` replaced (not attributes after a
    dot); everything else is kept byte for byte. :class:`RenameError` for f-strings (their
    names are inside string tokens before Python 3.12)."""
    if not mapping:
        return source
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise RenameError(f"the program does not tokenize: {exc}") from None
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    edits = []
    previous = None
    for tok in tokens:
        if tok.type == tokenize.STRING and tok.string[:2].lower().lstrip("rb").startswith("f"):
            raise RenameError("the program uses f-strings")
        attribute = previous is not None and previous.string == "."
        if tok.type == tokenize.NAME and tok.string in mapping and not attribute:
            row, col = tok.start
            at = starts[row - 1] + col
            edits.append((at, at + len(tok.string), mapping[tok.string]))
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok
    out = []
    cursor = 0
    for start, end, text in edits:
        out.append(source[cursor:start])
        out.append(text)
        cursor = end
    out.append(source[cursor:])
    return "".join(out)


def _style(name: str, words: list[str]) -> str:
    if name.isupper() and len(name) > 1:
        return "_".join(words).upper()
    if name[:1].isupper():
        return "".join(w.capitalize() for w in words)
    return "_".join(words)


def fresh_names(
    names: Iterable[str], rng: np.random.Generator, avoid: Iterable[str] = ()
) -> dict[str, str]:
    """A new name for each of ``names``: one to three words (a number now and then), in
    the old name's case style (``UPPER_CASE``, ``CapWords``, ``snake_case``), distinct,
    never a keyword, builtin or a name in ``avoid``."""
    taken = set(avoid) | set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist)
    out: dict[str, str] = {}
    for name in names:
        for _ in range(100):
            k = int(rng.choice([1, 1, 2, 2, 3]))
            words = [str(_WORDS[int(i)]) for i in rng.integers(len(_WORDS), size=k)]
            if rng.random() < 0.2:
                words[-1] += str(int(rng.integers(10)))
            new = _style(name, words)
            if new.isidentifier() and new not in taken:
                break
        else:  # pragma: no cover - 100 draws from ~80^3 names
            new = f"{name}_{len(out)}"
        taken.add(new)
        out[name] = new
    return out
