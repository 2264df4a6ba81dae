"""A real session behind the Database port, passed through: the tests' wrappers override only what they
change (a statement that fails, one that is counted, a clock that moves) and inherit the rest."""

from __future__ import annotations

from typing import Any

from premigrate.engine.database import Database


class WrappedDatabase:
    def __init__(self, database: Database) -> None:
        self.database = database

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        return self.database.run(sql, **params)

    def close(self) -> None:
        self.database.close()

    def cancel(self) -> None:
        self.database.cancel()

    def wait_for_notification(self, seconds: float) -> bool:
        return self.database.wait_for_notification(seconds)
