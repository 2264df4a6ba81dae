"""What a statement is, from its first words: whether it may run in a transaction block, what it does to
the transaction, to standard_conforming_strings, and whether it needs psql to send or receive COPY data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

_STANDARD_STRINGS_VALUE = re.compile(
    r"standard_conforming_strings(?:\s*=|\s+TO(?=[\s'\"]))\s*(?P<value>'[^']*'|\"[^\"]*\"|[\w.+-]+)", re.IGNORECASE
)


@dataclass(frozen=True)
class Statement:
    """One statement: its text without the closing semicolon, and where it starts in the script."""

    text: str
    offset: int
    words: tuple[str, ...] = field(repr=False)
    """Its first words upper-cased (quoted identifiers as written), inside parentheses too."""
    top_words: tuple[str, ...] = field(default=(), repr=False)
    """Its first words outside parentheses: ``COPY (SELECT …) TO STDOUT`` is ``COPY TO STDOUT``."""
    calls_unlock_all: bool = field(default=False, repr=False)
    """It calls pg_advisory_unlock_all(), directly or in the body of a DO block."""

    @property
    def head(self) -> str:
        """Its first four words as written in the file, for messages."""
        return " ".join(self.text.split(maxsplit=4)[:4])

    @property
    def runs_in_transaction_block(self) -> bool:
        """False for the statements PostgreSQL refuses inside BEGIN … COMMIT (error 25001)."""
        return not _cannot_run_in_transaction(self.words, self.top_words)

    @property
    def controls_transaction(self) -> bool:
        """True for BEGIN, COMMIT, ROLLBACK, PREPARE TRANSACTION and their synonyms (not savepoints)."""
        return self.transaction_effect is not None

    @property
    def transaction_effect(self) -> str | None:
        """What it does to the transaction block: 'opens' (BEGIN), 'closes' (COMMIT, ROLLBACK, PREPARE
        TRANSACTION …), 'chains' (… AND CHAIN ends the open one and starts the next), or None."""
        w = self.words
        if w[:1] == ("BEGIN",) or w[:2] == ("START", "TRANSACTION"):
            return "opens"
        # PREPARE name AS … prepares a statement, not the transaction; ROLLBACK TO goes back to a savepoint.
        ends = w[:1] in {("COMMIT",), ("END",), ("ABORT",)} or w == ("PREPARE", "TRANSACTION")
        if ends or (w[:1] == ("ROLLBACK",) and w[1:2] != ("TO",)):
            return "chains" if w[-2:] == ("AND", "CHAIN") else "closes"
        return None

    @property
    def standard_strings_after(self) -> bool | None:
        """What this statement sets standard_conforming_strings to (SET, SET SESSION|LOCAL, RESET); None when it
        leaves it alone or the server would refuse the value."""
        w = self.top_words
        if w[:1] == ("RESET",):
            return True if w[1:2] in {("STANDARD_CONFORMING_STRINGS",), ("ALL",)} else None
        if w[:1] != ("SET",) or "STANDARD_CONFORMING_STRINGS" not in w[1:3]:
            return None
        setting = _STANDARD_STRINGS_VALUE.search(self.text)
        return None if setting is None else _boolean_setting(setting.group("value"))


def _boolean_setting(value: str) -> bool | None:
    """PostgreSQL's parse_bool: on/off, true/false, yes/no, 1/0 and unambiguous prefixes; DEFAULT is on."""
    quoted = value[:1] in {"'", '"'}
    lowered = (value[1:-1] if quoted else value).lower()
    if lowered == "default" and not quoted:
        return True
    if lowered in {"on", "1"} or (lowered and ("true".startswith(lowered) or "yes".startswith(lowered))):
        return True
    if lowered in {"of", "off", "0"} or (lowered and ("false".startswith(lowered) or "no".startswith(lowered))):
        return False
    return None


def _cannot_run_in_transaction(w: tuple[str, ...], top: tuple[str, ...]) -> bool:
    head = " ".join(w[:2])
    if w[:1] == ("VACUUM",) or head in _OUTSIDE_TRANSACTION_ONLY:
        return True
    if w[:1] == ("CREATE",) and "INDEX" in w[1:3] and "CONCURRENTLY" in w[2:4]:
        return True
    if w[:3] == ("DROP", "INDEX", "CONCURRENTLY"):
        return True
    if w[:1] == ("REINDEX",):
        return "CONCURRENTLY" in w or any(kind in w for kind in ("SCHEMA", "DATABASE", "SYSTEM"))
    if top[:1] == ("CLUSTER",):  # without a table (only options), CLUSTER goes through every table
        return all(word == "VERBOSE" for word in top[1:])
    return head == "ALTER TABLE" and "DETACH" in w and "CONCURRENTLY" in w


_OUTSIDE_TRANSACTION_ONLY = {
    f"{verb} {thing}" for verb in ("CREATE", "DROP") for thing in ("DATABASE", "TABLESPACE", "SUBSCRIPTION")
} | {"ALTER SYSTEM", "DISCARD ALL"}
_CLIENT_COPY_PROBLEMS = {
    ("FROM", "STDIN"): "COPY ... FROM STDIN needs psql to send the data; put the rows in INSERT statements or COPY "
    "FROM a server-side file",
    ("TO", "STDOUT"): "COPY ... TO STDOUT needs psql to receive the rows, and a migration has nowhere to put them; "
    "remove it, or COPY TO a server-side file",
}


def client_copy_problem(top: tuple[str, ...]) -> str | None:
    if top[:1] != ("COPY",):
        return None
    return next((_CLIENT_COPY_PROBLEMS[pair] for pair in pairwise(top) if pair in _CLIENT_COPY_PROBLEMS), None)
