"""The run ledger: who ran premigrate, when, for which request, and how it ended.

An operator reads it to see who migrated what; a caller that delivers the same request id again
(a retried invocation) gets the earlier outcome instead of a second run.

    >>> ledger = RunLedger("public")
    >>> ledger.earlier_run(db, "job-42") or ledger.start(db, "codepipeline", "migrate", "job-42")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from premigrate.engine.database import Database
from premigrate.engine.history import create_schema, quote_identifier
from premigrate.engine.lock import advisory_key

LEDGER_TABLE = "premigrate_run_ledger"
_LEDGER_LOCK_NAMESPACE = 0x5052454C  # "PREL"


@dataclass(frozen=True)
class RunLedger:
    schema: str
    table: str = LEDGER_TABLE

    @property
    def qualified_name(self) -> str:
        return f"{quote_identifier(self.schema)}.{quote_identifier(self.table)}"

    def ensure(self, db: Database) -> None:
        # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog: creators take turns.
        key = advisory_key(self.qualified_name)
        create_schema(db, self.schema)
        db.run(
            f"""
            BEGIN;
            SELECT pg_advisory_xact_lock({_LEDGER_LOCK_NAMESPACE}, {key});
            CREATE TABLE IF NOT EXISTS {self.qualified_name} (
                request_id text PRIMARY KEY,
                caller text NOT NULL,
                action text NOT NULL,
                started_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                outcome text NOT NULL DEFAULT 'running',
                applied_versions text[] NOT NULL DEFAULT '{{}}',
                error text,
                result jsonb
            );
            COMMIT
            """
        )

    def earlier_run(self, db: Database, request_id: str) -> tuple[str, str, dict[str, Any]] | None:
        """(caller, action, result) of a finished run with this request id."""
        rows = db.run(
            f"SELECT caller, action, result FROM {self.qualified_name} "
            "WHERE request_id = :id AND finished_at IS NOT NULL",
            id=request_id,
        )
        return (str(rows[0][0]), str(rows[0][1]), rows[0][2]) if rows else None

    def start(self, db: Database, caller: str, action: str, request_id: str) -> bool:
        """Record the run as running; False when a run with this request id is recorded already (running,
        died, or finished just now): its record is never overwritten."""
        rows = db.run(
            f"""
            INSERT INTO {self.qualified_name} (request_id, caller, action) VALUES (:id, :caller, :action)
            ON CONFLICT (request_id) DO NOTHING RETURNING request_id
            """,
            id=request_id,
            caller=caller,
            action=action,
        )
        return bool(rows)

    def started_at(self, db: Database, request_id: str) -> str | None:
        rows = db.run(f"SELECT started_at::text FROM {self.qualified_name} WHERE request_id = :id", id=request_id)
        return str(rows[0][0]) if rows else None

    def finish(
        self,
        db: Database,
        request_id: str,
        *,
        outcome: str,
        applied_versions: list[str],
        error: str | None,
        result: dict[str, Any],
    ) -> None:
        db.run(
            f"""
            UPDATE {self.qualified_name}
            SET finished_at = now(), outcome = :outcome, applied_versions = CAST(:applied AS text[]),
                error = :error, result = CAST(:result AS jsonb)
            WHERE request_id = :id
            """,
            id=request_id,
            outcome=outcome,
            applied=applied_versions,
            error=error,
            result=json.dumps(result, default=str),
        )
