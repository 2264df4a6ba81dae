"""The migration engine: plans and applies a migration set through a database connection.

Nothing here knows about AWS, Lambda, the command line or the database driver: the application service
(``premigrate.service``) drives it, the adapters translate.
"""

from premigrate.engine.directives import Phase
from premigrate.engine.engine import Engine
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
from premigrate.engine.settings import Settings

__all__ = [
    "ConfigurationError",
    "Engine",
    "LockNotAcquiredError",
    "Migration",
    "MigrationFailedError",
    "MigrationSet",
    "MigrationSetError",
    "Phase",
    "PremigrateError",
    "Report",
    "Settings",
    "ValidationError",
    "Version",
]
