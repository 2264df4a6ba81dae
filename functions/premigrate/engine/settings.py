"""The engine's settings: the one place their defaults live (the application service declares each
setting's environment variable and option on top of these)."""

from __future__ import annotations

from dataclasses import dataclass

from premigrate.engine.errors import ConfigurationError


@dataclass(frozen=True)
class Settings:
    schema: str = "public"
    table: str = "premigrate_schema_history"
    lock_wait_seconds: float = 300.0
    """How long to wait for another run's migration lock before giving up (exit code 3)."""
    lock_timeout_seconds: float = 5.0
    """PostgreSQL lock_timeout for migration statements: DDL queued behind a busy table gives up, rather
    than stalling every query that queues behind it."""
    statement_timeout_seconds: float = 0.0
    """PostgreSQL statement_timeout for migration statements; 0 means none."""
    lock_timeout_retries: int = 3
    """How often a migration that hit lock_timeout is tried again, with growing pauses."""
    retry_pause_seconds: float = 1.0
    allow_out_of_order: bool = False
    target: str | None = None
    """Apply versions up to and including this one only."""
    accept_database_ahead: bool = False
    """Succeed without changes when the database has newer versions than the files (a stack rollback
    deploys the older set); otherwise those versions are reported as applied migrations whose file is gone."""
    all_or_nothing: bool = False
    """Consecutive transactional migrations of a run apply in one transaction with their history rows."""
    phase: str = "all"
    """all, before-rollout or after-rollout (``directives.RUN_PHASES``): a before-rollout run leaves the
    after-rollout files for later; an after-rollout run refuses while a before-rollout file is pending."""
    time_margin_seconds: float = 30.0
    """With a time budget: no migration starts within this margin of its end, and a running statement is
    cancelled (its migration rolled back) half-way through the margin."""


_POSTGRES_LONGEST_TIMEOUT_MS = 2**31 - 1


def check_settings(settings: Settings) -> None:
    """Refuses settings PostgreSQL would take to mean something else (a timeout below 1 ms is none)."""
    if not settings.schema:
        raise ConfigurationError("the schema of the history table must not be empty")
    for name, seconds in (
        ("lock_timeout", settings.lock_timeout_seconds),
        ("statement_timeout", settings.statement_timeout_seconds),
    ):
        if seconds and round(seconds * 1000) < 1:
            raise ConfigurationError(
                f"{name} {seconds:g} s is below PostgreSQL's resolution of 1 ms (it would mean no limit at all): "
                "give at least 1ms, or 0 for no limit"
            )
        if seconds * 1000 > _POSTGRES_LONGEST_TIMEOUT_MS:
            raise ConfigurationError(
                f"{name} {seconds:g} s is above PostgreSQL's longest, {_POSTGRES_LONGEST_TIMEOUT_MS} ms (about 24 days)"
            )
