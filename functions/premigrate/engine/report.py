"""What a run did, as plain data: printed by the CLI, returned by the Lambda, kept in the run ledger."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from premigrate.engine.migrations import Migration


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
    phase: str = "before-rollout"
    group: int | None = None
    """With all-or-nothing: the transaction it shares with the other runs of its group."""

    @classmethod
    def of(cls, migration: Migration, duration_ms: float | None = None, attempts: int = 1) -> MigrationRun:
        return cls(
            script=migration.script,
            version=str(migration.version) if migration.version else None,
            description=migration.description,
            mode=migration.mode.value,
            mode_reason=migration.mode_reason,
            duration_ms=duration_ms,
            attempts=attempts,
            phase=migration.phase.value,
        )

    @property
    def label(self) -> str:
        """How people name it: ``V3 add sessions`` or ``R active users view``."""
        return f"V{self.version} {self.description}" if self.version else f"R {self.description}"


@dataclass(frozen=True)
class MigrationState:
    """One line of ``premigrate status``."""

    version: str | None
    description: str
    script: str
    state: str
    """applied, pending, baseline, below-baseline, failed, missing-file, checksum-drift, out-of-order,
    outdated (a repeatable whose file changed), beyond-target, ahead-of-files, after-rollout (pending, left
    for the after-rollout phase)."""
    installed_on: str | None = None
    phase: str = "before-rollout"


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The inverse of ``to_dict``: a report kept as JSON (in the run ledger) read back."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        for key in ("applied", "pending"):
            values[key] = [MigrationRun(**run) for run in values.get(key, [])]
        values["states"] = [MigrationState(**state) for state in values.get("states", [])]
        return cls(**values)
