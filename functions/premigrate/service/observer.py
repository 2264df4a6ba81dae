"""What a run tells its front door while it works: the CLI prints it, the Lambda logs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from premigrate.engine import MigrationSet
from premigrate.engine.report import MigrationRun

if TYPE_CHECKING:
    from premigrate.service.results import Result


class Observer:
    """Does nothing: front doors override what they show."""

    def starting(self, database: str, migrations: MigrationSet) -> None:
        """The migrations are read and the run is about to connect."""

    def migration(self, event: str, run: MigrationRun) -> None:
        """``event`` is "started" or "finished"."""

    def note(self, message: str, **details: Any) -> None:
        """Something worth knowing that needs no action."""

    def warning(self, message: str, **details: Any) -> None:
        """Something went wrong and is being handled (a retry, say)."""

    def finished(self, result: Result) -> None:
        """The run's result, success or failure, just before it is returned."""
