"""The password file, read as libpq reads it: ``passfile=`` in the URL, else PGPASSFILE, else ~/.pgpass.

    >>> password_from_file(passfile_path(None), host="db.example.com", port=5432, database="app", user="app")

Each line is ``hostname:port:database:username:password``; ``*`` matches anything, ``\\:`` and ``\\\\``
stand for ``:`` and ``\\``, lines starting with ``#`` are comments, and the first line that matches wins.
As libpq does, a file that group or others may access is skipped (libpq warns on stderr; premigrate never
prints, so ``passfile_problem`` says it in the error the missing password then causes).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DEFAULT_SOCKET_DIR = "/var/run/postgresql"
"""The unix socket directory premigrate (like Debian's libpq) uses when the URL names no host."""


def passfile_path(passfile: str | None) -> Path:
    return Path(os.path.expanduser(passfile or os.environ.get("PGPASSFILE") or "~/.pgpass"))


def passfile_problem(path: Path) -> str | None:
    """Why an existing password file is skipped, for an error message; None when it is usable or absent."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return f"the password file {path} is not a plain file, so it was skipped"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"the password file {path} was skipped because group or others may access it, as libpq does; "
            f"chmod 600 {path}"
        )
    return None


def password_from_file(path: Path, *, host: str, port: int, database: str, user: str) -> str | None:
    """The password of the first line that matches, or None; ``host`` as ``host_for_passfile`` gives it."""
    if passfile_problem(path) is not None:
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None  # as libpq: an unreadable or missing file is no file
    wanted = (host, str(port), database, user)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = _fields(line)
        if len(fields) >= 5 and all(_matches(field, value) for field, value in zip(fields, wanted, strict=False)):
            return fields[4][0]
    return None


def host_for_passfile(host: str | None, socket_dir: str | None) -> str:
    """The host name a password file line must name. libpq's rule for unix sockets: ``localhost`` for the
    default socket directory, the directory's path for any other."""
    if socket_dir is None:
        return host or "localhost"
    return "localhost" if socket_dir.rstrip("/") == DEFAULT_SOCKET_DIR else socket_dir


def _matches(field: tuple[str, bool], value: str) -> bool:
    text, is_wildcard = field
    return is_wildcard or text == value


def _fields(line: str) -> list[tuple[str, bool]]:
    """The line's fields, unescaped, each with whether it is the ``*`` wildcard (an escaped ``\\*`` is not)."""
    fields: list[tuple[str, bool]] = []
    text: list[str] = []
    raw = ""
    characters = iter(line)
    for character in characters:
        if character == "\\":
            escaped = next(characters, "\\")  # a trailing backslash stands for itself, as in libpq
            text.append(escaped)
            raw += "\\" + escaped
        elif character == ":":
            fields.append(("".join(text), raw == "*"))
            text, raw = [], ""
        else:
            text.append(character)
            raw += character
    fields.append(("".join(text), raw == "*"))
    return fields
