"""Split a PostgreSQL script into statements, exactly where psql would.

Only statement boundaries are found, not a parse tree: semicolons count unless they sit inside a
string ('…', E'…', $tag$…$tag$), a quoted identifier, a comment (nested /* */ too), parentheses
(multi-action rules), or the BEGIN … END body of a SQL-standard ``CREATE FUNCTION … BEGIN ATOMIC``,
which psql tracks with the same heuristic.

    >>> [s.text for s in split_statements("SELECT 1; DO $$ BEGIN PERFORM 2; END $$")]
    ['SELECT 1', 'DO $$ BEGIN PERFORM 2; END $$']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from premigrate.engine.errors import ScriptSyntaxError

_TOKEN = re.compile(
    r"""
      (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<escape_string>(?<![\w$])[eE]')
    | (?P<string>')
    | (?P<quoted_identifier>")
    | (?P<dollar_quote>(?<![\w$])\$(?:[^\W\d]\w*)?\$)
    | (?P<word>[^\W\d][\w$]*)
    | (?P<open_paren>\()
    | (?P<close_paren>\))
    | (?P<semicolon>;)
    | (?P<backslash>\\)
    """,
    re.VERBOSE,
)
_STRING_END = re.compile(r"[^']*(?:''[^']*)*'")
_ESCAPE_STRING_END = re.compile(r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*'", re.DOTALL)
_QUOTED_IDENTIFIER_END = re.compile(r'[^"]*(?:""[^"]*)*"')
_COMMENT_EDGE = re.compile(r"/\*|\*/")

# Leading words kept per statement: enough to classify "ALTER TABLE ONLY s.t DETACH PARTITION s.p CONCURRENTLY".
_KEPT_WORDS = 12


@dataclass(frozen=True)
class Statement:
    """One statement: its text without the closing semicolon, and where it starts in the script."""

    text: str
    offset: int
    words: tuple[str, ...] = field(repr=False)

    @property
    def runs_in_transaction_block(self) -> bool:
        """False for the statements PostgreSQL refuses inside BEGIN … COMMIT (error 25001)."""
        return not _cannot_run_in_transaction(self.words)

    @property
    def controls_transaction(self) -> bool:
        """True for BEGIN, COMMIT, ROLLBACK and their synonyms (not savepoints)."""
        w = self.words
        if not w:
            return False
        if w[0] in {"BEGIN", "COMMIT", "END", "ABORT"}:
            return True
        if w[0] == "START" and w[1:2] == ("TRANSACTION",):
            return True
        return w[0] == "ROLLBACK" and w[1:2] != ("TO",)

    @property
    def opens_transaction(self) -> bool:
        return self.words[:1] == ("BEGIN",) or self.words[:2] == ("START", "TRANSACTION")


def _cannot_run_in_transaction(w: tuple[str, ...]) -> bool:
    head = w[:2]
    if w[:1] == ("VACUUM",) or head == ("ALTER", "SYSTEM"):
        return True
    if head in {
        ("CREATE", "DATABASE"),
        ("DROP", "DATABASE"),
        ("CREATE", "TABLESPACE"),
        ("DROP", "TABLESPACE"),
        ("CREATE", "SUBSCRIPTION"),
        ("DROP", "SUBSCRIPTION"),
    }:
        return True
    if w[:1] == ("CREATE",) and "INDEX" in w[1:3] and "CONCURRENTLY" in w[2:4]:
        return True
    if w[:3] == ("DROP", "INDEX", "CONCURRENTLY"):
        return True
    if w[:1] == ("REINDEX",):
        return "CONCURRENTLY" in w or any(kind in w for kind in ("SCHEMA", "DATABASE", "SYSTEM"))
    return head == ("ALTER", "TABLE") and "DETACH" in w and "CONCURRENTLY" in w


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


@dataclass
class _Scan:
    text: str
    statements: list[Statement] = field(default_factory=list)
    start: int | None = None
    words: list[str] = field(default_factory=list)
    routine_words: list[str] = field(default_factory=list)
    paren_depth: int = 0
    begin_depth: int = 0

    def note_token(self, position: int) -> None:
        if self.start is None:
            self.start = position

    def note_word(self, word: str) -> None:
        upper = word.upper()
        if len(self.words) < _KEPT_WORDS:
            self.words.append(upper)
        # psql's heuristic: inside CREATE [OR REPLACE] {FUNCTION|PROCEDURE}, BEGIN (ATOMIC) … END
        # (and a CASE … END within it) hides semicolons.
        if len(self.routine_words) < 4:
            self.routine_words.append(upper)
        if not self._in_routine_definition() or self.paren_depth:
            return
        if upper == "BEGIN" or (upper == "CASE" and self.begin_depth):
            self.begin_depth += 1
        elif upper == "END" and self.begin_depth:
            self.begin_depth -= 1

    def _in_routine_definition(self) -> bool:
        w = self.routine_words
        if w[:1] != ["CREATE"]:
            return False
        if w[1:2] in (["FUNCTION"], ["PROCEDURE"]):
            return True
        return w[1:3] == ["OR", "REPLACE"] and w[3:4] in (["FUNCTION"], ["PROCEDURE"])

    def end_statement(self, end: int) -> None:
        if self.start is not None:
            self.statements.append(Statement(self.text[self.start : end].rstrip(), self.start, tuple(self.words)))
        self.start = None
        self.words = []
        self.routine_words = []
        self.paren_depth = 0
        self.begin_depth = 0


def split_statements(text: str) -> list[Statement]:
    """Statements of a script in order; comments between them and empty statements are dropped.

    Raises ScriptSyntaxError (with the offset) for an unterminated string, identifier or comment,
    and for a psql meta-command, which only psql understands.
    """
    scan = _Scan(text)
    position = 0
    while (match := _TOKEN.search(text, position)) is not None:
        kind, token_start, position = match.lastgroup, match.start(), match.end()
        if kind == "line_comment":
            continue
        if kind == "block_comment":
            position = _skip_block_comment(text, token_start)
            continue
        if kind == "backslash":
            raise ScriptSyntaxError(
                "a psql meta-command (a backslash command such as \\i or \\set) cannot run here: "
                "premigrate sends plain SQL to the server; replace it with SQL",
                token_start,
            )
        if kind == "semicolon":
            if scan.paren_depth == 0 and scan.begin_depth == 0:
                scan.end_statement(token_start)
            continue
        scan.note_token(token_start)
        if kind == "word":
            scan.note_word(match.group())
        elif kind == "open_paren":
            scan.paren_depth += 1
        elif kind == "close_paren":
            scan.paren_depth = max(0, scan.paren_depth - 1)
        elif kind == "dollar_quote":
            position = _skip_past(text, match.group(), position, token_start, "dollar-quoted string")
        else:
            position = _skip_quoted(kind, text, position, token_start)
    scan.end_statement(len(text))
    return scan.statements


def _skip_quoted(kind: str | None, text: str, position: int, token_start: int) -> int:
    if kind == "string":
        closing, what = _STRING_END, "string literal"
    elif kind == "escape_string":
        closing, what = _ESCAPE_STRING_END, "E'' string literal"
    else:
        closing, what = _QUOTED_IDENTIFIER_END, "quoted identifier"
    end = closing.match(text, position)
    if end is None:
        raise ScriptSyntaxError(f"unterminated {what}", token_start)
    return end.end()


def _skip_past(text: str, closing: str, position: int, token_start: int, what: str) -> int:
    end = text.find(closing, position)
    if end < 0:
        raise ScriptSyntaxError(f"unterminated {what} (no closing {closing})", token_start)
    return end + len(closing)


def _skip_block_comment(text: str, token_start: int) -> int:
    depth = 0
    for edge in _COMMENT_EDGE.finditer(text, token_start):
        depth += 1 if edge.group() == "/*" else -1
        if depth == 0:
            return edge.end()
    raise ScriptSyntaxError("unterminated /* comment", token_start)
