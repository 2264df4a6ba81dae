"""``premigrate check`` from the command line, on real PostgreSQL: a target database sizes the tables and
says what is pending (read-only), a scratch database is made and dropped, exit codes 0, 1, 2 and 4, JSON,
the allow directive, and bad input as a message, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.cli import build_parser, main

SETUP = "CREATE TABLE orders (id bigint PRIMARY KEY, total int, note text);\n"
REWRITE = "ALTER TABLE orders ALTER COLUMN total TYPE bigint;\n"


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse refuses an option this way
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def sql(url: str, text: str) -> list[list[object]]:
    db = connect(params_from_url(url))
    try:
        return db.run(text)
    finally:
        db.close()


@pytest.fixture
def target(database_url, write_migrations, capsys) -> tuple[str, Path]:
    """A target database at V1 with 3000 rows in orders (analyzed), and V2 pending."""
    folder = write_migrations({"V1__orders.sql": SETUP, "V2__bigger_totals.sql": REWRITE})
    assert main(["up", "--database-url", database_url, "--migrations", str(folder), "--target", "1"]) == 0
    sql(database_url, "INSERT INTO orders SELECT i, i, 'n' FROM generate_series(1, 3000) i; ANALYZE orders")
    capsys.readouterr()
    return database_url, folder


def scratch_databases(server) -> list[str]:
    rows = server.admin("SELECT datname FROM pg_database WHERE datname LIKE 'premigrate_check_%'")
    return [row[0] for row in rows or []]


def test_sizes_from_the_target_decide_error_or_warning(server, target, capsys) -> None:
    url, folder = target
    base = ["check", "--database-url", url, "--migrations", str(folder), "--scratch-url", server.admin_url]
    code, out, err = run(capsys, *base, "--max-locked-rows", "1000")
    assert code == 4, err
    assert "V2__bigger_totals.sql:1  error  table-rewrite" in out
    assert "ACCESS EXCLUSIVE on public.orders (3k rows): rewritten with its 1 index" in out
    assert "V2__bigger_totals.sql:1 table-rewrite" in err and "premigrate:allow" in err
    code, out, _ = run(capsys, *base, "--max-locked-rows", "5000", "--json")
    report = json.loads(out)["report"]
    levels = {(f["rule"], f["level"]) for f in report["findings"]}
    assert ("table-rewrite", "warning") in levels and ("column-type-changed", "error") in levels
    assert code == 4  # the type change still breaks the running code
    assert report["sized_by_target"] and report["checked"] == ["V2__bigger_totals.sql"] and report["replayed"] == 1
    assert scratch_databases(server) == []
    assert sql(url, "SELECT count(*) FROM premigrate_schema_history")[0][0] == 1  # the target is only read
    assert sql(url, "SELECT format_type(atttypid, -1) FROM pg_attribute WHERE attname = 'total'")[0][0] == "integer"


def test_an_allow_directive_acknowledges_and_the_report_still_lists_it(server, target, capsys) -> None:
    url, folder = target
    (folder / "V2__bigger_totals.sql").write_text(
        "-- premigrate:allow table-rewrite: orders is read only at night\n"
        "-- premigrate:allow column-type-changed: the app reads it as a long already\n" + REWRITE
    )
    code, out, err = run(
        capsys, "check", "--database-url", url, "--migrations", str(folder), "--scratch-url", server.admin_url
    )
    assert (code, err) == (0, "")
    assert "V2__bigger_totals.sql:3  error  column-type-changed  (allowed: the app reads it as a long already)" in out
    assert "V2__bigger_totals.sql:3  warning  table-rewrite  (allowed: orders is read only at night)" in out
    assert "1 error(s) (1 allowed), 1 warning(s), 0 info" in out


def test_a_read_only_target_is_enough(server, target, capsys) -> None:
    url, folder = target
    (name,) = sql(url, "SELECT current_database()")[0]
    server.admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    code, out, _ = run(
        capsys, "check", "--database-url", url, "--migrations", str(folder), "--scratch-url", server.admin_url, "--json"
    )
    assert code == 4 and json.loads(out)["report"]["checked"] == ["V2__bigger_totals.sql"]


def test_since_checks_without_a_target(server, write_migrations, capsys) -> None:
    folder = write_migrations(
        {"V1__orders.sql": SETUP, "V2__note.sql": "ALTER TABLE orders ADD COLUMN paid boolean;", "V3__x.sql": REWRITE}
    )
    code, out, _ = run(
        capsys, "check", "--since", "2", "--migrations", str(folder), "--scratch-url", server.admin_url, "--json"
    )
    report = json.loads(out)["report"]
    assert report["checked"] == ["V2__note.sql", "V3__x.sql"] and report["replayed"] == 1
    assert not report["sized_by_target"] and code == 4
    rewrite = next(f for f in report["findings"] if f["rule"] == "table-rewrite")
    assert "size unknown without --database-url" in rewrite["measured"] and rewrite["level"] == "error"
    code, out, _ = run(capsys, "check", "--since", "4", "--migrations", str(folder), "--scratch-url", server.admin_url)
    assert (code, out) == (0, "nothing pending: nothing to check\n")


def test_a_migration_that_fails_on_the_scratch_database_is_exit_1(server, write_migrations, capsys) -> None:
    folder = write_migrations({"V1__orders.sql": SETUP, "V2__bad.sql": "\nALTER TABLE orders DROP COLUMN nope;"})
    code, _, err = run(capsys, "check", "--since", "2", "--migrations", str(folder), "--scratch-url", server.admin_url)
    assert code == 1
    assert "V2__bad.sql:2:1: ERROR 42703" in err and "`premigrate up` would fail here too" in err
    assert scratch_databases(server) == []


def _as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(
        parts._replace(netloc=f"{user}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else ""))
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "two"), "--since: 'two' is not a version"),
        (("--since", "2", "--database-url", "postgresql://u:secret-pw@localhost/db"), "--since is for checking"),
        (("--max-locked-rows", "-5"), "is not a number of rows"),
        (("--since", "2", "--scratch-url", "postgresql://u:secret-pw@127.0.0.1:1/db?sslmode=disable"), "connect"),
    ],
)
def test_bad_input_is_a_message_and_exit_2(write_migrations, capsys, args, message) -> None:
    folder = write_migrations({"V1__orders.sql": SETUP, "V2__x.sql": REWRITE})
    code, _, err = run(capsys, "check", "--migrations", str(folder), *args)
    assert code == 2 and message in err and "secret-pw" not in err


def test_a_scratch_server_without_createdb_is_named(server, write_migrations, capsys) -> None:
    if server.name == "url":
        pytest.skip("needs a server whose roles the tests manage")
    server.admin("CREATE ROLE plain_checker LOGIN")
    try:
        folder = write_migrations({"V1__orders.sql": SETUP})
        scratch = _as_user(server.admin_url, "plain_checker")
        code, _, err = run(capsys, "check", "--since", "1", "--migrations", str(folder), "--scratch-url", scratch)
        assert code == 2 and "refused to create a database" in err and "CREATEDB" in err
    finally:
        server.admin("DROP ROLE plain_checker")


def test_exit_code_4_is_documented() -> None:
    assert "4 `premigrate check` found an error-level finding" in (build_parser().epilog or "")


def test_with_nothing_given_the_embedded_database_says_what_is_pending(tmp_path: Path) -> None:
    """A laptop's `premigrate check`: history from the embedded database, scratch on the embedded server."""
    repo_migrations = Path(__file__).resolve().parent.parent / "migrations"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREMIGRATE_")}
    command = [sys.executable, "-m", "premigrate", "--migrations", str(repo_migrations)]

    def premigrate(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [command[0], "-m", "premigrate", *args, *command[3:]]
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)

    assert premigrate("up", "--target", "2").returncode == 0
    checked = premigrate("check", "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)["report"]
    assert report["replayed"] == 3  # V1, V2 and the repeatable view
    assert report["checked"] == ["V3__index_sessions_by_user.sql", "V4__add_users_last_login.sql"]
    assert not report["sized_by_target"] and report["counts"]["error"] == 0
    assert [(f["file"], f["rule"]) for f in report["findings"]] == [("V4__add_users_last_login.sql", "catalog-lock")]


def test_ctrl_c_drops_the_scratch_database(server, write_migrations) -> None:
    folder = write_migrations({"V1__orders.sql": SETUP, "V2__slow.sql": "SELECT pg_sleep(60);"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREMIGRATE_")}
    argv = [sys.executable, "-m", "premigrate", "check", "--since", "2", "--migrations", str(folder)]
    child = subprocess.Popen(
        [*argv, "--scratch-url", server.admin_url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not server.admin("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'"):
            assert time.monotonic() < deadline and child.poll() is None, child.communicate()
            time.sleep(0.1)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 130 and "interrupted by SIGINT" in err and "Traceback" not in err
    assert scratch_databases(server) == []


def test_a_partitioned_table_is_measured_on_its_partitions(server, database_url, write_migrations, capsys) -> None:
    folder = write_migrations(
        {
            "V1__events.sql": "CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);\n"
            "CREATE TABLE events_a PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');\n"
            "CREATE TABLE events_b PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');",
            "V2__positive.sql": "ALTER TABLE events ADD CONSTRAINT positive CHECK (id > 0);",
        }
    )
    assert main(["up", "--database-url", database_url, "--migrations", str(folder), "--target", "1"]) == 0
    sql(
        database_url,
        "INSERT INTO events SELECT i, date '2024-01-01' + (i % 700) FROM generate_series(1, 3000) i; ANALYZE events",
    )
    capsys.readouterr()
    args = ["--database-url", database_url, "--migrations", str(folder), "--scratch-url", server.admin_url]
    code, out, _ = run(capsys, "check", *args, "--max-locked-rows", "2000", "--json")
    findings = json.loads(out)["report"]["findings"]
    scan = next(f for f in findings if f["rule"] == "validating-scan")
    # Each partition holds about half the rows; the statement reads both under its locks, so they add up.
    assert scan["level"] == "error" and "public.events_a" in scan["measured"] and "public.events_b" in scan["measured"]
    # The parent has no rows to check (PostgreSQL read none of it); each partition is sized by its own statistics.
    sizes = {f["measured"].rsplit("; ", 1)[1] for f in findings if f["rule"] == "may-fail-on-data"}
    assert sizes == {"public.events_a: 1.66k rows", "public.events_b: 1.34k rows"}
    assert code == 4
