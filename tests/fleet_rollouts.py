"""Fleets of real databases on the embedded server, each behind a Secrets Manager secret (moto), rolled out by
the template's state machine on moto's executor (sfn_local) with the real Lambda handler doing the work."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters

from aws_fakes import secret_for
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.postgres import connect
from premigrate.local_invoke import invoke
from sfn_local import REGION, LocalStepFunctions

BUCKET = "premigrate-fleet-test"
PASSWORD = "fleet-pw-5e1f0c"
"""Every fleet secret's password (the test server does not ask for it): it must appear nowhere else."""
MIGRATIONS = {
    "V1__users.sql": "CREATE TABLE users (id int PRIMARY KEY);\n",
    "V2__orders.sql": "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users);\n",
}


class DatabasePool:
    """Databases for the fleet tests, created once per server (CREATE DATABASE takes ~0.2 s here, and the tests
    use a few hundred) and emptied before each use: the public schema dropped and made again. They go with
    the embedded server they live on, at the end of the session."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.urls: list[str] = []
        self.used = 0

    def take(self, count: int) -> list[str]:
        missing = [f"fleet_{uuid.uuid4().hex[:12]}" for _ in range(self.used + count - len(self.urls))]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda name: self.server.admin(f'CREATE DATABASE "{name}"'), missing))
        self.urls += [self.server.url_for(name) for name in missing]
        taken = self.urls[self.used : self.used + count]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(_empty, taken))
        self.used += count
        return taken


def _empty(url: str) -> None:
    connection = connect(params_from_url(url))
    try:
        connection.run("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        connection.close()


@dataclass
class Fleet:
    """Databases by name, with the manifest lines that reach them (secret_id, wave, server)."""

    sfn: LocalStepFunctions
    machine: str
    pool: DatabasePool
    urls: dict[str, str] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, count: int, wave: int = 1, server: str | None = None) -> list[str]:
        """``count`` new databases in ``wave`` (on ``server``, as the manifest says), each with its secret."""
        names = [f"db{len(self.urls) + index:03d}" for index in range(count)]
        secrets = boto3.client("secretsmanager", region_name=REGION)
        for name, url in zip(names, self._databases(count), strict=True):
            user = params_from_url(url).user
            arn = secrets.create_secret(Name=f"fleet/{name}", SecretString=secret_for(url, user, PASSWORD))["ARN"]
            self.urls[name] = url
            self.targets[name] = {"name": name, "secret_id": arn, "wave": wave} | ({"server": server} if server else {})
        return names

    def _databases(self, count: int) -> list[str]:
        return self.pool.take(count)

    def manifest(self) -> str:
        """The targets as a manifest in the fleet bucket, pinned by its version."""
        body = "".join(json.dumps(target) + "\n" for target in self.targets.values())
        put = boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key="manifests/fleet.jsonl", Body=body)
        return f"s3://{BUCKET}/manifests/fleet.jsonl?versionId={put['VersionId']}"

    def roll_out(self, **options: Any) -> dict[str, Any]:
        """One execution of the state machine over the whole fleet; its end, with the summary it wrote."""
        result = self.sfn.run(self.machine, {"manifest": self.manifest(), **options})
        result["summary"] = summary_of(result)
        return result

    def history(self, name: str) -> list[str]:
        return applied(self.urls[name])


def everything_kept(result: dict[str, Any]) -> str:
    """The execution's history and every file of the fleet bucket: what anyone who may read them sees."""
    client = boto3.client("stepfunctions", region_name=REGION)
    history = client.get_execution_history(executionArn=result["arn"], maxResults=1000)["events"]
    s3 = boto3.client("s3", region_name=REGION)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    files = [s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() for key in keys]
    return json.dumps(history, default=str) + "".join(files)


def summary_of(result: dict[str, Any]) -> dict[str, Any]:
    """The summary: the execution's output when it succeeded; otherwise the one Summarize gave (its whole
    copy, with every outcome, is in S3 either way)."""
    if result["status"] == "SUCCEEDED":
        return dict(result["output"])
    client = boto3.client("stepfunctions", region_name=REGION)
    events = client.get_execution_history(executionArn=result["arn"], maxResults=1000, reverseOrder=True)["events"]
    for event in events:
        details = event.get("taskSucceededEventDetails") or {}
        output = json.loads(details.get("output") or "{}")
        payload = output.get("Payload") if isinstance(output, dict) else None
        if isinstance(payload, dict) and isinstance(payload.get("summary"), dict):
            return dict(payload["summary"])
    raise AssertionError(f"no summary in the history of {result['arn']}")


def applied(url: str) -> list[str]:
    connection = connect(params_from_url(url))
    try:
        if connection.run("SELECT to_regclass('premigrate_schema_history')") == [[None]]:
            return []
        rows = connection.run("SELECT version FROM premigrate_schema_history WHERE success ORDER BY installed_rank")
        return [str(row[0]) for row in rows]
    finally:
        connection.close()


def sabotage(url: str) -> None:
    """A type named as the table V2 creates: that database's V2 fails, which no plan can foresee."""
    connection = connect(params_from_url(url))
    connection.run("CREATE TYPE orders AS ENUM ('legacy')")
    connection.close()


def repair(url: str) -> None:
    connection = connect(params_from_url(url))
    connection.run("DROP TYPE orders")
    connection.close()


_POOLS: dict[str, DatabasePool] = {}


@pytest.fixture(name="fleet")
def fleet_fixture(server, monkeypatch: pytest.MonkeyPatch, write_migrations) -> Iterator[Fleet]:
    """An empty fleet: the Lambda function configured as the template configures it (a migrations folder,
    the fleet bucket, no database of its own), moto for AWS, the state machine created from the template."""
    if server.name != "embedded":
        pytest.skip("one server is enough for the fleet")
    folder: Path = write_migrations(MIGRATIONS)
    for name, value in {
        "PREMIGRATE_MIGRATIONS": str(folder),
        "PREMIGRATE_FLEET_BUCKET": BUCKET,
        "PREMIGRATE_SSLMODE": "disable",
        "PREMIGRATE_TIME_MARGIN": "1",
        "PREMIGRATE_LOCK_WAIT": "1",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "POWERTOOLS_METRICS_NAMESPACE": "Premigrate",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("PREMIGRATE_DATABASE_URL", "PREMIGRATE_SECRET_ID", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    _forget_powertools_clients()
    # Each database's run logs a dozen JSON lines: thousands per test, which the tests do not read.
    from premigrate.triggers.invocation import logger

    monkeypatch.setattr(logger._logger, "level", logging.WARNING)
    sfn = LocalStepFunctions(lambda event: invoke(event, remaining_seconds=900))
    pool = _POOLS.setdefault(server.admin_url, DatabasePool(server))
    pool.used = 0  # every database of the pool is this test's again, emptied as it is taken
    with sfn.running():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield Fleet(sfn, sfn.create(BUCKET), pool)
    _forget_powertools_clients()


def _forget_powertools_clients() -> None:
    """Powertools keeps its Secrets Manager client (and values) for the process: one made for another test's
    endpoint must not serve this one."""
    from aws_lambda_powertools.utilities.parameters import base

    parameters.clear_caches()
    base.DEFAULT_PROVIDERS.clear()
