"""``premigrate fleet``: one migration set over many real databases (on the test server), with a canary,
waves, a per-server limit and a failure budget; every database either fully migrated or untouched."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_rollouts import applied, repair, sabotage
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.cli import main

MIGRATIONS = {
    "V1__users.sql": "CREATE TABLE users (id int PRIMARY KEY);\n",
    "V2__orders.sql": "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users);\n",
}


@pytest.fixture
def fleet(server, write_migrations, tmp_path) -> Iterator[dict[str, str]]:
    """Twelve databases: wave 0 (2, the canary), wave 1 (5), wave 2 (5); {name: url}."""
    if server.name != "embedded":
        pytest.skip("one server is enough for the fleet runner")
    with contextlib.ExitStack() as stack:
        urls = {f"db{n:02d}": stack.enter_context(server.database("fleet")) for n in range(12)}
        yield urls


def manifest(tmp_path: Path, urls: dict[str, str], **extra: dict) -> Path:
    path = tmp_path / "targets.jsonl"
    lines = []
    for index, (name, url) in enumerate(urls.items()):
        wave = 0 if index < 2 else 1 if index < 7 else 2
        lines.append(json.dumps({"name": name, "database_url": url, "wave": wave, **extra.get(name, {})}))
    path.write_text("\n".join(lines) + "\n")
    return path


def fleet_up(capsys, folder: Path, targets: Path, *options: str) -> tuple[int, dict, str]:
    code = main(["fleet", "up", "--json", "--targets", str(targets), "--migrations", str(folder), *options])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def tables(url: str) -> list[str]:
    connection = connect(params_from_url(url))
    try:
        rows = connection.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        return [row[0] for row in rows if not row[0].startswith("premigrate_")]
    finally:
        connection.close()


def test_every_database_is_migrated_wave_by_wave(capsys, fleet, write_migrations, tmp_path) -> None:
    folder = write_migrations(MIGRATIONS)
    main(["fleet", "up", "--targets", str(manifest(tmp_path, fleet)), "--migrations", str(folder)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0:2] for line in lines[0:4]] == [["plan", "12"], ["wave", "0"], ["wave", "1"], ["wave", "2"]]
    assert lines[-1] == "summary: 12 migrated"
    assert all(tables(url) == ["orders", "users"] for url in fleet.values())
    code, summary, _ = fleet_up(capsys, folder, manifest(tmp_path, fleet))
    assert (code, summary["counts"]) == (0, {"up-to-date": 12})  # a second rollout is a no-op


def test_a_failure_in_a_wave_stops_it_and_every_later_wave(capsys, fleet, write_migrations, tmp_path) -> None:
    folder = write_migrations(MIGRATIONS)
    sabotage(fleet["db02"])  # wave 1
    code, summary, _ = fleet_up(capsys, folder, manifest(tmp_path, fleet), "--concurrency", "1")
    assert code == 1
    assert summary["stopped"] == "wave 1: 1 of 5 failed, more than the 0 tolerated"
    assert [failed["name"] for failed in summary["failed"]] == ["db02"]
    assert 'type "orders" already exists' in summary["failed"][0]["error"]
    assert summary["counts"]["not-started"] >= 5  # wave 2 never started
    versions = {name: applied(url) for name, url in fleet.items()}
    assert versions.pop("db02") == ["1"]  # its failed V2 rolled back whole
    assert set(map(tuple, versions.values())) <= {("1", "2"), ()}  # every other one migrated whole, or untouched
    # Fixed, the same rollout again does only what was left.
    repair(fleet["db02"])
    code, summary, _ = fleet_up(capsys, folder, manifest(tmp_path, fleet))
    assert code == 0
    assert summary["counts"]["migrated"] + summary["counts"]["up-to-date"] == 12
    assert summary["counts"]["up-to-date"] >= 2  # the canary, at least, had nothing left


def test_a_failed_canary_touches_nothing_else(capsys, fleet, write_migrations, tmp_path) -> None:
    folder = write_migrations(MIGRATIONS)
    sabotage(fleet["db00"])
    code, summary, _ = fleet_up(capsys, folder, manifest(tmp_path, fleet), "--tolerated-failure-percentage", "50")
    assert code == 1
    assert summary["stopped"].startswith("wave 0: 1 of 2 failed")
    assert [tables(url) for name, url in fleet.items() if name >= "db02"] == [[]] * 10


@pytest.mark.parametrize("problem", ["unreachable", "edited"])
def test_an_invalid_database_found_by_plan_stops_the_rollout_before_any_change(
    capsys, fleet, write_migrations, tmp_path, problem
) -> None:
    folder = write_migrations(MIGRATIONS)
    extra: dict[str, dict] = {}
    if problem == "unreachable":
        extra["db05"] = {"database_url": "postgresql://app@127.0.0.1:1/app?sslmode=disable&connect_timeout=1"}
    else:  # db05 has V1 applied from another text: drift
        write_migrations({"V1__users.sql": "CREATE TABLE users (id bigint PRIMARY KEY);\n"}, tmp_path / "old")
        assert main(["up", "--database-url", fleet["db05"], "--migrations", str(tmp_path / "old")]) == 0
        capsys.readouterr()
    code, summary, _ = fleet_up(capsys, folder, manifest(tmp_path, fleet, **extra))
    assert code == 1
    assert summary["stopped"] == "plan found 1 database(s) that cannot be migrated; no database was changed"
    assert [failed["name"] for failed in summary["failed"]] == ["db05"]
    assert [tables(url) for name, url in fleet.items() if name != "db05"] == [[]] * 11


def test_the_per_server_limit_is_never_exceeded(capsys, fleet, write_migrations, tmp_path, server) -> None:
    folder = write_migrations({**MIGRATIONS, "V3__slow.sql": "SELECT pg_sleep(0.4);\n"})
    same_server = {name: {"server": "shared", "wave": 1} for name in fleet}
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:  # what the server itself says is running, every 50 ms, for at most 60 s
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            rows = server.admin(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(0.4)%' "
                "AND pid <> pg_backend_pid()"
            )
            seen.append(int(rows[0][0]))  # type: ignore[index]
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        code, summary, _ = fleet_up(
            capsys, folder, manifest(tmp_path, fleet, **same_server), "--concurrency", "8", "--per-server", "3"
        )
    finally:
        done.set()
        watcher.join(timeout=70)
    assert (code, summary["counts"]) == (0, {"migrated": 12})
    assert max(seen) == 3  # three at once, and never more, on the one server


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [
                '{"name": "a", "database_url": "postgresql://x@h/a"}',
                '{"name": "a", "database_url": "postgresql://x@h/b"}',
            ],
            "line 2: name 'a' is already used on line 1",
        ),
        (['{"name": "a", "secret_id": "s", "shard": 3}'], "line 1: unknown key 'shard'"),
        (['{"name": "a"}'], "line 1: give the database's secret_id (or, for local runs, database_url), one of them"),
        (['{"name": "a", "secret_id": "s", "wave": -1}'], "line 1: wave must be a whole number from 0"),
        (["not json"], "line 1: not JSON"),
    ],
)
def test_a_bad_manifest_is_refused_with_its_line(capsys, write_migrations, tmp_path, lines, message) -> None:
    targets = tmp_path / "targets.jsonl"
    targets.write_text("\n".join(lines) + "\n")
    code, _, error = fleet_up(capsys, write_migrations(MIGRATIONS), targets)
    assert code == 2
    assert "the targets manifest cannot be used (no database was touched)" in error
    assert message in error
