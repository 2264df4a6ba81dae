"""A custom resource's whole life, as CloudFormation drives it, run by the built Lambda package under
Python 3.13 (the function's runtime) against real PostgreSQL: Create -> Update with a new migration set
-> Update whose migration fails -> that Update's rollback -> Delete. Every answer goes over HTTP to a
presigned S3 URL on moto's server, and the stack's status comes from moto's CloudFormation, as in AWS.

Each deploy ships a new function: a copy of the built package with the deploy's migrations folder."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from aws_fakes import ResponseInbox, cfn_event, set_stack_status
from premigrate.adapters.folder import load_folder
from test_build import make_ca

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# The Lambda runtime's own copy of boto3 is stood in for by the dev virtualenv's (pure Python), placed
# after the package, as the runtime places its own.
_HANDLER = """
import json, sys
sys.path[:0] = [sys.argv[1]]
sys.path.append(sys.argv[2])
from premigrate.lambda_handler import lambda_handler
from premigrate.local_invoke import LocalContext
import premigrate
assert premigrate.__file__.startswith(sys.argv[1]), premigrate.__file__
print(json.dumps(lambda_handler(json.load(sys.stdin), LocalContext(120))))
"""


def python313() -> str:
    candidates = [os.environ.get("PYTHON313", ""), shutil.which("python3.13") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")))
    for candidate in filter(None, candidates):
        ran = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=False
        )
        if ran.returncode == 0 and ran.stdout.strip() == "(3, 13)":
            return candidate
    pytest.skip("no Python 3.13 here (set PYTHON313): the Lambda runtime's Python is needed for this test")


@pytest.fixture(scope="module")
def built_package(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("lifecycle-build")
    make_ca(work / "ca.pem")
    command = [
        "make",
        "--no-print-directory",
        "build",
        f"VENV={sys.prefix}",
        f"BUILD_DIR={work / 'build'}",
        f"CA_BUNDLE={work / 'ca.pem'}",
    ]
    built = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    return work / "build" / "lambda"


class Function:
    """The deployed function: the built package with this deploy's migrations, run under Python 3.13."""

    def __init__(self, package: Path, work: Path, database_url: str, python: str) -> None:
        self.package, self.work, self.python = package, work, python
        self.environment = {
            "PATH": os.environ["PATH"],
            "LAMBDA_TASK_ROOT": "",
            "PREMIGRATE_DATABASE_URL": database_url,
            **{name: os.environ[name] for name in os.environ if name.startswith("AWS_")},
        }
        self.deploys = 0

    def deploy(self, extra_migrations: dict[str, str]) -> str:
        """A new function version: the package with migrations/ plus ``extra_migrations``; returns its set's
        fingerprint, which the custom resource asks for."""
        self.deploys += 1
        code = self.work / f"version-{self.deploys}"
        shutil.copytree(self.package, code)
        for name, sql in extra_migrations.items():
            (code / "migrations" / name).write_text(sql)
        self.environment["LAMBDA_TASK_ROOT"] = str(code)
        return load_folder(code / "migrations").fingerprint

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        site_packages = sysconfig.get_paths()["purelib"]
        ran = subprocess.run(
            [self.python, "-I", "-S", "-c", _HANDLER, self.environment["LAMBDA_TASK_ROOT"], site_packages],
            input=json.dumps(event),
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        return json.loads(ran.stdout.strip().splitlines()[-1])


def answer(function: Function, request_type: str, migration_set: str, physical_id: str | None = None) -> dict[str, Any]:
    inbox = ResponseInbox()
    event = cfn_event(request_type, inbox, physical_id=physical_id, migration_set=migration_set)
    returned = function.invoke(event)
    received = inbox.received()
    assert returned["Status"] == received["Status"]
    return received


def tables(db) -> list[str]:
    return [row[0] for row in db.run("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def versions(db) -> list[tuple[str | None, bool]]:
    rows = db.run(
        "SELECT version, success FROM premigrate_schema_history WHERE version IS NOT NULL ORDER BY installed_rank"
    )
    return [(version, success) for version, success in rows]


def test_create_update_failed_update_rollback_delete(built_package, tmp_path, database_url, server, aws, db) -> None:
    if server.name != "embedded":
        pytest.skip("one lifecycle is enough; it runs against the embedded server")
    function = Function(built_package, tmp_path, database_url, python313())
    applied = [("1", True), ("2", True), ("3", True), ("4", True)]

    created = answer(function, "Create", function.deploy({}))
    assert (created["Status"], created["Data"]) == (
        "SUCCESS",
        {"SchemaVersionBefore": "none", "SchemaVersionAfter": "4", "AppliedCount": "5"},  # with the repeatable
    )
    assert versions(db) == applied

    second_set = function.deploy({"V5__orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n"})
    updated = answer(function, "Update", second_set, created["PhysicalResourceId"])
    assert (updated["Status"], updated["PhysicalResourceId"]) == ("SUCCESS", created["PhysicalResourceId"])
    assert updated["Data"] == {"SchemaVersionBefore": "4", "SchemaVersionAfter": "5", "AppliedCount": "1"}
    assert versions(db) == [*applied, ("5", True)]
    schema_after_update = tables(db)
    assert "orders" in schema_after_update

    failing_set = function.deploy(
        {"V5__orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n", "V6__bad.sql": "CREATE TABLE users ();\n"}
    )
    failed = answer(function, "Update", failing_set, created["PhysicalResourceId"])
    assert failed["Status"] == "FAILED"
    assert 'V6__bad.sql:1:1: ERROR 42P07: relation "users" already exists' in failed["Reason"]
    assert versions(db) == [*applied, ("5", True)]

    # CloudFormation rolls the stack back: the resource gets its old properties before the function its old code.
    set_stack_status("UPDATE_ROLLBACK_IN_PROGRESS")
    rolled_back = answer(function, "Update", second_set, created["PhysicalResourceId"])
    assert rolled_back["Status"] == "SUCCESS"
    assert rolled_back["Reason"].startswith(
        "the stack is rolling back (UPDATE_ROLLBACK_IN_PROGRESS): premigrate changed nothing; the database stays at "
        "version 5"
    )
    assert (versions(db), tables(db)) == ([*applied, ("5", True)], schema_after_update)

    set_stack_status("DELETE_IN_PROGRESS")
    deleted = answer(function, "Delete", second_set, created["PhysicalResourceId"])
    assert (deleted["Status"], deleted["Reason"]) == ("SUCCESS", "premigrate leaves the database as it is on Delete")
    assert (versions(db), tables(db)) == ([*applied, ("5", True)], schema_after_update)
