"""Split a PostgreSQL script into statements, exactly where psql would.

Only statement boundaries are found, not a parse tree: semicolons count unless they sit inside a
string ('…', E'…', $tag$…$tag$), a quoted identifier, a comment (nested /* */ too), parentheses
(multi-action rules), or the BEGIN … END body of a SQL-standard ``CREATE FUNCTION … BEGIN ATOMIC``,
which psql tracks with the same heuristic. After ``SET standard_conforming_strings = off`` plain '…'
strings take backslash escapes, as psql reads them. What only psql can do (meta-commands, variables,
COPY data in the file) is refused with the offset where it starts.

    >>> [s.text for s in split_statements("SELECT 1; DO $$ BEGIN PERFORM 2; END $$")]
    ['SELECT 1', 'DO $$ BEGIN PERFORM 2; END $$']
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from premigrate.engine.errors import ScriptSyntaxError
from premigrate.engine.statement_kinds import Statement, client_copy_problem

# psql's lexer works on bytes and takes every byte from 0x80 up as a letter, so in a str every character
# from U+0080 up is one: identifiers, dollar-quote tags and variable names may hold any of them. The
# classes are spelled as ASCII class | [^\x00-\x7f]: one class spanning both compiles ~100x slower (5 ms
# each), which every start of the command line would pay.
_NON_ASCII = r"[^\x00-\x7f]"
_LETTER = rf"(?:[A-Za-z_]|{_NON_ASCII})"
_IDENTIFIER_CHAR = rf"(?:[A-Za-z_0-9$]|{_NON_ASCII})"
_TAG_CHAR = rf"(?:[A-Za-z_0-9]|{_NON_ASCII})"
_NOT_AFTER_IDENTIFIER = r"(?<![A-Za-z_0-9$])(?<![^\x00-\x7f])"
_SPACE = r" \t\n\r\f\v"
_OTHER_ASCII = r"\x00-\x08\x0e-\x1f0-9!#%&*+,.<=>?@\[\]^`{|}~\x7f"
"""ASCII that is neither white space nor the start of a token (a letter, a quote, $ ( ) ; \\ : / -)."""
_TOKEN = re.compile(
    rf"""
      (?P<line_comment>--[^\n\r]*)
    | (?P<block_comment>/\*)
    | (?P<standard_string>{_NOT_AFTER_IDENTIFIER}(?:[bBxX]|[uU]&)')
    | (?P<escape_string>{_NOT_AFTER_IDENTIFIER}[eE]')
    | (?P<string>')
    | (?P<quoted_identifier>")
    | (?P<dollar_quote>\$(?:{_LETTER}{_TAG_CHAR}*)?\$)
    | (?P<word>{_LETTER}{_IDENTIFIER_CHAR}*)
    | (?P<variable>:(?:'{_TAG_CHAR}+'|"{_TAG_CHAR}+"|\{{\?{_TAG_CHAR}+\}}|{_TAG_CHAR}+))
    | (?P<open_paren>\()
    | (?P<close_paren>\))
    | (?P<semicolon>;)
    | (?P<backslash>\\)
    | (?P<other>::|[{_OTHER_ASCII}][{_OTHER_ASCII}{_SPACE}]*|[^{_SPACE}])
    """,
    re.VERBOSE,
)
_STRING_END = re.compile(r"[^']*(?:''[^']*)*'")
_ESCAPE_STRING_END = re.compile(r"[^'\\]*(?:(?:\\.|'')[^'\\]*)*'", re.DOTALL)
_QUOTED_IDENTIFIER_END = re.compile(r'[^"]*(?:""[^"]*)*"')
_COMMENT_EDGE = re.compile(r"/\*|\*/")
_BLANK = re.compile(rf"(?:[{_SPACE};]+|--[^\n\r]*)*")
_UNLOCK_ALL = re.compile(r"(?<![\w$])pg_advisory_unlock_all\s*\(", re.IGNORECASE)
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)

# Leading words kept per statement: enough to classify "ALTER TABLE ONLY s.t DETACH PARTITION s.p CONCURRENTLY".
_KEPT_WORDS = 12

_PSQL_VARIABLE_NAMES = """AUTOCOMMIT COMP_KEYWORD_CASE DBNAME ECHO ECHO_HIDDEN ENCODING ERROR FETCH_COUNT HIDE_TABLEAM
    HIDE_TOAST_COMPRESSION HISTCONTROL HISTFILE HISTSIZE HOST IGNOREEOF LASTOID LAST_ERROR_MESSAGE LAST_ERROR_SQLSTATE
    ON_ERROR_ROLLBACK ON_ERROR_STOP PORT PROMPT1 PROMPT2 PROMPT3 QUIET ROW_COUNT SERVER_VERSION_NAME SERVER_VERSION_NUM
    SHELL_ERROR SHELL_EXIT_CODE SHOW_ALL_RESULTS SHOW_CONTEXT SINGLELINE SINGLESTEP SQLSTATE USER VERBOSITY VERSION
    VERSION_NAME VERSION_NUM"""
PSQL_PREDEFINED_VARIABLES = frozenset(_PSQL_VARIABLE_NAMES.split())
"""The variables psql sets by itself: ``:NAME`` outside strings and comments is replaced by its value."""


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset; a line ends at \\n, \\r\\n or a lone \\r."""
    line = text.count("\n", 0, offset) + text.count("\r", 0, offset) - text.count("\r\n", 0, offset) + 1
    column = offset - max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset))
    return line, column


def first_content(text: str) -> int | None:
    """Offset of the first character that is not whitespace, a comment or a semicolon; None if there is none."""
    position = 0
    while (blank := _BLANK.match(text, position)) and text.startswith("/*", blank.end()):
        position = _skip_block_comment(text, blank.end())
    end = blank.end() if blank else position
    return end if end < len(text) else None


def split_statements(text: str) -> list[Statement]:
    """Statements of a script in order; comments between them and empty statements are dropped.

    Raises ScriptSyntaxError (with the offset) for an unterminated string, identifier or comment, a NUL
    byte, and what only psql understands: a meta-command, a psql variable, COPY to or from the client.
    """
    nul = text.find("\0")
    if nul >= 0:
        raise ScriptSyntaxError(
            "a NUL byte (\\0): PostgreSQL cannot take it in SQL text; remove it (a file full of them was "
            "probably saved as UTF-16: save it as UTF-8)",
            nul,
        )
    scan = _Scan(text)
    position = 0
    while (match := _TOKEN.search(text, position)) is not None:
        position = scan.take(match)
    scan.end_statement(len(text))
    return scan.statements


@dataclass
class _Scan:
    text: str
    statements: list[Statement] = field(default_factory=list)
    start: int | None = None
    words: list[str] = field(default_factory=list)
    top_words: list[str] = field(default_factory=list)
    routine_words: list[str] = field(default_factory=list)
    calls_unlock_all: bool = False
    paren_depth: int = 0
    begin_depth: int = 0
    standard_strings: bool = True
    standard_strings_change: tuple[int, bool] | None = None
    """(offset from which it applies, new value) after a SET standard_conforming_strings."""

    def take(self, match: re.Match[str]) -> int:
        """Account for one token; returns where scanning goes on."""
        kind, start, end = match.lastgroup, match.start(), match.end()
        if kind == "line_comment":
            return end
        if kind == "block_comment":
            return _skip_block_comment(self.text, start)
        if kind == "backslash":
            raise ScriptSyntaxError(
                "a psql meta-command (a backslash command such as \\i or \\set) cannot run here: "
                "premigrate sends plain SQL to the server; replace it with SQL",
                start,
            )
        if kind == "semicolon":
            if self.paren_depth == 0 and self.begin_depth == 0:
                self.end_statement(start)
            return end
        if self.start is None:
            self.start = start
        if kind == "word":
            self.note_word(match.group())
        elif kind == "variable":
            _refuse_psql_variable(match.group(), start)
        elif kind == "open_paren":
            self.paren_depth += 1
        elif kind == "close_paren":
            self.paren_depth = max(0, self.paren_depth - 1)
        elif kind != "other":
            return self.skip_quoted(kind, match.group(), start, end)
        return end

    def note_word(self, word: str, *, quoted: bool = False) -> None:
        # pg_strcasecmp folds ASCII only: a word with a dotless i is not BEGIN to psql, whatever str.upper says.
        upper = word if quoted else word.upper() if word.isascii() else word.translate(_ASCII_UPPER)
        if len(self.words) < _KEPT_WORDS:
            self.words.append(upper)
        if self.paren_depth == 0 and len(self.top_words) < _KEPT_WORDS:
            self.top_words.append(upper)
        if quoted:
            return
        self.calls_unlock_all |= upper == "PG_ADVISORY_UNLOCK_ALL"
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

    def skip_quoted(self, kind: str | None, token: str, start: int, end: int) -> int:
        if kind == "dollar_quote":
            after = _skip_past(self.text, token, end, start, "dollar-quoted string")
        elif kind == "quoted_identifier":
            after = _skip_to(_QUOTED_IDENTIFIER_END, self.text, end, start, "quoted identifier")
            self.note_word(self.text[start:after], quoted=True)
            return after
        elif kind == "escape_string":
            after = _skip_to(_ESCAPE_STRING_END, self.text, end, start, "E'' string literal")
        elif kind == "string" and not self.standard_strings_at(start):
            what = "string literal (standard_conforming_strings is off here, so a backslash escapes the next character)"
            after = _skip_to(_ESCAPE_STRING_END, self.text, end, start, what)
        else:
            what = "string literal"
            if self.standard_strings_change is not None:
                what += " (a SET standard_conforming_strings counts from the next line on, as in psql)"
            after = _skip_to(_STRING_END, self.text, end, start, what)
        if self.words and self.words[0] == "DO" and _UNLOCK_ALL.search(self.text, end, after):
            self.calls_unlock_all = True
        return after

    def standard_strings_at(self, position: int) -> bool:
        change = self.standard_strings_change
        if change is not None and position >= change[0]:
            self.standard_strings, self.standard_strings_change = change[1], None
        return self.standard_strings

    def end_statement(self, end: int) -> None:
        if self.start is not None:
            statement = Statement(
                self.text[self.start : end].rstrip(),
                self.start,
                tuple(self.words),
                tuple(self.top_words),
                self.calls_unlock_all,
            )
            if (problem := client_copy_problem(statement.top_words)) is not None:
                raise ScriptSyntaxError(problem, self.start)
            self.statements.append(statement)
            if (setting := statement.standard_strings_after) is not None:
                # psql asks the server for the setting when it starts reading a line, so the new value
                # counts from the next line on, not for the rest of this one.
                self.standard_strings_at(end)
                line_end = self.text.find("\n", end)
                self.standard_strings_change = (len(self.text) if line_end < 0 else line_end + 1, setting)
        self.start = None
        self.words, self.top_words, self.routine_words = [], [], []
        self.calls_unlock_all = False
        self.paren_depth = 0
        self.begin_depth = 0


def _refuse_psql_variable(token: str, start: int) -> None:
    """psql replaces :'name', :"name" and :{?name} whatever the name, :name only when the variable is set."""
    if token[1:2] in {"'", '"', "{"} or token[1:] in PSQL_PREDEFINED_VARIABLES:
        raise ScriptSyntaxError(
            f"psql would substitute its variable here; premigrate sends plain SQL to the server, without psql "
            f"variables: write the value of {token} itself",
            start,
        )


def _skip_to(closing: re.Pattern[str], text: str, position: int, token_start: int, what: str) -> int:
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
