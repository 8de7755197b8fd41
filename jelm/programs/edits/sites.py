"""Edit sites of a Python program, found in one walk over its AST (ELM arXiv
2206.08896v1, §3.1): the literals, operators, statement lists, calls and ``range`` loops
that GP mutation edits on the tree and the diff model's corpus edits on the text.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from jelm.programs.edits.text import Source

__all__ = [
    "CONST",
    "INDEX",
    "NO_ROLES",
    "OTHER",
    "RANGE",
    "SYMBOLS",
    "ArgumentRoles",
    "Block",
    "Call",
    "Number",
    "Operator",
    "RangeLoop",
    "Sites",
    "Statement",
]

OTHER, CONST, RANGE, INDEX = "other", "const", "range", "index"

#: The symbol of each binary and comparison operator.
SYMBOLS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


def _no_roles(name: str, n_args: int) -> Sequence[str] | None:
    return None


@dataclasses.dataclass(frozen=True)
class ArgumentRoles:
    """The roles a domain gives the literal arguments of its API calls.

    Attributes:
        positional: ``(call name, number of positional arguments) -> one role per
            argument``, or ``None`` (all ``other``). The call name is the function's name
            or the attribute called (``wc.add_joint(...)`` is ``add_joint``).
        keywords: the role of a keyword argument by keyword.
        sticky: roles that reach into the argument's sub-expressions.
    """

    positional: Callable[[str, int], Sequence[str] | None] = _no_roles
    keywords: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sticky: frozenset[str] = frozenset()


NO_ROLES = ArgumentRoles()


@dataclasses.dataclass(eq=False, slots=True)
class Number:
    """A numeric literal: ``holder.field[index]`` (``index`` None for a plain field) is
    ``node``. ``func`` is the module-level function it lies in (None at module level),
    ``stmt`` the first line of its innermost statement, ``rhs`` whether it is the right
    operand of a binary operator, ``top`` the index of its module-level statement. With a
    source: ``start``/``end`` (its span, with the unary minus), ``decimals`` (digits after
    the point as written) and ``op_at``/``op``: the offset and symbol of a binary ``+`` or
    ``-`` right before it (``-1``/``""`` if none)."""

    node: ast.expr
    holder: ast.AST
    field: str
    index: int | None
    value: int | float
    role: str
    name: str
    func: str | None
    stmt: int
    rhs: bool
    top: int
    rank: int = -1
    start: int = -1
    end: int = -1
    decimals: int = 0
    op_at: int = -1
    op: str = ""

    @property
    def is_int(self) -> bool:
        return type(self.value) is int


@dataclasses.dataclass(eq=False, slots=True)
class Operator:
    """A binary or augmented-assignment operator (``index`` None) or operator ``index`` of
    a comparison, in ``node``; ``at`` is the text offset of a binary operator's symbol
    when both operands share a line and the walk had a source (else ``-1``)."""

    node: ast.AST
    index: int | None
    func: str | None
    top: int
    source: Source | None = None
    rank: int = -1
    _at: int | None = None

    @property
    def at(self) -> int:
        if self._at is None:
            self._at = -1
            node, src = self.node, self.source
            if src is not None and type(node) is ast.BinOp:
                left, right = node.left, node.right
                symbol = SYMBOLS.get(type(node.op))
                if symbol is not None and left.end_lineno == right.lineno:
                    a = src.pos(left.end_lineno, left.end_col_offset)  # type: ignore[arg-type]
                    b = src.pos(right.lineno, right.col_offset)
                    self._at = src.text.find(symbol, a, b)
        return self._at


@dataclasses.dataclass(eq=False, slots=True)
class Block:
    """The statement list ``owner.field`` (``body`` is that list itself); ``in_def``:
    inside a function (or the function's own body)."""

    owner: ast.AST
    field: str
    body: list[ast.stmt]
    func: str | None
    in_def: bool
    top: int
    rank: int = -1


@dataclasses.dataclass(eq=False, slots=True)
class Call:
    """A call of ``name`` (the function or attribute called; ``""`` otherwise); ``args``
    are the spans of its positional arguments (empty without a source); ``pre`` its
    position in source order among every node."""

    node: ast.Call
    name: str
    func: str | None
    top: int
    pre: int
    source: Source | None = None
    _args: list[tuple[int, int]] | None = None

    @property
    def args(self) -> list[tuple[int, int]]:
        if self._args is None:
            src = self.source
            self._args = [] if src is None else [src.span(a) for a in self.node.args]
        return self._args


@dataclasses.dataclass(eq=False, slots=True)
class Statement:
    """A statement, at any depth; ``pre`` as for :class:`Call`."""

    node: ast.stmt
    func: str | None
    top: int
    pre: int


@dataclasses.dataclass(eq=False, slots=True)
class RangeLoop:
    """A ``for`` loop or comprehension ``node`` iterating over ``call``, a ``range(...)``."""

    node: ast.AST
    call: ast.Call
    top: int
    rank: int = -1


# node types with nothing inside (contexts and operators)
_LEAVES = frozenset(
    c
    for base in (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
    for c in base.__subclasses__()
)
_STMT, _DEF, _BLOCKS, _LOOP, _ARG = 1, 2, 4, 8, 16


def _flags(t: type) -> int:
    """What the walk does on entering a node of type ``t`` besides walking its parts."""
    return (
        (_STMT if issubclass(t, ast.stmt) else 0)
        | (_DEF if t in (ast.FunctionDef, ast.AsyncFunctionDef) else 0)
        | (_BLOCKS if issubclass(t, (ast.stmt, ast.excepthandler, ast.match_case)) else 0)
        | (_LOOP if t in (ast.For, ast.AsyncFor, ast.comprehension) else 0)
        | (_ARG if t is ast.arg else 0)
    )


_FLAGS: dict[type, int] = {}


class Sites:
    """Every edit site of some module-level statements, each kind in source order (a node
    before its parts, parts left to right):

    * ``numbers``: numeric literals (:class:`Number`): where they sit in the tree, their
      value and role, and, when the walk has the program's :class:`Source`, their text
      span and the ``+``/``-`` operator right before them;
    * ``operators``: binary, augmented-assignment and comparison operators
      (:class:`Operator`, listed when the walk leaves their node, so an operand's
      operators come first);
    * ``blocks``: statement lists (bodies, ``else`` branches, ...) and whether they lie
      inside a function (:class:`Block`);
    * ``calls`` (:class:`Call`), ``statements`` (:class:`Statement`), and ``loops``: the
      ``for`` loops and comprehensions that iterate over ``range(...)``
      (:class:`RangeLoop`);
    * ``functions`` (module-level defs by name) and ``names`` (every name the program's
      expressions use or assign, its parameters and its functions).

    A literal's role says what it is: ``const`` (the only literal of a module-level
    ``NAME = ...`` and at its start; ``name`` is then ``NAME``), ``range`` (in an argument
    of ``range()``), ``index`` (in a subscript), a role the domain's
    :class:`ArgumentRoles` gives arguments of its API calls, or ``other``. ``range``,
    ``index`` and a domain's sticky roles reach into sub-expressions (in ``range(N + 1)``
    the 1 is a ``range`` literal), ``const`` only into arithmetic, no role into the
    arguments of another call.

    Every node the walk enters gets a rank when the walk leaves it (postorder): a site
    carries the rank of the node holding it (``rank``), so a user can order sites by
    nesting instead of by source position.
    """

    def __init__(
        self,
        statements: Iterable[tuple[int, ast.stmt]],
        source: Source | None = None,
        roles: ArgumentRoles = NO_ROLES,
    ) -> None:
        """Walk ``statements``, given as ``(index in the module body, statement)``;
        ``source`` (the program's text) adds text spans, and keeps only literals written
        in plain decimals (``12``, ``0.5``, ``-3.``): those can be rewritten in their
        style."""
        self.source = source
        self.numbers: list[Number] = []
        self.operators: list[Operator] = []
        self.blocks: list[Block] = []
        self.calls: list[Call] = []
        self.statements: list[Statement] = []
        self.loops: list[RangeLoop] = []
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.names: set[str] = set()
        self._roles = roles
        self._sticky = frozenset({RANGE, INDEX}) | roles.sticky
        self._arith = self._sticky | {CONST}
        self._pre = 0
        self._post = 0
        for top, stmt in statements:
            self._top = top
            self._func: str | None = None
            self._in_def = False
            self._stmt = stmt.lineno
            self._walk(stmt, OTHER)

    @classmethod
    def of_module(
        cls, tree: ast.Module, source: Source | None = None, roles: ArgumentRoles = NO_ROLES
    ) -> Sites:
        """The sites of every statement of ``tree``."""
        return cls(enumerate(tree.body), source, roles)

    # the walk ------------------------------------------------------------------------

    def _child(
        self,
        node: ast.AST,
        holder: ast.AST,
        field: str,
        index: int | None,
        role: str,
        rhs: bool,
        mine: list,
    ) -> None:
        t = type(node)
        if t is ast.Constant:
            v = node.value  # type: ignore[attr-defined]
            if type(v) is int or type(v) is float:
                self._number(node, v, holder, field, index, role, rhs, mine)
            return
        if (
            t is ast.UnaryOp
            and type(node.op) is ast.USub  # type: ignore[attr-defined]
            and type(node.operand) is ast.Constant  # type: ignore[attr-defined]
            and type(node.operand.value) in (int, float)  # type: ignore[attr-defined]
        ):
            value = -node.operand.value  # type: ignore[attr-defined]
            self._number(node, value, holder, field, index, role, rhs, mine)
            return
        if t is ast.Name:
            self.names.add(node.id)  # type: ignore[attr-defined]
        elif t not in _LEAVES:
            self._walk(node, role)

    def _number(self, node, value, holder, field, index, role, rhs, mine) -> None:
        n = Number(
            node, holder, field, index, value, role, "", self._func, self._stmt, rhs, self._top
        )
        src = self.source
        if src is not None:
            start, end = src.span(node)
            text = src.text
            raw = text[start:end].lstrip("-").strip()
            if not raw.replace(".", "", 1).isdigit():  # hex, exponents, underscores: leave
                return
            n.start, n.end = start, end
            n.decimals = len(raw.split(".", 1)[1]) if "." in raw else 0
            j = start - 1
            while j > 0 and text[j] == " ":
                j -= 1
            if text[j] in "+-" and not text[start:end].startswith("-"):
                k = j - 1
                while k > 0 and text[k] == " ":
                    k -= 1
                if text[k].isalnum() or text[k] in "_)].":
                    n.op_at, n.op = j, text[j]
        self.numbers.append(n)
        mine.append(n)

    def _walk(self, node: ast.AST, role: str) -> None:
        """Enter ``node`` (not a literal, name or leaf), then its parts."""
        t = type(node)
        pre = self._pre
        self._pre += 1
        mine: list = []  # the sites this node holds: they get its rank
        flags = _FLAGS.get(t)
        if flags is None:
            flags = _FLAGS[t] = _flags(t)
        if flags:
            saved = self._func, self._in_def, self._stmt
            if flags & _STMT:
                self._stmt = node.lineno  # type: ignore[attr-defined]
                self.statements.append(Statement(node, self._func, self._top, pre))  # type: ignore[arg-type]
            if flags & _DEF:
                self.names.add(node.name)  # type: ignore[attr-defined]
                if self._func is None:
                    self.functions[node.name] = node  # type: ignore[assignment,attr-defined]
                    self._func = node.name  # type: ignore[attr-defined]
                self._in_def = True
            if flags & _BLOCKS:
                for name in node._fields:
                    value = getattr(node, name, None)
                    if type(value) is list and value and isinstance(value[0], ast.stmt):
                        b = Block(node, name, value, self._func, self._in_def, self._top)
                        self.blocks.append(b)
                        mine.append(b)
            if flags & _LOOP:
                it = node.iter  # type: ignore[attr-defined]
                if type(it) is ast.Call and type(it.func) is ast.Name and it.func.id == "range":
                    loop = RangeLoop(node, it, self._top)
                    self.loops.append(loop)
                    mine.append(loop)
            if flags & _ARG:
                self.names.add(node.arg)  # type: ignore[attr-defined]
        # the parts, each with its role
        if t is ast.BinOp:
            r = role if role in self._arith else OTHER
            self._child(node.left, node, "left", None, r, False, mine)  # type: ignore[attr-defined]
            self._child(node.right, node, "right", None, r, True, mine)  # type: ignore[attr-defined]
            self._operator(node, None, mine)
        elif t is ast.Call:
            self._call(node, pre, mine)  # type: ignore[arg-type]
        elif t is ast.Subscript:
            self._child(node.value, node, "value", None, role, False, mine)  # type: ignore[attr-defined]
            self._child(node.slice, node, "slice", None, INDEX, False, mine)  # type: ignore[attr-defined]
        elif t is ast.keyword:
            self._child(node.value, node, "value", None, role, False, mine)  # type: ignore[attr-defined]
        elif (
            t is ast.Assign
            and self._func is None
            and len(node.targets) == 1  # type: ignore[attr-defined]
            and type(node.targets[0]) is ast.Name  # type: ignore[attr-defined]
        ):
            self._constant(node, mine)  # type: ignore[arg-type]
        else:
            r = role if role in self._sticky else OTHER
            for name in node._fields:
                value = getattr(node, name, None)
                if type(value) is list:
                    for i, v in enumerate(value):
                        if isinstance(v, ast.AST):
                            self._child(v, node, name, i, r, False, mine)
                elif isinstance(value, ast.AST):
                    self._child(value, node, name, None, r, False, mine)
            if t is ast.AugAssign:
                self._operator(node, None, mine)
            elif t is ast.Compare:
                for i in range(len(node.ops)):  # type: ignore[attr-defined]
                    self._operator(node, i, mine)
        if flags:
            self._func, self._in_def, self._stmt = saved
        rank = self._post
        self._post += 1
        for site in mine:
            site.rank = rank

    def _operator(self, node: ast.AST, index: int | None, mine: list) -> None:
        op = Operator(node, index, self._func, self._top, self.source)
        self.operators.append(op)
        mine.append(op)

    def _call(self, node: ast.Call, pre: int, mine: list) -> None:
        f = node.func
        tf = type(f)
        name = f.attr if tf is ast.Attribute else f.id if tf is ast.Name else ""  # type: ignore[attr-defined]
        args = node.args
        self.calls.append(Call(node, name, self._func, self._top, pre, self.source))
        self._child(f, node, "func", None, OTHER, False, mine)
        roles: Sequence[str] | None
        if name == "range" and tf is ast.Name:
            roles = (RANGE,) * len(args)
        else:
            roles = self._roles.positional(name, len(args))
        if roles is None:
            roles = (OTHER,) * len(args)
        for i, (a, r) in enumerate(zip(args, roles, strict=True)):
            self._child(a, node, "args", i, r, False, mine)
        keywords = self._roles.keywords
        for i, kw in enumerate(node.keywords):
            self._child(kw, node, "keywords", i, keywords.get(kw.arg or "", OTHER), False, mine)

    def _constant(self, node: ast.Assign, mine: list) -> None:
        """A module-level ``NAME = value``: its literal is a named constant if it is the
        only one in ``value`` and stands at its start."""
        target, value = node.targets[0], node.value
        self._child(target, node, "targets", 0, OTHER, False, mine)
        before = len(self.numbers)
        self._child(value, node, "value", None, CONST, False, mine)
        new = self.numbers[before:]
        if len(new) == 1 and (new[0].node.lineno, new[0].node.col_offset) == (
            value.lineno,
            value.col_offset,
        ):
            new[0].name = target.id  # type: ignore[attr-defined]
        else:
            for n in new:
                if n.role == CONST:
                    n.role = OTHER
