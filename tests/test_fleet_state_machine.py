"""The fleet rollout on Step Functions: the template's state machine (statemachine/fleet.asl.json after its
DefinitionSubstitutions) run by moto's executor, every Lambda task handled by the real handler in this process,
against real databases on the embedded server, each reached through its own Secrets Manager secret.

What moto's Distributed Map lacks (failure tolerance, result files) is done by sfn_local as AWS documents it."""

from __future__ import annotations

import json
import time

import pytest

from fleet_rollouts import MIGRATIONS, PASSWORD, applied, everything_kept, fleet_fixture, repair, sabotage  # noqa: F401 (the fleet fixture)
from premigrate.adapters.connection import params_from_url
from premigrate.cli import main

pytestmark = pytest.mark.slow


def installed_at(fleet, name: str) -> list[float]:
    from premigrate.adapters.connection import params_from_url
    from premigrate.adapters.postgres import connect

    connection = connect(params_from_url(fleet.urls[name]))
    try:
        rows = connection.run("SELECT extract(epoch FROM installed_on)::float8 FROM premigrate_schema_history")
        return [float(row[0]) for row in rows]
    finally:
        connection.close()


@pytest.mark.reliability
def test_fifty_databases_are_migrated_wave_by_wave(fleet, reliability) -> None:
    canary = fleet.add(2, wave=0)
    first = fleet.add(16, wave=1) + fleet.add(8, wave=1, server="db-a")
    second = fleet.add(8, wave=2, server="db-b") + fleet.add(16, wave=2)
    started = time.monotonic()
    result = fleet.roll_out(concurrency=8, per_server=2)
    took = time.monotonic() - started
    assert result["status"] == "SUCCEEDED", result
    summary = result["summary"]
    assert (summary["ok"], summary["databases"], summary["counts"]) == (True, 50, {"migrated": 50})
    assert summary["message"] == "every database is migrated: 50 migrated"
    assert all(fleet.history(name) == ["1", "2"] for name in fleet.urls)
    # Each wave began after the one before it had finished, the canary first.
    finished = {
        wave: max(t for name in names for t in installed_at(fleet, name))
        for wave, names in enumerate([canary, first, second])
    }
    began = {
        wave: min(t for name in names for t in installed_at(fleet, name))
        for wave, names in enumerate([canary, first, second])
    }
    assert finished[0] <= began[1] and finished[1] <= began[2]
    assert len(json.dumps(result["output"]).encode()) < 4096  # far below the 256 KiB a state may hold
    kept = everything_kept(result)
    assert "runs/" in kept and PASSWORD not in kept  # secret ids travel, never what the secrets hold
    reliability(
        "fleet on Step Functions (moto): 50 databases, canary + 2 waves, 2 crowded servers",
        50,
        "every database migrated whole; each wave after the last one finished",
        f"{took:.1f} s for plan + 3 waves",
    )


def test_a_failing_migration_in_wave_2_stops_that_wave_and_every_later_one(fleet) -> None:
    fleet.add(2, wave=0)
    fleet.add(10, wave=1)
    second = fleet.add(10, wave=2)
    third = fleet.add(5, wave=3)
    sabotage(fleet.urls[second[0]])
    result = fleet.roll_out(concurrency=2)
    assert (result["status"], result["error"]) == ("FAILED", "Premigrate.FleetFailed")
    summary = result["summary"]
    assert summary["stopped"] == "wave 2: 1 of 10 failed, more than the 0% tolerated"
    assert result["cause"] == summary["message"]
    (failed,) = summary["failed"]
    assert (failed["name"], failed["wave"], failed["status"], failed["applied"]) == (second[0], 2, "failed", 1)
    assert 'type "orders" already exists' in failed["error"] and "V2__orders.sql" in failed["error"]
    assert summary["counts"] == {
        "migrated": 12 + sum(fleet.history(n) == ["1", "2"] for n in second),
        "failed": 1,
        "not-started": 5 + sum(fleet.history(n) == [] for n in second),
    }
    assert fleet.history(second[0]) == ["1"]  # its V2 rolled back whole
    assert all(fleet.history(name) == ["1", "2"] for name in fleet.urls if name not in second + third)
    rest = {tuple(fleet.history(name)) for name in second[1:]}
    assert rest <= {("1", "2"), ()} and () in rest  # the wave stopped: each other database whole or untouched
    assert all(fleet.history(name) == [] for name in third)  # wave 3 never started


def test_a_failed_canary_touches_nothing_else(fleet) -> None:
    canary = fleet.add(2, wave=0)
    later = fleet.add(6, wave=1) + fleet.add(4, wave=2, server="db-a")
    sabotage(fleet.urls[canary[1]])
    result = fleet.roll_out(tolerated_failure_percentage=50)  # later waves' budget: never the canary's
    assert result["status"] == "FAILED"
    assert result["summary"]["stopped"] == "wave 0: 1 of 2 failed, more than the 0% tolerated"
    assert [failed["name"] for failed in result["summary"]["failed"]] == [canary[1]]
    assert [fleet.history(name) for name in later] == [[]] * len(later)


