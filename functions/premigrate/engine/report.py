"""What a run did, as plain data: printed by the CLI, returned by the Lambda, stored by nobody."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from premigrate.engine.plan import MigrationState


@dataclass(frozen=True)
class MigrationRun:
    """One migration, applied or about to be."""

    script: str
    version: str | None
    description: str
    mode: str
    mode_reason: str
    duration_ms: float | None = None
    attempts: int = 1


@dataclass
class Report:
    action: str
    schema_version_before: str | None = None
    schema_version_after: str | None = None
    applied: list[MigrationRun] = field(default_factory=list)
    pending: list[MigrationRun] = field(default_factory=list)
    states: list[MigrationState] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lock_wait_ms: float = 0.0
    total_ms: float = 0.0
    stopped_for_time: bool = False
    """True when pending migrations were left because the time budget ran out; a next run continues."""

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable; ``json.dumps(report.to_dict())`` always works."""
        data = dataclasses.asdict(self)
        data["up_to_date"] = self.up_to_date
        return data
