"""The fleet's state machine when things go wrong around the databases: a Lambda retry (replayed from the run
ledger, never run twice), another run holding a database's lock (waited for, with a new request id), a dry
run, a bad manifest (refused with its line numbers before any database is touched), and a summary that stays
small whatever the fleet's size."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fleet_rollouts import BUCKET, fleet_fixture, summary_of  # noqa: F401 (the fleet fixture)
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.engine.lock import advisory_key
from premigrate.fleet.rollout import MAX_FAILED_LISTED
from sfn_local import REGION

pytestmark = pytest.mark.slow


def ledger(url: str) -> list[tuple[str, str]]:
    connection = connect(params_from_url(url))
    try:
        rows = connection.run("SELECT request_id, outcome FROM premigrate_run_ledger ORDER BY started_at")
        return [(str(row[0]), str(row[1])) for row in rows]
    finally:
        connection.close()


def test_a_lambda_retry_replays_the_answer_and_never_migrates_twice(fleet) -> None:
    names = fleet.add(3, wave=1)
    lost = set()

    def lose_the_first_answer(payload: dict[str, Any]) -> str | None:
        # The function ran and migrated, then Lambda's answer was lost: Step Functions retries the same payload.
        if payload.get("action") == "migrate" and payload["database"]["name"] == names[1] and not lost:
            lost.add(payload["request_id"])
            return "after:ServiceException"
        return None

    fleet.sfn.fault = lose_the_first_answer
    result = fleet.roll_out()
    assert result["status"] == "SUCCEEDED", result
    assert result["summary"]["counts"] == {"migrated": 3}  # the replayed answer: migrated, as the first run said
    calls = [c for c in fleet.sfn.calls if c.get("action") == "migrate" and c["database"]["name"] == names[1]]
    assert len(calls) == 2 and calls[0]["request_id"] == calls[1]["request_id"] == next(iter(lost))
    assert ledger(fleet.urls[names[1]]) == [(calls[0]["request_id"], "succeeded")]  # one run, replayed once
    assert fleet.history(names[1]) == ["1", "2"]


def test_a_lock_held_by_another_run_is_waited_for_with_a_new_request_id(fleet) -> None:
    (name,) = fleet.add(1, wave=1)
    holder = connect(params_from_url(fleet.urls[name]))
    holder.run(
        "SELECT pg_advisory_lock(:namespace, :key)",
        namespace=0x5052454D,
        key=advisory_key("public.premigrate_schema_history"),
    )
    handler = fleet.sfn.handler

    def release_after_the_first_refusal(payload: dict[str, Any]) -> dict[str, Any]:
        answer = handler(payload)
        if answer.get("error_kind") == "lock":
            holder.close()  # the other run ends; the state machine's next attempt finds the lock free
        return answer

    fleet.sfn.handler = release_after_the_first_refusal
    try:
        result = fleet.roll_out(lock_retry_seconds=1)
    finally:
        holder.close()
    assert result["status"] == "SUCCEEDED", result
    attempts = ledger(fleet.urls[name])
    assert [(request.rsplit(":", 1)[-1], outcome) for request, outcome in attempts] == [
        ("0", "failed"),
        ("1", "succeeded"),
    ]
    assert fleet.history(name) == ["1", "2"]


def test_a_migration_error_is_not_retried(fleet) -> None:
    from fleet_rollouts import sabotage

    (name,) = fleet.add(1, wave=1)
    sabotage(fleet.urls[name])
    result = fleet.roll_out()
    assert result["status"] == "FAILED"
    assert len([c for c in fleet.sfn.calls if c.get("action") == "migrate"]) == 1
    assert [(request.rsplit(":", 1)[-1], outcome) for request, outcome in ledger(fleet.urls[name])] == [("0", "failed")]


def test_a_dry_run_plans_every_database_and_changes_none(fleet) -> None:
    names = fleet.add(1, wave=0) + fleet.add(4, wave=1, server="db-a")
    result = fleet.roll_out(dry_run=True)
    assert result["status"] == "SUCCEEDED", result
    assert result["summary"]["counts"] == {"planned": 5}
    assert [fleet.history(name) for name in names] == [[]] * 5
    assert not [call for call in fleet.sfn.calls if call.get("action") == "migrate"]


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        (
            {"targets": [{"name": "a", "secret_id": "s"}, {"name": "a", "secret_id": "t"}]},
            "line 2: name 'a' is already used on line 1",
        ),
        (
            {"targets": [{"name": "b", "database_url": "postgresql://app:hunter2@db/app"}]},
            "line 1: database_url is for local runs only; give the database's secret_id",
        ),
        ({"targets": [{"name": "c", "secret_id": "s", "shard": 1}]}, "line 1: unknown key 'shard'"),
        ({"manifest": f"s3://{BUCKET}/manifests/fleet.jsonl"}, "pinned by its version"),
        ({"targets": [], "concurrency": 0}, "'concurrency' must be a whole number from 1 to 1000"),
        ({"targets": [], "settings": {"phase": "sideways"}}, "'sideways' is not a phase"),
    ],
)
def test_a_bad_rollout_is_refused_before_any_database_is_touched(fleet, rollout, message) -> None:
    fleet.add(2, wave=1)
    result = fleet.sfn.run(fleet.machine, rollout)
    assert result["status"] == "FAILED"
    summary = summary_of(result)
    assert message in summary["stopped"] and message in result["cause"]
    assert "hunter2" not in json.dumps(summary) + str(result["cause"])
    assert not [call for call in fleet.sfn.calls if call.get("fleet") == "database"]
    assert [fleet.history(name) for name in fleet.urls] == [[], []]


def test_the_summary_stays_small_whatever_the_fleet_size(monkeypatch) -> None:
    from premigrate.triggers import fleet_summary

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    size, error = 10_000, "V2__orders.sql:1:1: ERROR 42710: " + "x" * 2000
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        names = [f"tenant-{n:05d}" for n in range(size)]
        put = lambda key, value: s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(value).encode())  # noqa: E731
        put("runs/r/plan/targets.json", [{"name": n, "wave": 1} for n in names])
        for step, status, answer in (("plan", "SUCCEEDED", "planned"), ("wave-01/g00000", "FAILED", "failed")):
            entries = [
                {
                    "Input": json.dumps({"database": {"name": n, "wave": 1}}),
                    "Status": status,
                    ("Output" if status == "SUCCEEDED" else "Cause"): json.dumps(
                        {"name": n, "wave": 1, "status": answer, "applied": 0, "pending": 2, "error": error[:1000]}
                    ),
                }
                for n in names
            ]
            put(f"runs/r/results/{step}/run/{status}_0.json", entries)
            put(
                f"runs/r/results/{step}/run/manifest.json",
                {"ResultFiles": {status: [{"Key": f"runs/r/results/{step}/run/{status}_0.json"}]}},
            )
        prepared = {
            "ok": True,
            "bucket": BUCKET,
            "rollout": "r",
            "databases": size,
            "dry_run": False,
            "plan": {"items_key": "runs/r/plan/targets.json"},
        }
        failure = {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "tolerance exceeded"}
        loop = {"wave_index": 0, "wave": {"wave": 1, "tolerated_failure_percentage": 100.0}}
        summary = fleet_summary.summarize(
            {"state": {"prepared": prepared, "loop": loop, "failure": failure}}, lambda: 900.0
        )
        everything = json.loads(s3.get_object(Bucket=BUCKET, Key="runs/r/summary.json")["Body"].read())
    assert summary["counts"] == {"failed": size}
    assert len(summary["failed"]) == MAX_FAILED_LISTED and summary["failed_not_listed"] == size - MAX_FAILED_LISTED
    assert all(len(failed["error"]) <= 1000 for failed in summary["failed"])
    assert len(json.dumps(summary).encode()) < 256 * 1024 // 4  # Step Functions' limit is 256 KiB
    assert len(everything["outcomes"]) == size  # every outcome, in S3


@pytest.mark.parametrize("where", ["pool", "crowded-server"])
def test_the_failure_budget_is_each_server_groups(fleet, where) -> None:
    from fleet_rollouts import sabotage

    pool = fleet.add(10, wave=1)
    crowded = fleet.add(4, wave=1, server="db-a")
    later = fleet.add(3, wave=2)
    broken = pool[0] if where == "pool" else crowded[0]
    sabotage(fleet.urls[broken])
    result = fleet.roll_out(tolerated_failure_percentage=10, per_server=2)
    summary = result["summary"]
    assert result["status"] == "FAILED"  # not every database is migrated, whatever the budget
    assert [failed["name"] for failed in summary["failed"]] == [broken]
    if where == "pool":  # 1 of the pool's 10: within its 10 %, so the wave and the next carry on
        assert summary["stopped"] is None
        assert summary["counts"] == {"migrated": 16, "failed": 1}
        assert summary["message"].startswith("some databases were not migrated, within the tolerated failures")
    else:  # 1 of db-a's 4 is over 10 % of that server's databases: the wave stops, wave 2 never starts
        assert summary["stopped"] == "wave 1: 1 of 14 failed, more than 10% of a server group"
        assert [fleet.history(name) for name in later] == [[]] * 3
