"""examples/: an application stack that rolls out only after the migration, and a pipeline that starts."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from premigrate.adapters.folder import load_folder
from test_template import cloudformation, lint_errors

REPO = Path(__file__).resolve().parent.parent
SUBSTITUTIONS = {
    "AWS::StackName": "app",
    "AWS::Region": "eu-west-1",
    "BuildBucket": "builds",
    "AppVersion": "1.2.3",
    "ExpectedSchemaVersion": "1",
}


@pytest.fixture(scope="module")
def app() -> dict[str, Any]:
    return cloudformation(REPO / "examples" / "app-stack.yaml")


@pytest.fixture(scope="module")
def pipeline() -> dict[str, Any]:
    return cloudformation(REPO / "examples" / "pipeline.yaml")


def test_examples_pass_cfn_lint(app, pipeline) -> None:
    assert lint_errors(app) == [] and lint_errors(pipeline) == []


def test_app_imports_the_function_that_the_premigrate_stack_exports(app) -> None:
    migration = app["Resources"]["DatabaseMigration"]
    imported = migration["Properties"]["ServiceToken"]["Fn::ImportValue"]["Fn::Sub"]
    exported = cloudformation(REPO / "template.yaml")["Outputs"]["MigrationFunctionArn"]["Export"]["Name"]["Fn::Sub"]
    assert imported.replace("${PremigrateStackName}", "app") == exported.replace("${AWS::StackName}", "app")
    assert migration["Properties"]["ServiceTimeout"] < 3600
    # The pipeline passes the set's fingerprint; the function fails the deploy when it is not its set's.
    assert migration["Properties"]["MigrationSetHash"] == {"Ref": "MigrationSetHash"}
    pattern = app["Parameters"]["MigrationSetHash"]["AllowedPattern"]
    assert re.fullmatch(pattern, load_folder(REPO / "migrations").fingerprint)
    assert not re.fullmatch(pattern, "none") and "Default" not in app["Parameters"]["MigrationSetHash"]


def test_app_rolls_out_only_after_the_migration_and_only_working_instances(app) -> None:
    resources = app["Resources"]
    assert resources["AppAutoScalingGroup"]["DependsOn"] == "DatabaseMigration"
    assert resources["LaunchTemplate"]["DependsOn"] == "DatabaseMigration"
    group = resources["AppAutoScalingGroup"]
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["WaitOnResourceSignals"] is True
    assert group["CreationPolicy"]["ResourceSignal"]["Count"] == int(group["Properties"]["MinSize"])


def test_instances_may_read_their_build_and_nothing_else(app) -> None:
    resources = app["Resources"]
    (policy,) = resources["InstanceRole"]["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "s3:GetObject"
    assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${BuildBucket}/app-${AppVersion}.tar.gz"}
    assert resources["InstanceProfile"]["Properties"]["Roles"] == [{"Ref": "InstanceRole"}]
    data = resources["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}}


def user_data(app: dict[str, Any], root: Path) -> str:
    """The instance's script as it would run, with /opt under root."""
    script = app["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    for name, value in SUBSTITUTIONS.items():
        script = script.replace("${" + name + "}", value)
    assert "${" not in script
    return script.replace("/opt/", f"{root}/opt/")


def run_user_data(
    app: dict[str, Any], tmp_path: Path, app_is_active: bool, database_url: str
) -> tuple[int, str, list[str]]:
    """Runs the user data with stand-ins for dnf, aws, systemctl, sleep and cfn-signal that log their calls;
    its psql is the real one, asking the test database."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    signal = tmp_path / "opt" / "aws" / "bin" / "cfn-signal"
    for folder in (bin_dir, signal.parent):
        folder.mkdir(parents=True, exist_ok=True)
    payload = tmp_path / "payload"
    payload.mkdir(exist_ok=True)
    (payload / "server.js").write_text("app")
    (payload / "env").write_text(f"DATABASE_URL='{database_url}'\n")
    archive = tmp_path / "app.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(payload), "."], check=True)
    stand_ins = {
        bin_dir / "dnf": 'echo "dnf $*" >> LOG',
        bin_dir / "aws": 'echo "aws $*" >> LOG; cp ARCHIVE "$4"',
        bin_dir / "systemctl": 'echo "systemctl $*" >> LOG; [ "$1" != is-active ] || ' + str(app_is_active).lower(),
        bin_dir / "sleep": 'echo "sleep $*" >> LOG',
        signal: 'echo "cfn-signal $*" >> LOG',
    }
    for path, body in stand_ins.items():
        path.write_text("#!/bin/bash\n" + body.replace("LOG", str(log)).replace("ARCHIVE", str(archive)) + "\n")
        path.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    script = user_data(app, tmp_path)
    ran = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    return ran.returncode, ran.stderr, log.read_text().splitlines()


def migrated(database_url: str, folder: Path) -> None:
    from premigrate.service import Request, Service, load_config

    config = load_config("cli", {}, {"database_url": database_url, "migrations": str(folder)})
    assert Service(config).run(Request("migrate")).ok


def test_user_data_installs_the_build_and_signals_success(app, tmp_path, database_url, write_migrations) -> None:
    migrated(database_url, write_migrations({"V1__users.sql": "CREATE TABLE users ();\n"}))
    status, stderr, calls = run_user_data(app, tmp_path, True, database_url)
    assert status == 0, stderr
    assert (tmp_path / "opt" / "app" / "server.js").read_text() == "app"  # /opt/app was created for it
    assert "aws s3 cp s3://builds/app-1.2.3.tar.gz" in calls[2]
    assert not any(call.startswith("sleep") for call in calls)  # the schema was there: no wait
    assert calls[-1] == "cfn-signal --exit-code 0 --stack app --resource AppAutoScalingGroup --region eu-west-1"
    script = json.dumps(app["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"])
    assert "npm run migrate" not in script.split("Now the schema is ready")[1]


def test_user_data_signals_failure_when_the_app_does_not_start(app, tmp_path, database_url, write_migrations) -> None:
    migrated(database_url, write_migrations({"V1__users.sql": "CREATE TABLE users ();\n"}))
    status, _, calls = run_user_data(app, tmp_path, False, database_url)
    assert status != 0
    signals = [call for call in calls if call.startswith("cfn-signal")]
    assert signals == ["cfn-signal --exit-code 1 --stack app --resource AppAutoScalingGroup --region eu-west-1"]


def test_pipeline_migrates_before_it_deploys(pipeline) -> None:
    properties = pipeline["Resources"]["Pipeline"]["Properties"]
    stages = [stage["Name"] for stage in properties["Stages"]]
    assert stages.index("Migrate") == stages.index("Deploy") - 1
    (migrate,) = properties["Stages"][stages.index("Migrate")]["Actions"]
    assert migrate["ActionTypeId"]["Provider"] == "Lambda"
    assert json.loads(migrate["Configuration"]["UserParameters"])["migrations_path"] == "db/migrations"


def test_pipeline_starts_when_the_source_zip_is_uploaded(pipeline) -> None:
    resources = pipeline["Resources"]
    (source,) = resources["Pipeline"]["Properties"]["Stages"][0]["Actions"]
    assert source["Configuration"]["PollForSourceChanges"] is False  # so an event must start it
    bucket = resources["SourceBucket"]["Properties"]
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"]["EventBridgeEnabled"] is True
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"  # the S3 source action needs versions
    assert source["Configuration"]["S3Bucket"] == {"Ref": "SourceBucket"}
    rule = resources["SourceChangedRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [{"Ref": "SourceBucket"}]}, "object": {"key": [{"Ref": "SourceKey"}]}},
    }
    assert source["Configuration"]["S3ObjectKey"] == {"Ref": "SourceKey"}
    (target,) = rule["Targets"]
    pipeline_arn = {"Fn::Sub": "arn:${AWS::Partition}:codepipeline:${AWS::Region}:${AWS::AccountId}:${Pipeline}"}
    assert target["Arn"] == pipeline_arn
    assert target["RoleArn"] == {"Fn::GetAtt": ["SourceChangedRole", "Arn"]}
    role = resources["SourceChangedRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}
    (statement,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert (statement["Action"], statement["Resource"]) == ("codepipeline:StartPipelineExecution", pipeline_arn)


def test_an_instance_never_starts_on_a_database_that_lacks_its_schema(
    app, tmp_path, database_url, write_migrations
) -> None:
    migrated(database_url, write_migrations({"V0_9__older.sql": "SELECT 1;\n"}))  # below the expected 1
    status, stderr, calls = run_user_data(app, tmp_path, True, database_url)
    assert status != 0
    assert "the database lacks schema version 1" in stderr
    assert sum(call.startswith("sleep") for call in calls) == 60  # it waited, then gave up
    assert not any(call.startswith("systemctl restart") for call in calls)
    assert calls[-1] == "cfn-signal --exit-code 1 --stack app --resource AppAutoScalingGroup --region eu-west-1"


def test_the_instance_asks_what_premigrate_ready_asks(app) -> None:
    from premigrate.engine.readiness import READY_BY_VERSION_SQL

    script = app["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    asked = script.split("<<'SQL' || true\n", 1)[1].split("\nSQL\n", 1)[0]
    assert asked.split() == READY_BY_VERSION_SQL.split()


def test_the_contract_half_runs_once_the_rolling_update_is_over(app) -> None:
    resources = app["Resources"]
    before, after = resources["DatabaseMigration"], resources["DatabaseMigrationAfterRollout"]
    assert before["Properties"]["Phase"] == "before-rollout"
    assert after["Properties"]["Phase"] == "after-rollout"
    assert after["DependsOn"] == "AppAutoScalingGroup"
    assert after["Properties"]["MigrationSetHash"] == before["Properties"]["MigrationSetHash"]
    assert "DatabaseMigration" in resources["AppAutoScalingGroup"]["DependsOn"]


def test_the_pipeline_contracts_after_it_deploys(pipeline) -> None:
    stages = pipeline["Resources"]["Pipeline"]["Properties"]["Stages"]
    names = [stage["Name"] for stage in stages]
    assert names[-3:] == ["Migrate", "Deploy", "MigrateAfterRollout"]
    phases = [
        json.loads(stages[names.index(name)]["Actions"][0]["Configuration"]["UserParameters"])["phase"]
        for name in ("Migrate", "MigrateAfterRollout")
    ]
    assert phases == ["before-rollout", "after-rollout"]


def test_the_pipeline_checks_the_migrations_before_it_migrates(pipeline) -> None:
    resources = pipeline["Resources"]
    stages = [stage["Name"] for stage in resources["Pipeline"]["Properties"]["Stages"]]
    assert stages.index("Check") == stages.index("Migrate") - 1
    spec = yaml_parse(resources["CheckProject"]["Properties"]["Source"]["BuildSpec"])
    assert spec["phases"]["build"]["commands"] == ["premigrate check --migrations db/migrations"]
    variables = {
        v["Name"]: v["Value"] for v in resources["CheckProject"]["Properties"]["Environment"]["EnvironmentVariables"]
    }
    assert variables["PREMIGRATE_SECRET_ID"] == {"Ref": "DatabaseSecretArn"}  # read-only: what is pending, table sizes
    (reads,) = [
        s
        for s in resources["CheckRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        if s["Action"] == "secretsmanager:GetSecretValue"
    ]
    assert reads["Resource"] == {"Ref": "DatabaseSecretArn"}
