"""The migrations folder as a migration set.

>>> load_folder(Path("migrations")).versioned[0].script
'V1__create_users.sql'
"""

from __future__ import annotations

from pathlib import Path

from premigrate.engine import ConfigurationError, MigrationSet


def load_folder(folder: Path) -> MigrationSet:
    """Every ``.sql`` file below the folder (hidden folders skipped), named by its path inside it."""
    if not folder.is_dir():
        raise ConfigurationError(
            f"migrations folder {folder} does not exist; pass --migrations DIR or set PREMIGRATE_MIGRATIONS"
        )
    files = [
        (path.relative_to(folder).as_posix(), path.read_bytes())
        for path in folder.rglob("*")
        if path.suffix.lower() == ".sql"
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    return MigrationSet.from_files(files)
