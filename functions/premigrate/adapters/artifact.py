"""Migrations from a CodePipeline input artifact (a zip in S3), read in memory, never extracted to disk.

    >>> migration_set = migrations_from_zip(zip_bytes, folder="migrations")

The archive is refused whole, before anything is read, if any entry is unsafe (an absolute path, ``..``,
a symlink) or if it holds too many files or too many bytes; each file is read with a hard byte cap, so a
zip bomb's false sizes do not help it.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import PurePosixPath

from premigrate.engine import MigrationSet, MigrationSetError

MAX_ARCHIVE_BYTES = 50 * 1024 * 1024
MAX_ENTRIES = 10_000
MAX_SQL_BYTES = 100 * 1024 * 1024
"""Total uncompressed size of the migration files read."""


def migrations_from_zip(data: bytes, folder: str = "migrations") -> MigrationSet:
    if len(data) > MAX_ARCHIVE_BYTES:
        raise MigrationSetError([f"the artifact is {len(data)} bytes, more than the {MAX_ARCHIVE_BYTES} allowed"])
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise MigrationSetError(["the input artifact is not a zip file"]) from None
    with archive:
        entries = archive.infolist()
        _refuse_unsafe(entries)
        prefix = PurePosixPath(folder.strip("/")) if folder.strip("/") else PurePosixPath()
        chosen = [
            entry
            for entry in entries
            if not entry.is_dir()
            and entry.filename.lower().endswith(".sql")
            and (prefix == PurePosixPath() or PurePosixPath(entry.filename).is_relative_to(prefix))
        ]
        if not chosen:
            raise MigrationSetError(
                [
                    f"the artifact has no .sql files under {folder!r}; set migrations_path in the action's "
                    "UserParameters to the folder that holds them"
                ]
            )
        files, budget = [], MAX_SQL_BYTES
        for entry in chosen:
            with archive.open(entry) as stream:
                content = stream.read(budget + 1)
            budget -= len(content)
            if budget < 0:
                raise MigrationSetError([f"the migration files in the artifact exceed {MAX_SQL_BYTES} bytes"])
            files.append((PurePosixPath(entry.filename).relative_to(prefix).as_posix(), content))
    return MigrationSet.from_files(files)


def _refuse_unsafe(entries: list[zipfile.ZipInfo]) -> None:
    if len(entries) > MAX_ENTRIES:
        raise MigrationSetError([f"the artifact holds {len(entries)} entries, more than the {MAX_ENTRIES} allowed"])
    problems = []
    for entry in entries:
        name = entry.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
            problems.append(f"{name}: absolute path")
        elif ".." in path.parts:
            problems.append(f"{name}: path leaves the artifact (..)")
        elif stat.S_ISLNK(entry.external_attr >> 16):
            problems.append(f"{name}: symbolic link")
    declared = sum(entry.file_size for entry in entries)
    if declared > MAX_SQL_BYTES * 4:
        problems.append(f"the artifact unpacks to {declared} bytes, more than the {MAX_SQL_BYTES * 4} allowed")
    if problems:
        raise MigrationSetError(["the input artifact was refused, nothing was read from it:", *problems])
