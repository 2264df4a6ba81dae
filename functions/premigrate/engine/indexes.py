"""INVALID indexes: what an interrupted or timed-out CREATE INDEX CONCURRENTLY leaves behind.

A rerun's ``IF NOT EXISTS`` silently accepts such a leftover, and a retry after lock_timeout only sees
"already exists": both must be told apart from a success, naming the index in its own schema.
"""

from __future__ import annotations

import re

from premigrate.engine.database import Database
from premigrate.engine.history import sql_literal
from premigrate.engine.statement_kinds import Statement

_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[^\W\d][\w$]*)'
_CREATE_INDEX = re.compile(
    rf"""CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?
         (?P<name>{_IDENTIFIER})\s+ON\s+(?:ONLY\s+)?(?P<table>{_IDENTIFIER}(?:\s*\.\s*{_IDENTIFIER})?)""",
    re.IGNORECASE | re.VERBOSE,
)


def all_invalid(db: Database) -> list[str]:
    """Schema-qualified names of every INVALID index in the database."""
    rows = db.run(
        """
        SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT i.indisvalid ORDER BY 1
        """
    )
    return [str(name) for (name,) in rows]


def advice(name: str) -> str:
    return (
        f"INVALID index {name} (left by a failed CREATE INDEX CONCURRENTLY): drop it with "
        f"DROP INDEX CONCURRENTLY {name}; then run `premigrate repair` and run again"
    )


def invalid_built_by(db: Database, statements: list[Statement]) -> list[str]:
    """The INVALID indexes that these statements' CREATE INDEX name, each looked up on its own table (so in
    that table's schema), never an index of the same name elsewhere."""
    wanted = [match for statement in statements if (match := _CREATE_INDEX.match(statement.text))]
    if not wanted:
        return []
    pairs = ", ".join(f"({sql_literal(_bare(m['name']))}, {sql_literal(m['table'])})" for m in wanted)
    rows = db.run(
        f"""
        SELECT format('%I.%I', n.nspname, c.relname)
        FROM (VALUES {pairs}) AS wanted (index_name, table_name)
        JOIN pg_index i ON i.indrelid = to_regclass(wanted.table_name)
        JOIN pg_class c ON c.oid = i.indexrelid AND c.relname = wanted.index_name
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT i.indisvalid ORDER BY 1
        """
    )
    return [str(name) for (name,) in rows]


def _bare(identifier: str) -> str:
    """An identifier as the catalog stores it: quoted ones as written, unquoted ones folded to lower case."""
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()
