"""The migration engine: plans and applies a migration set through a database connection.

Nothing here knows about AWS, Lambda or the command line; the adapters and triggers translate.
"""

from premigrate.engine.engine import Engine, Settings
from premigrate.engine.errors import (
    ConfigurationError,
    LockNotAcquiredError,
    MigrationFailedError,
    MigrationSetError,
    PremigrateError,
    ValidationError,
)
from premigrate.engine.migrations import Migration, MigrationSet, Version
from premigrate.engine.report import Report

__all__ = [
    "ConfigurationError",
    "Engine",
    "LockNotAcquiredError",
    "Migration",
    "MigrationFailedError",
    "MigrationSet",
    "MigrationSetError",
    "PremigrateError",
    "Report",
    "Settings",
    "ValidationError",
    "Version",
]
