"""template.yaml and the examples, turned into CloudFormation by the SAM translator, here, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

REPO = Path(__file__).resolve().parent.parent


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def cloudformation(path: Path) -> dict[str, Any]:
    template = yaml_parse(path.read_text())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://premigrate-artifacts/lambda.zip"  # what sam package does
    return transform(template, {}, _NoManagedPolicies()) if "Transform" in template else template


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the translator insists on one
        return cloudformation(REPO / "template.yaml")


def statements(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The role's statements by Sid, conditional ones unwrapped."""
    (policy,) = stack["Resources"]["MigrationFunctionRole"]["Properties"]["Policies"]
    found = {}
    for entry in policy["PolicyDocument"]["Statement"]:
        statement = entry
        if "Fn::If" in entry:
            condition, chosen, _ = entry["Fn::If"]
            statement = {**chosen, "_condition": condition}
        found[statement["Sid"]] = statement
    return found


def test_function_runs_python_313_on_arm64_in_the_vpc(stack) -> None:
    function = stack["Resources"]["MigrationFunction"]
    properties = function["Properties"]
    assert function["Type"] == "AWS::Lambda::Function"
    assert properties["Handler"] == "premigrate.lambda_handler.lambda_handler"
    assert (properties["Runtime"], properties["Architectures"]) == ("python3.13", ["arm64"])
    assert properties["Timeout"] == {"Ref": "FunctionTimeout"} and properties["MemorySize"] == {"Ref": "FunctionMemory"}
    # No reservation unless asked for (the lock makes runs take turns); never a retry of an answered caller.
    assert properties["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert stack["Parameters"]["ReservedConcurrency"]["Default"] == ""
    (invoke_config,) = [r for r in stack["Resources"].values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 0
    assert invoke_config["Properties"]["MaximumEventAgeInSeconds"] == 3600
    assert properties["VpcConfig"] == {
        "SubnetIds": {"Ref": "SubnetIds"},
        "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
    }
    assert properties["Environment"]["Variables"]["PREMIGRATE_SECRET_ID"] == {"Ref": "DatabaseSecretArn"}
    assert properties["LoggingConfig"]["LogGroup"] == {"Ref": "MigrationLogGroup"}
    assert properties["Role"] == {"Fn::GetAtt": ["MigrationFunctionRole", "Arn"]}
    assert "Layers" not in properties  # powertools comes in the package, pinned by the repo
    assert stack["Resources"]["MigrationLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    parameters = stack["Parameters"]
    assert (parameters["FunctionTimeout"]["Default"], parameters["FunctionMemory"]["Default"]) == (900, 512)


def test_role_is_least_privilege(stack) -> None:
    role = stack["Resources"]["MigrationFunctionRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    by_sid = statements(stack)
    assert by_sid["ReadTheDatabaseSecret"]["Action"] == "secretsmanager:GetSecretValue"
    assert by_sid["ReadTheDatabaseSecret"]["Resource"] == {"Ref": "DatabaseSecretArn"}
    assert by_sid["DecryptTheDatabaseSecret"]["Resource"] == {"Ref": "DatabaseSecretKmsKeyArn"}
    assert by_sid["DecryptTheDatabaseSecret"]["_condition"] == "HasKmsKey"
    assert by_sid["WriteItsOwnLogs"]["Resource"] == {"Fn::GetAtt": ["MigrationLogGroup", "Arn"]}
    assert by_sid["ConnectWithIamAuth"]["_condition"] == "UseIamAuth"
    assert "${DatabaseResourceId}/${IamDatabaseUser}" in by_sid["ConnectWithIamAuth"]["Resource"]["Fn::Sub"]
    assert set(by_sid["ReportCodePipelineJobs"]["Action"]) == {
        "codepipeline:PutJobSuccessResult",
        "codepipeline:PutJobFailureResult",
    }
    wildcards = {sid for sid, statement in by_sid.items() if statement["Resource"] == "*"}
    # Only where AWS allows no resource: Lambda's ENI calls and CodePipeline's job results.
    assert wildcards == {"NetworkInterfacesInTheVpc", "ReportCodePipelineJobs"}
    actions = [a for s in by_sid.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not any(action.endswith("*") for action in actions)


def test_custom_resource_migrates_when_the_set_changes_and_never_waits_an_hour(stack) -> None:
    migration = stack["Resources"]["DatabaseMigration"]
    assert migration["Type"] == "Custom::DatabaseMigration"
    properties = migration["Properties"]
    assert properties["ServiceToken"] == {"Fn::GetAtt": ["MigrationFunction", "Arn"]}
    assert properties["MigrationSetHash"] == {"Ref": "MigrationSetHash"}
    assert properties["ServiceTimeout"] == {"Ref": "MigrationServiceTimeout"}
    timeout = stack["Parameters"]["MigrationServiceTimeout"]
    assert timeout["Default"] == 1200 and timeout["MaxValue"] <= 3600
    assert timeout["Default"] > stack["Parameters"]["FunctionTimeout"]["MaxValue"]  # the function answers first


def test_vpc_endpoints_only_when_asked(stack) -> None:
    endpoints = {name: r for name, r in stack["Resources"].items() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    assert set(endpoints) == {"SecretsManagerEndpoint", "CodePipelineEndpoint", "S3GatewayEndpoint"}
    assert {r["Condition"] for r in endpoints.values()} == {"CreateEndpoints"}
    assert endpoints["S3GatewayEndpoint"]["Properties"]["VpcEndpointType"] == "Gateway"


def test_outputs_name_the_function(stack) -> None:
    assert stack["Outputs"]["MigrationFunctionArn"]["Value"] == {"Fn::GetAtt": ["MigrationFunction", "Arn"]}
    assert stack["Outputs"]["MigrationFunctionName"]["Value"] == {"Ref": "MigrationFunction"}


def test_example_app_rolls_out_only_after_the_migration() -> None:
    app = cloudformation(REPO / "examples" / "app-stack.yaml")["Resources"]
    assert app["DatabaseMigration"]["Type"] == "Custom::DatabaseMigration"
    assert app["DatabaseMigration"]["Properties"]["ServiceTimeout"] < 3600
    assert app["AppAutoScalingGroup"]["DependsOn"] == "DatabaseMigration"
    assert app["LaunchTemplate"]["DependsOn"] == "DatabaseMigration"
    user_data = json.dumps(app["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"])
    assert "npm run migrate" not in user_data.split("Now the schema is ready")[1]


def test_example_pipeline_migrates_before_it_deploys() -> None:
    pipeline = cloudformation(REPO / "examples" / "pipeline.yaml")["Resources"]["Pipeline"]["Properties"]
    stages = [stage["Name"] for stage in pipeline["Stages"]]
    assert stages.index("Migrate") == stages.index("Deploy") - 1
    (migrate,) = pipeline["Stages"][stages.index("Migrate")]["Actions"]
    assert migrate["ActionTypeId"]["Provider"] == "Lambda"
    assert json.loads(migrate["Configuration"]["UserParameters"])["migrations_path"] == "db/migrations"