@pytest.mark.parametrize("problem", ["unreachable", "edited", "missing-secret"])
def test_an_invalid_database_found_by_plan_stops_the_rollout_before_any_change(
    fleet, problem, write_migrations, tmp_path, capsys
) -> None:
    names = fleet.add(2, wave=0) + fleet.add(10, wave=1)
    bad = names[5]
    if problem == "unreachable":  # nothing listens there: refused at once, tried 3 times
        import boto3

        from aws_fakes import secret_for

        url = "postgresql://app@127.0.0.1:1/app?connect_timeout=2"
        secret = boto3.client("secretsmanager").create_secret(
            Name="fleet/nowhere", SecretString=secret_for(url, "app", "x")
        )
        fleet.targets[bad]["secret_id"] = secret["ARN"]
    elif problem == "missing-secret":
        fleet.targets[bad]["secret_id"] = "fleet/no-such-secret"
    else:  # V1 applied from another text: checksum drift
        old = write_migrations({"V1__users.sql": "CREATE TABLE users (id bigint PRIMARY KEY);\n"}, tmp_path / "old")
        assert main(["up", "--database-url", fleet.urls[bad], "--migrations", str(old)]) == 0
        capsys.readouterr()
    result = fleet.roll_out()
    assert result["status"] == "FAILED"
    summary = result["summary"]
    assert summary["stopped"] == "plan found 1 database(s) that cannot be migrated; no database was changed"
    assert [(failed["name"], failed["status"]) for failed in summary["failed"]] == [(bad, "invalid")]
    assert summary["counts"] == {"invalid": 1, "not-started": 11}
    assert [fleet.history(name) for name in names if name != bad] == [[]] * 11
    assert not [call for call in fleet.sfn.calls if call.get("action") == "migrate"]


def test_a_rerun_after_a_failure_does_only_what_was_left(fleet) -> None:
    fleet.add(2, wave=0)
    first = fleet.add(5, wave=1)
    fleet.add(5, wave=2)
    sabotage(fleet.urls[first[2]])
    failed = fleet.roll_out(concurrency=1)
    assert failed["status"] == "FAILED"
    done_before = {name for name in fleet.urls if fleet.history(name) == ["1", "2"]}
    assert 2 <= len(done_before) < 11
    repair(fleet.urls[first[2]])
    fleet.sfn.calls.clear()
    rerun = fleet.roll_out()
    assert rerun["status"] == "SUCCEEDED", rerun
    counts = rerun["summary"]["counts"]
    assert counts == {"up-to-date": len(done_before), "migrated": 12 - len(done_before)}
    assert all(fleet.history(name) == ["1", "2"] for name in fleet.urls)  # each version applied once, ever
    migrated = {call["database"]["name"] for call in fleet.sfn.calls if call.get("action") == "migrate"}
    assert migrated == set(fleet.urls)  # every database asked; the migrated ones had nothing pending


@pytest.mark.reliability
def test_the_per_server_limit_is_never_exceeded(fleet, server, reliability) -> None:
    import threading

    slow = {**MIGRATIONS, "V3__slow.sql": "SELECT pg_sleep(0.4);\n"}
    for name, sql in slow.items():  # the function's folder, as the fixture wrote it
        (fleet_folder() / name).write_text(sql)
    on_a = fleet.add(6, wave=1, server="db-a")
    on_b = fleet.add(6, wave=1, server="db-b")
    alone = fleet.add(3, wave=1)
    groups = (("db-a", on_a), ("db-b", on_b), ("none", alone))
    server_of = {params_from_url(fleet.urls[name]).database: key for key, names in groups for name in names}
    seen: dict[str, int] = {"db-a": 0, "db-b": 0, "none": 0}
    done = threading.Event()

    def watch() -> None:  # what the server itself says is running, every 50 ms, for at most 120 s
        deadline = time.monotonic() + 120
        while not done.is_set() and time.monotonic() < deadline:
            rows = (
                server.admin(
                    "SELECT datname, count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE '%pg_sleep(0.4)%' AND pid <> pg_backend_pid() GROUP BY datname"
                )
                or []
            )
            now: dict[str, int] = {}
            for database, count in rows:
                now[server_of.get(str(database), "?")] = now.get(server_of.get(str(database), "?"), 0) + int(count)
            for key, count in now.items():
                seen[key] = max(seen.get(key, 0), count)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = fleet.roll_out(concurrency=4, per_server=2)
    finally:
        done.set()
        watcher.join(timeout=130)
    assert result["status"] == "SUCCEEDED", result
    assert result["summary"]["counts"] == {"migrated": 15}
    assert (seen["db-a"], seen["db-b"]) == (2, 2)  # two at once on each server, and never more
    assert "?" not in seen
    reliability(
        "fleet on Step Functions (moto): per-server limit 2, two crowded servers of 6 and 3 other databases",
        15,
        "migrations running at once on each server, from pg_stat_activity every 50 ms",
        f"at most {seen['db-a']} on db-a, {seen['db-b']} on db-b",
    )


def fleet_folder():
    import os
    from pathlib import Path

    return Path(os.environ["PREMIGRATE_MIGRATIONS"])
