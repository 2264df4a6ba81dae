"""template.yaml, turned into CloudFormation by the SAM translator, here, offline, and checked by cfn-lint."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from premigrate.adapters.folder import load_folder

REPO = Path(__file__).resolve().parent.parent
ENDPOINTS = {
    "SecretsManagerEndpoint": ("CreateSecretsManagerEndpoint", "secretsmanager", "Interface"),
    "CloudFormationEndpoint": ("CreateCloudFormationEndpoint", "cloudformation", "Interface"),
    "CodePipelineEndpoint": ("CreateCodePipelineEndpoint", "codepipeline", "Interface"),
    "S3GatewayEndpoint": ("CreateS3Endpoint", "s3", "Gateway"),
}


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def cloudformation(path: Path) -> dict[str, Any]:
    template = yaml_parse(path.read_text())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://premigrate-artifacts/lambda.zip"  # what sam package does
    if "Transform" not in template:
        return template
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # the translator insists on one
        return transform(template, {}, _NoManagedPolicies())


def lint_errors(template: dict[str, Any]) -> list[str]:
    return [str(match) for match in lint(json.dumps(template), regions=["eu-west-1"])]


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
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


def test_the_generated_cloudformation_passes_cfn_lint(stack) -> None:
    assert lint_errors(stack) == []


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
    assert properties["VpcConfig"]["SubnetIds"] == {"Ref": "SubnetIds"}
    condition, with_endpoints, without = properties["VpcConfig"]["SecurityGroupIds"]["Fn::If"]
    assert (condition, without) == ("HasInterfaceEndpoint", {"Ref": "SecurityGroupIds"})
    assert "${EndpointClientSecurityGroup}" in json.dumps(with_endpoints)  # the group the endpoints let in
    assert properties["Environment"]["Variables"]["PREMIGRATE_SECRET_ID"] == {"Ref": "DatabaseSecretArn"}
    assert properties["LoggingConfig"]["LogGroup"] == {"Ref": "MigrationLogGroup"}
    assert properties["Role"] == {"Fn::GetAtt": ["MigrationFunctionRole", "Arn"]}
    assert "Layers" not in properties  # powertools comes in the package, pinned by the repo
    parameters = stack["Parameters"]
    assert (parameters["FunctionTimeout"]["Default"], parameters["FunctionMemory"]["Default"]) == (900, 512)


def test_sam_local_invoke_may_point_the_function_at_a_local_database(stack) -> None:
    # sam local invoke --env-vars overrides only declared variables; empty means unset to premigrate.
    variables = stack["Resources"]["MigrationFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["PREMIGRATE_DATABASE_URL"] == ""
    assert variables["PREMIGRATE_SSLMODE"] == "" and variables["PREMIGRATE_CA_BUNDLE"] == ""
    from premigrate.service.settings import SPECS, load_config

    config = load_config("lambda", {SPECS[name].env: "" for name in ("database_url", "sslmode", "ca_bundle")})
    assert (config.database_url, config.sslmode, config.ca_bundle) == (None, None, None)


def test_tracing_is_a_parameter_that_sets_the_function_and_its_setting(stack) -> None:
    tracing = stack["Parameters"]["Tracing"]
    assert (tracing["Default"], sorted(tracing["AllowedValues"])) == ("PassThrough", ["Active", "PassThrough"])
    properties = stack["Resources"]["MigrationFunction"]["Properties"]
    assert properties["TracingConfig"] == {"Mode": {"Ref": "Tracing"}}
    environment = properties["Environment"]["Variables"]
    assert environment["PREMIGRATE_TRACING"] == {"Fn::If": ["TracingActive", "true", "false"]}
    assert stack["Conditions"]["TracingActive"] == {"Fn::Equals": [{"Ref": "Tracing"}, "Active"]}
    sends = statements(stack)["SendTraces"]
    assert sends["_condition"] == "TracingActive"
    assert set(sends["Action"]) == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


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
    # Reading the status of the calling stack (a rollback): any stack of this account and region, read only.
    describe = by_sid["ReadTheCallingStacksStatus"]
    assert describe["Action"] == "cloudformation:DescribeStacks"
    assert describe["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/*/*"
    }
    wildcards = {sid for sid, statement in by_sid.items() if statement["Resource"] == "*"}
    # Only where AWS allows no resource: Lambda's ENI calls, CodePipeline's job results and X-Ray.
    assert wildcards == {"NetworkInterfacesInTheVpc", "ReportCodePipelineJobs", "SendTraces"}
    actions = [a for s in by_sid.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not any(action.endswith("*") for action in actions)


def test_the_migration_set_hash_is_the_fingerprint_of_migrations_not_a_parameter(stack) -> None:
    # A parameter was re-offered by sam deploy --guided with its old value: the function changed, the
    # resource did not. The committed literal is the set's own fingerprint (make fingerprint writes it).
    assert "MigrationSetHash" not in stack["Parameters"]
    properties = stack["Resources"]["DatabaseMigration"]["Properties"]
    assert properties["MigrationSetHash"] == load_folder(REPO / "migrations").fingerprint
    assert '"  # premigrate:fingerprint' in (REPO / "template.yaml").read_text()  # the line make fingerprint edits


def test_custom_resource_never_waits_an_hour(stack) -> None:
    migration = stack["Resources"]["DatabaseMigration"]
    assert migration["Type"] == "Custom::DatabaseMigration"
    properties = migration["Properties"]
    assert properties["ServiceToken"] == {"Fn::GetAtt": ["MigrationFunction", "Arn"]}
    assert properties["ServiceTimeout"] == {"Ref": "MigrationServiceTimeout"}
    timeout = stack["Parameters"]["MigrationServiceTimeout"]
    assert timeout["Default"] == 1200 and timeout["MaxValue"] <= 3600
    assert timeout["Default"] > stack["Parameters"]["FunctionTimeout"]["MaxValue"]  # the function answers first


def test_the_sample_migrations_deploy_nowhere_unless_asked(stack) -> None:
    parameter = stack["Parameters"]["MigrateOnDeploy"]
    assert (parameter["Default"], sorted(parameter["AllowedValues"])) == ("false", ["false", "true"])
    assert stack["Conditions"]["Migrate"] == {"Fn::Equals": [{"Ref": "MigrateOnDeploy"}, "true"]}
    assert stack["Resources"]["DatabaseMigration"]["Condition"] == "Migrate"
    assert stack["Outputs"]["SchemaVersion"]["Condition"] == "Migrate"
    assert stack["Outputs"]["SchemaVersion"]["Value"] == {"Fn::GetAtt": ["DatabaseMigration", "SchemaVersionAfter"]}
    # Every other resource exists either way: the function serves application stacks and pipelines.
    migrating = {name for name, resource in stack["Resources"].items() if resource.get("Condition") == "Migrate"}
    assert migrating == {"DatabaseMigration", "EndpointsReady"}
    assert "Condition" not in stack["Resources"]["MigrationFunction"]


def test_one_toggle_per_vpc_endpoint(stack) -> None:
    found = {name: r for name, r in stack["Resources"].items() if r["Type"] == "AWS::EC2::VPCEndpoint"}
    assert set(found) == set(ENDPOINTS)
    for name, (parameter, service, kind) in ENDPOINTS.items():
        assert stack["Parameters"][parameter]["Default"] == "false"
        condition = found[name]["Condition"]
        assert stack["Conditions"][condition] == {"Fn::Equals": [{"Ref": parameter}, "true"]}
        properties = found[name]["Properties"]
        assert properties["ServiceName"] == {"Fn::Sub": f"com.amazonaws.${{AWS::Region}}.{service}"}
        assert properties["VpcEndpointType"] == kind
        if kind == "Interface":
            assert properties["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}]
    assert found["S3GatewayEndpoint"]["Properties"]["RouteTableIds"] == {"Ref": "RouteTableIds"}


def test_interface_endpoints_let_in_https_from_the_function_only(stack) -> None:
    resources = stack["Resources"]
    (ingress,) = resources["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", 443, 443)
    assert ingress["SourceSecurityGroupId"] == {"Ref": "EndpointClientSecurityGroup"}
    assert "CidrIp" not in ingress
    for name in ("EndpointSecurityGroup", "EndpointClientSecurityGroup"):
        assert resources[name]["Condition"] == "HasInterfaceEndpoint"
    assert len(stack["Conditions"]["HasInterfaceEndpoint"]["Fn::Or"]) == 3  # every interface endpoint, not S3


def test_the_migration_runs_after_every_endpoint_the_stack_creates_and_is_deleted_before_them(stack) -> None:
    resources = stack["Resources"]
    assert resources["DatabaseMigration"]["DependsOn"] == "EndpointsReady"
    handle = resources["EndpointsReady"]
    assert handle["Type"] == "AWS::CloudFormation::WaitConditionHandle"
    references = {json.dumps(value) for value in handle["Metadata"].values()}
    for name in ENDPOINTS:
        condition = resources[name]["Condition"]
        assert json.dumps({"Fn::If": [condition, {"Ref": name}, ""]}) in references
    # What cfn-lint says of the plain way (DependsOn naming a resource whose condition may be false) is
    # what CloudFormation would refuse; the handle is clean (test_the_generated_cloudformation_passes_cfn_lint).
    direct = copy.deepcopy(stack)
    direct["Resources"]["DatabaseMigration"]["DependsOn"] = list(ENDPOINTS)
    assert any("E3005" in error for error in lint_errors(direct))


def test_log_group_outlives_the_stack_and_names_fit_any_stack_name(stack) -> None:
    log_group = stack["Resources"]["MigrationLogGroup"]
    assert (log_group["DeletionPolicy"], log_group["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert "FunctionName" not in stack["Resources"]["MigrationFunction"]["Properties"]  # CloudFormation's fits
    longest = "s" * 128  # CloudFormation's longest stack name
    name = log_group["Properties"]["LogGroupName"]["Fn::Sub"].replace("${AWS::StackName}", longest)
    assert name == f"/aws/lambda/premigrate/{longest}" and len(name) <= 512
    export = stack["Outputs"]["MigrationFunctionArn"]["Export"]["Name"]["Fn::Sub"].replace("${AWS::StackName}", longest)
    assert len(export) <= 255  # no documented limit: CloudFormation's for other names
    # No other name is set, so CloudFormation makes each one fit (the invoke config names the function it is for).
    named = {
        (resource["Type"], key): value
        for resource in stack["Resources"].values()
        for key, value in resource.get("Properties", {}).items()
        if key.endswith("Name") and key not in ("ServiceName", "MetricName")  # a service and a metric: no names
    }
    assert named == {
        ("AWS::Logs::LogGroup", "LogGroupName"): log_group["Properties"]["LogGroupName"],
        ("AWS::Lambda::EventInvokeConfig", "FunctionName"): {"Ref": "MigrationFunction"},
    }


def test_outputs_name_the_function(stack) -> None:
    assert stack["Outputs"]["MigrationFunctionArn"]["Value"] == {"Fn::GetAtt": ["MigrationFunction", "Arn"]}
    assert stack["Outputs"]["MigrationFunctionArn"]["Export"]["Name"] == {
        "Fn::Sub": "${AWS::StackName}-MigrationFunctionArn"
    }
    assert stack["Outputs"]["MigrationFunctionName"]["Value"] == {"Ref": "MigrationFunction"}


def test_sam_build_builds_the_function_with_the_makefile(stack) -> None:
    # sam build runs `make build-MigrationFunction` in the repository's root (tests/test_deploy_build.py).
    function = stack["Resources"]["MigrationFunction"]
    assert function["Metadata"] == {"BuildMethod": "makefile", "ContextPath": ".", "WorkingDirectory": "."}
    assert "build-MigrationFunction:" in (REPO / "Makefile").read_text()


def test_an_invocation_that_dies_without_answering_is_kept_and_alarms(stack) -> None:
    resources = stack["Resources"]
    (config,) = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    assert config["Properties"]["MaximumRetryAttempts"] == 0
    assert config["Properties"]["DestinationConfig"]["OnFailure"] == {
        "Destination": {"Fn::GetAtt": ["FailedInvocationQueue", "Arn"]}
    }
    assert statements(stack)["KeepFailedInvocations"] == {
        "Sid": "KeepFailedInvocations",
        "Effect": "Allow",
        "Action": "sqs:SendMessage",
        "Resource": {"Fn::GetAtt": ["FailedInvocationQueue", "Arn"]},
    }
    alarm = resources["FailedInvocationAlarm"]["Properties"]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["FailedInvocationQueue", "QueueName"]}}
    ]
    assert (alarm["MetricName"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "ApproximateNumberOfMessagesVisible",
        "GreaterThanThreshold",
        0,
    )
    assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
