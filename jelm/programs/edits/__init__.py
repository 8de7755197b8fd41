"""The AST edit engine for program text (ELM, arXiv 2206.08896v1, §3.1).

One walk finds a program's edit sites (:mod:`.sites`); edits go either to the tree, which
is then unparsed (:mod:`.tree`: GP mutation), or to the text spans the AST gives, so
comments and formatting survive (:mod:`.text`: the diff model's synthetic corpus). No
domain is known here: a domain names the roles of its API's arguments
(:class:`ArgumentRoles`). Design notes: ``jelm/programs/edits/README.md``.
"""

from jelm.programs.edits.literals import format_float, is_number, number_node, number_value
from jelm.programs.edits.sites import (
    CONST,
    INDEX,
    NO_ROLES,
    OTHER,
    RANGE,
    SYMBOLS,
    ArgumentRoles,
    Block,
    Call,
    Number,
    Operator,
    RangeLoop,
    Sites,
    Statement,
)
from jelm.programs.edits.text import (
    Edit,
    LiteralSpan,
    Source,
    literal_text,
    number_edits,
    splice,
)
from jelm.programs.edits.tree import (
    ParsedProgram,
    Transaction,
    is_docstring,
    scale_expr,
    shift_expr,
    slot,
    unparse_statement,
)

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
    "Edit",
    "LiteralSpan",
    "Number",
    "Operator",
    "ParsedProgram",
    "RangeLoop",
    "Sites",
    "Source",
    "Statement",
    "Transaction",
    "format_float",
    "is_docstring",
    "is_number",
    "literal_text",
    "number_edits",
    "number_node",
    "number_value",
    "scale_expr",
    "shift_expr",
    "slot",
    "splice",
    "unparse_statement",
]
