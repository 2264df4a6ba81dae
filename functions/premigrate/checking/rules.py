"""The rules of ``premigrate check``: each one's name (what ``-- premigrate:allow <rule>: <reason>``
names), its level, the safe way to do what it flags, and the anchor it comes from (squawk, strong_migrations,
Atlas ``migrate lint``, PostgreSQL's documentation), so a reviewer can read the original argument.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_MAX_LOCKED_ROWS = 100_000
"""Above this many rows, work done under a lock that blocks reads or writes is an error. Measured on a
2-core machine with the table in memory (PostgreSQL 18), 100k narrow rows take 10 ms to validate, 50 ms
to index and 110 ms to rewrite; a production table with wide rows, several indexes and a cold cache takes
10 to 50 times as long: about the 5 s of lock_timeout, the longest premigrate lets traffic queue anyway."""


class Level(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Rule:
    name: str
    level: Level
    """Its level; a locking rule's is an error above --max-locked-rows and a warning below it."""
    summary: str
    advice: str
    anchors: str


_EXPAND = "or move it to an after-rollout migration (`-- premigrate:after-rollout`), once no running code uses it"
_RULES = [
    # Breaking for running code: errors in a before-rollout migration, nothing after the rollout.
    Rule(
        "drop-table",
        Level.ERROR,
        "a table running code uses is dropped",
        f"stop using it in the code first, {_EXPAND}",
        "squawk ban-drop-table; Atlas DS102",
    ),
    Rule(
        "drop-view",
        Level.ERROR,
        "a view running code uses is dropped",
        f"keep the view until the code no longer reads it, {_EXPAND}",
        "squawk ban-drop-view",
    ),
    Rule(
        "drop-column",
        Level.ERROR,
        "a column running code reads or writes is dropped",
        f"stop reading and writing it first (strong_migrations: ignored_columns), {_EXPAND}",
        "squawk ban-drop-column; strong_migrations removing a column; Atlas DS103",
    ),
    Rule(
        "drop-function",
        Level.ERROR,
        "a function running code calls is dropped",
        f"keep it until the code no longer calls it, {_EXPAND}",
        "squawk ban-drop-function",
    ),
    Rule(
        "drop-type",
        Level.ERROR,
        "a type running code uses is dropped",
        f"keep it until the code no longer uses it, {_EXPAND}",
        "squawk ban-drop-type",
    ),
    Rule(
        "rename-table",
        Level.ERROR,
        "a table running code uses is renamed",
        "create the new name (a view over the old table will do), move the code to it, then drop the old name in "
        "an after-rollout migration (`-- premigrate:after-rollout`)",
        "squawk renaming-table; strong_migrations renaming a table; Atlas BC101",
    ),
    Rule(
        "rename-view",
        Level.ERROR,
        "a view running code uses is renamed",
        "create the view under its new name too, move the code, then drop the old one in an after-rollout migration",
        "squawk renaming-table",
    ),
    Rule(
        "rename-column",
        Level.ERROR,
        "a column running code uses is renamed",
        "add the new column, write both, backfill, move reads, then drop the old column in an after-rollout migration",
        "squawk renaming-column; strong_migrations renaming a column; Atlas BC102",
    ),
    Rule(
        "rename-function",
        Level.ERROR,
        "a function running code calls is renamed",
        "create it under the new name too, move the code, then drop the old one in an after-rollout migration",
        "Atlas backward-incompatible changes",
    ),
    Rule(
        "rename-type",
        Level.ERROR,
        "a type running code uses is renamed",
        f"keep the old name until the code no longer uses it, {_EXPAND}",
        "Atlas backward-incompatible changes",
    ),
    Rule(
        "rename-enum-value",
        Level.ERROR,
        "an enum value running code writes is renamed",
        "add the new value, write it and backfill, then stop using the old one",
        "strong_migrations renaming an enum value",
    ),
    Rule(
        "rename-schema",
        Level.ERROR,
        "a schema running code uses is renamed",
        f"keep the old schema's name until the code no longer uses it, {_EXPAND}",
        "strong_migrations renaming a schema",
    ),
    Rule(
        "column-type-changed",
        Level.ERROR,
        "a column's type changes under running code",
        "add a column of the new type, write both, backfill, move reads, then drop the old one after the rollout",
        "squawk changing-column-type; strong_migrations changing the type of a column; Atlas PG301",
    ),
    Rule(
        "not-null-added",
        Level.ERROR,
        "NOT NULL on an existing column: running code may still write NULL",
        "ship code that always writes a value first; then, after the rollout, ADD CONSTRAINT ... CHECK (col IS NOT "
        "NULL) NOT VALID, VALIDATE CONSTRAINT, and SET NOT NULL (PostgreSQL 12+ skips the scan)",
        "squawk adding-not-nullable-field; strong_migrations setting NOT NULL; Atlas MF104",
    ),
    Rule(
        "required-column",
        Level.ERROR,
        "a NOT NULL column without a default: running code's INSERTs fail",
        "add it nullable or with a constant default (no rewrite since PostgreSQL 11)",
        "squawk adding-required-field; Atlas MF103",
    ),
    Rule(
        "constraint-added",
        Level.ERROR,
        "a constraint or unique index on an existing table: running code's writes may now fail",
        f"ship code that satisfies it first, {_EXPAND}",
        "Atlas MF101/MF102 (data-dependent); strong_migrations adding a check constraint",
    ),
    Rule(
        "drop-not-null",
        Level.WARNING,
        "NOT NULL dropped: running code may not expect NULL",
        "make sure the running code reads NULL safely before new code writes it",
        "squawk ban-drop-not-null",
    ),
    # Locks held while the statement does work that grows with the table.
    Rule(
        "table-rewrite",
        Level.ERROR,
        "the table is rewritten under ACCESS EXCLUSIVE: no reads nor writes meanwhile",
        "add a nullable column (a constant default needs no rewrite), backfill it in batches, then switch; for a "
        "type change, a new column and a trigger; VACUUM FULL: pg_repack",
        "squawk changing-column-type, adding-field-with-default; strong_migrations volatile default, "
        "auto-incrementing and stored generated columns; Atlas PG301/PG302; PostgreSQL ALTER TABLE notes",
    ),
    Rule(
        "blocking-index-build",
        Level.ERROR,
        "an index is built without CONCURRENTLY: writes (or all access) wait",
        "CREATE [UNIQUE] INDEX CONCURRENTLY in a file of its own; for a constraint, then ADD CONSTRAINT ... "
        "UNIQUE/PRIMARY KEY USING INDEX",
        "squawk require-concurrent-index-creation, disallowed-unique-constraint, "
        "adding-serial-primary-key-field; strong_migrations adding an index non-concurrently; Atlas PG101/PG104/PG105",
    ),
    Rule(
        "validating-scan",
        Level.ERROR,
        "every row is checked while a lock blocks writes (or all access)",
        "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in another migration (SHARE UPDATE EXCLUSIVE "
        "only); for NOT NULL, CHECK (col IS NOT NULL) NOT VALID, VALIDATE, then SET NOT NULL",
        "squawk constraint-missing-not-valid, adding-foreign-key-constraint, adding-not-nullable-field; "
        "strong_migrations adding a foreign key / check constraint, setting NOT NULL; Atlas PG303/PG305",
    ),
    Rule(
        "backfill-under-lock",
        Level.ERROR,
        "rows are read or changed while the transaction holds a lock that blocks reads or writes",
        "backfill in a no-transaction migration of its own, in batches, after the schema change has committed",
        "strong_migrations backfilling data",
    ),
    Rule(
        "catalog-lock",
        Level.INFO,
        "a brief lock for a catalog-only change",
        "nothing to do: premigrate's lock_timeout makes it give up rather than queue traffic behind it",
        "PostgreSQL Explicit Locking (table-level lock modes); squawk Applying migrations safely (lock_timeout)",
    ),
    # What the empty scratch database cannot show.
    Rule(
        "backfill",
        Level.WARNING,
        "rows of a large table are changed in one transaction: they stay locked until it commits",
        "backfill in batches in a no-transaction migration",
        "strong_migrations backfilling data",
    ),
    Rule(
        "may-fail-on-data",
        Level.WARNING,
        "it checks existing rows, which the empty scratch table does not have",
        "check the data first (or add it NOT VALID and VALIDATE later)",
        "Atlas data-dependent changes MF101-MF104",
    ),
    Rule(
        "lock-timeout-overridden",
        Level.WARNING,
        "the file changes lock_timeout, so DDL may queue traffic behind it",
        "leave lock_timeout to premigrate (--lock-timeout)",
        "squawk require-lock-timeout; squawk Applying migrations safely",
    ),
    Rule(
        "unknown-allow",
        Level.WARNING,
        "an allow directive names no rule",
        "use a rule name from docs/safe-rollouts.md",
        "premigrate",
    ),
]
RULES = {rule.name: rule for rule in _RULES}
BREAKING = frozenset(
    {"drop-table", "drop-view", "drop-column", "drop-function", "drop-type", "rename-table", "rename-view"}
    | {"rename-column", "rename-function", "rename-type", "rename-enum-value", "rename-schema"}
    | {"column-type-changed", "not-null-added", "required-column", "constraint-added", "drop-not-null"}
)
"""What running code can see break: reported in before-rollout migrations only."""
LOCKING = frozenset({"table-rewrite", "blocking-index-build", "validating-scan", "backfill-under-lock"})
