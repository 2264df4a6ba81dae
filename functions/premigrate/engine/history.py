"""The history table: which migrations a database has, read and written through the connection.

Its columns follow Flyway's ``flyway_schema_history`` so the table reads familiarly; a partial unique
index on ``version`` makes a second application of one version impossible even if every other guard
failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from premigrate.engine.database import Database, ServerError
from premigrate.engine.errors import ValidationError

VERSIONED = "SQL"
REPEATABLE = "SQL_REPEATABLE"
BASELINE = "BASELINE"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str | int | bool | None) -> str:
    """A constant as SQL; E'' strings read the same whatever standard_conforming_strings says."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def create_schema(db: Database, schema: str) -> None:
    """Create the schema only when it is missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE right on the
    database even when the schema exists, which a role that owns its schema may well lack."""
    if not db.run("SELECT 1 FROM pg_namespace WHERE nspname = :schema", schema=schema):
        db.run(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")


class _ServerTimed:
    """execution_ms computed by the server: statement_timestamp() is when the current message arrived."""


_SERVER_TIMED_MS = _ServerTimed()


def _sql_value(value: str | int | bool | _ServerTimed | None) -> str:
    if isinstance(value, _ServerTimed):
        return "round(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::integer"
    return sql_literal(value)


@dataclass(frozen=True)
class HistoryRow:
    installed_rank: int
    version: str | None
    description: str
    type: str
    script: str
    checksum: str | None
    installed_on: str
    """When it was recorded, to the second, in the session's time zone (the server formats it: parsing 1000
    timestamps in Python cost an up-to-date run 25 ms)."""
    success: bool
    execution_mode: str | None
    phase: str | None = None
    """before-rollout or after-rollout; None in rows written before premigrate knew phases (before-rollout)."""


@dataclass(frozen=True)
class HistoryTable:
    schema: str
    table: str

    @property
    def qualified_name(self) -> str:
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.table)}"

    def exists(self, db: Database) -> bool:
        rows = db.run("SELECT to_regclass(:name) IS NOT NULL", name=self.qualified_name)
        return bool(rows and rows[0][0])

    def other_relations(self, db: Database, ignoring: tuple[str, ...] = ()) -> list[str]:
        """Tables and views that no extension owns (``ignoring`` aside), in any schema but the system's: signs
        of an existing database, wherever the history table is kept."""
        rows = db.run(
            r"""
            SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
              AND c.relname <> ALL(CAST(:ignoring AS text[]))
              AND NOT EXISTS (SELECT 1 FROM pg_depend d
                              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1 LIMIT 6
            """,
            ignoring=list(ignoring),
        )
        return [row[0] for row in rows]

    def create(self, db: Database) -> None:
        create_schema(db, self.schema)
        db.run(
            f"""
            CREATE TABLE IF NOT EXISTS {self.qualified_name} (
                installed_rank integer PRIMARY KEY,
                version text,
                description text NOT NULL,
                type text NOT NULL,
                script text NOT NULL,
                checksum text,
                installed_by text NOT NULL DEFAULT current_user,
                installed_on timestamptz NOT NULL DEFAULT now(),
                execution_ms integer NOT NULL,
                success boolean NOT NULL,
                execution_mode text,
                phase text
            );
            CREATE UNIQUE INDEX IF NOT EXISTS {quote_identifier(self.table + "_version_key")}
                ON {self.qualified_name} (version) WHERE version IS NOT NULL;
            """
        )

    def add_phase_column(self, db: Database) -> None:
        """A table written before premigrate knew phases gets the column, once (an ALTER needs the owner)."""
        db.run(
            f"""
            DO $premigrate$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attname = 'phase' AND NOT attisdropped
                               AND attrelid = CAST({sql_literal(self.qualified_name)} AS regclass)) THEN
                    ALTER TABLE {self.qualified_name} ADD COLUMN phase text;
                END IF;
            END $premigrate$
            """
        )

    def read(self, db: Database, *, upgrade: bool = False) -> list[HistoryRow]:
        """Every row in order. ``upgrade``: a table from before phases gets its phase column (a run that
        writes rows needs it); read-only runs read such a table as it is."""
        try:
            # to_jsonb: a table from before the phase column reads as phase NULL, in the same query.
            rows = db.run(
                "SELECT installed_rank, version, description, type, script, checksum,"
                " to_char(installed_on, 'YYYY-MM-DD HH24:MI:SS'), success,"
                f" execution_mode, to_jsonb(h) ->> 'phase', to_jsonb(h) ? 'phase' FROM {self.qualified_name} h "
                "ORDER BY installed_rank"
            )
        except ServerError as error:
            if error.sqlstate not in ("42703", "42809"):  # undefined column; not a table
                raise
            raise ValidationError(
                [
                    f"{self.qualified_name} is not a premigrate history table ({error.message}). Keep the history "
                    "in another schema (--schema) or rename that table"
                ]
            ) from None
        if upgrade and not (rows and rows[0][-1]):
            self.add_phase_column(db)
        return [HistoryRow(*row[:-1]) for row in rows]

    def insert_sql(
        self,
        *,
        version: str | None,
        description: str,
        type: str,
        script: str,
        checksum: str | None,
        execution_ms: int | None,
        success: bool,
        execution_mode: str | None,
        phase: str | None,
    ) -> str:
        """The INSERT of one history row as plain SQL, so that it can share a round trip with COMMIT.
        ``execution_ms`` None: the server's time since the message that carries the INSERT arrived."""
        timing: int | _ServerTimed = _SERVER_TIMED_MS if execution_ms is None else execution_ms
        values = [version, description, type, script, checksum, timing, success, execution_mode, phase]
        return (
            f"INSERT INTO {self.qualified_name} (installed_rank, version, description, type, script, checksum, "
            "execution_ms, success, execution_mode, phase) "
            f"SELECT coalesce(max(installed_rank), 0) + 1, {', '.join(map(_sql_value, values))} "
            f"FROM {self.qualified_name}"
        )

    def outcome_sql(self, installed_rank: int, *, success: bool, execution_ms: int) -> str:
        """The UPDATE that gives a row recorded before its migration ran the migration's outcome."""
        return (
            f"UPDATE {self.qualified_name} SET success = {sql_literal(success)}, "
            f"execution_ms = {sql_literal(execution_ms)} WHERE installed_rank = {sql_literal(installed_rank)}"
        )

    def delete_failed(self, db: Database) -> None:
        db.run(f"DELETE FROM {self.qualified_name} WHERE NOT success")

    def update_checksum(self, db: Database, installed_rank: int, checksum: str) -> None:
        db.run(
            f"UPDATE {self.qualified_name} SET checksum = :checksum WHERE installed_rank = :rank",
            checksum=checksum,
            rank=installed_rank,
        )
