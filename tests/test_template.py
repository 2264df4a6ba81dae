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
        if resource["Type"] == "AWS::Serverless::StateMachine":
            resource["Properties"]["DefinitionUri"] = "s3://premigrate-artifacts/fleet.asl.json"  # likewise
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


# ---- The fleet (EnableFleet; docs/fleet.md) --------------------------------------------------------------

FLEET_RESOURCES = {
    "FleetBucket",
    "FleetBucketPolicy",
    "FleetStateMachineRole",
    "FleetStateMachine",
    "FleetRunItselfPolicy",
    "FleetStartPolicy",
}
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


def fleet_definition() -> dict[str, Any]:
    return json.loads((REPO / "statemachine" / "fleet.asl.json").read_text())


def every_state(states: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Each state of the definition, those inside Map states' item processors included, by path."""
    found = []
    for name, state in states.items():
        found.append((f"{path}{name}", state))
        if "ItemProcessor" in state:
            found += every_state(state["ItemProcessor"]["States"], f"{path}{name}/")
    return found


def test_the_fleet_is_opt_in(stack) -> None:
    parameter = stack["Parameters"]["EnableFleet"]
    assert (parameter["Default"], sorted(parameter["AllowedValues"])) == ("false", ["false", "true"])
    assert stack["Conditions"]["Fleet"] == {"Fn::Equals": [{"Ref": "EnableFleet"}, "true"]}
    fleet = {name for name, resource in stack["Resources"].items() if resource.get("Condition") == "Fleet"}
    assert fleet == FLEET_RESOURCES
    assert {name for name, output in stack["Outputs"].items() if output.get("Condition") == "Fleet"} == {
        "FleetStateMachineArn",
        "FleetBucketName",
    }
    by_sid = statements(stack)
    fleet_statements = {
        sid for sid, statement in by_sid.items() if statement.get("_condition") in ("Fleet", "HasFleetKmsKey")
    }
    assert fleet_statements == {
        "ReadTheFleetSecrets",
        "DecryptTheFleetSecrets",
        "ReadTheFleetManifests",
        "KeepTheFleetRuns",
        "ListTheFleetRuns",
    }
    variables = stack["Resources"]["MigrationFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["PREMIGRATE_FLEET_BUCKET"] == {"Fn::If": ["Fleet", {"Ref": "FleetBucket"}, ""]}


def test_the_function_reads_only_the_fleets_secrets_manifests_and_runs(stack) -> None:
    by_sid = statements(stack)
    assert by_sid["ReadTheFleetSecrets"]["Action"] == "secretsmanager:GetSecretValue"
    assert by_sid["ReadTheFleetSecrets"]["Resource"] == {"Fn::Sub": "${FleetSecretArnPrefix}*"}
    assert by_sid["DecryptTheFleetSecrets"]["Resource"] == {"Ref": "FleetSecretKmsKeyArn"}
    assert "kms:ViaService" in by_sid["DecryptTheFleetSecrets"]["Condition"]["StringEquals"]
    assert by_sid["ReadTheFleetManifests"]["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert by_sid["ReadTheFleetManifests"]["Resource"] == {"Fn::Sub": "${FleetBucket.Arn}/manifests/*"}
    assert by_sid["KeepTheFleetRuns"]["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert by_sid["KeepTheFleetRuns"]["Resource"] == {"Fn::Sub": "${FleetBucket.Arn}/runs/*"}
    assert by_sid["ListTheFleetRuns"]["Condition"] == {"StringLike": {"s3:prefix": "runs/*"}}
    start = stack["Resources"]["FleetStartPolicy"]["Properties"]
    assert start["Roles"] == [{"Ref": "MigrationFunctionRole"}]
    (statement,) = start["PolicyDocument"]["Statement"]
    assert (statement["Action"], statement["Resource"]) == ("states:StartExecution", {"Ref": "FleetStateMachine"})
    # The prefix must name at least the first character of the secrets: "…:secret:" alone would be every secret.
    from test_deploy_parameters import allowed, failed_rules

    assert allowed("FleetSecretArnPrefix", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/tenants/")
    for bad in (
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:*",
        "*",
    ):
        assert not allowed("FleetSecretArnPrefix", bad), bad
    assert set(failed_rules(EnableFleet="true")) == {"FleetNeedsItsSecrets"}
    assert (
        failed_rules(EnableFleet="true", FleetSecretArnPrefix="arn:aws:secretsmanager:eu-west-1:123456789012:secret:t/")
        == {}
    )


def test_the_state_machine_role_is_least_privilege(stack) -> None:
    role = stack["Resources"]["FleetStateMachineRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert "ManagedPolicyArns" not in role
    (policy,) = role["Policies"]
    found = {s["Sid"]: (s["Action"], s["Resource"]) for s in policy["PolicyDocument"]["Statement"]}
    assert found == {
        "InvokeTheFunction": ("lambda:InvokeFunction", {"Fn::GetAtt": ["MigrationFunction", "Arn"]}),
        "ReadTheRunItems": ("s3:GetObject", {"Fn::Sub": "${FleetBucket.Arn}/runs/*"}),
        "WriteTheRunResults": (
            ["s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
            {"Fn::Sub": "${FleetBucket.Arn}/runs/*"},
        ),
    }
    itself = stack["Resources"]["FleetRunItselfPolicy"]["Properties"]
    assert itself["Roles"] == [{"Ref": "FleetStateMachineRole"}]
    start, watch = itself["PolicyDocument"]["Statement"]
    assert (start["Action"], start["Resource"]) == ("states:StartExecution", {"Ref": "FleetStateMachine"})
    assert watch["Action"] == ["states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"]
    assert all(":execution:${FleetStateMachine.Name}" in r["Fn::Sub"] for r in watch["Resource"])
    everything = json.dumps([policy, itself])
    assert '"*"' not in everything and ':*"' not in everything.replace("${FleetStateMachine.Name}:*", "")


def test_the_state_machine_is_the_repositorys_definition(stack) -> None:
    machine = stack["Resources"]["FleetStateMachine"]
    assert machine["Type"] == "AWS::StepFunctions::StateMachine"
    properties = machine["Properties"]
    assert properties["StateMachineType"] == "STANDARD"
    assert properties["RoleArn"] == {"Fn::GetAtt": ["FleetStateMachineRole", "Arn"]}
    template = yaml_parse((REPO / "template.yaml").read_text())
    assert template["Resources"]["FleetStateMachine"]["Properties"]["DefinitionUri"] == "statemachine/fleet.asl.json"
    text = (REPO / "statemachine" / "fleet.asl.json").read_text()
    import re

    assert (
        set(re.findall(r"\$\{(\w+)\}", text))
        == set(properties["DefinitionSubstitutions"])
        == {"FunctionArn", "FleetBucket"}
    )


def test_the_definition_retries_only_lambda_service_errors_and_lock_waits() -> None:
    states = every_state(fleet_definition()["States"])
    tasks = [(path, state) for path, state in states if state["Type"] == "Task"]
    assert len(tasks) == 6  # Prepare, PlanDatabase, CheckPlan, MigrateDatabase, Summarize, Answer
    for path, state in tasks:
        assert state["Resource"] == "arn:aws:states:::lambda:invoke", path
        assert state["Parameters"]["FunctionName"] == "${FunctionArn}", path
        (retry,) = state["Retry"]
        assert set(retry["ErrorEquals"]) == LAMBDA_SERVICE_ERRORS, path
        assert retry["MaxAttempts"] <= 6 and retry["MaxDelaySeconds"] <= 60, path
    assert not [path for path, state in states if state["Type"] != "Task" and "Retry" in state]
    # A lock wait is tried again by a bounded loop, with a new request id (the attempt is in it).
    by_path = dict(states)
    verdict = by_path["Wave/Server/MigrateVerdict"]
    lock = next(choice for choice in verdict["Choices"] if "And" in choice)
    assert {"Variable": "$.result.answer.error_kind", "StringEquals": "lock"} in lock["And"]
    assert {"Variable": "$.attempt", "NumericLessThan": 2} in lock["And"]
    assert verdict["Default"] == "MigrationFailed"  # any other error fails the database: never retried
    request_id = by_path["Wave/Server/MigrateDatabase"]["Parameters"]["Payload"]["request_id.$"]
    assert all(
        part in request_id for part in ("$.rollout", "$$.Execution.RedriveCount", "$.database.name", "$.attempt")
    )


def test_every_database_is_a_distributed_child_and_every_failure_reaches_the_answer() -> None:
    definition = fleet_definition()
    states = every_state(definition["States"])
    maps = [(path, state) for path, state in states if state["Type"] == "Map"]
    assert [path for path, _ in maps] == ["Plan", "Wave", "Wave/Server"]
    for path, state in maps:
        assert state["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}, path
        assert state["ItemReader"]["Parameters"]["Bucket"] == "${FleetBucket}", path
        assert state["ResultWriter"]["Parameters"]["Bucket"] == "${FleetBucket}", path
        assert "MaxConcurrencyPath" in state, path
    assert definition["States"]["Plan"]["ToleratedFailurePercentage"] == 100  # every database planned
    assert definition["States"]["Wave"]["ToleratedFailurePercentage"] == 0  # a group over its budget stops the wave
    assert definition["States"]["Wave"]["ItemProcessor"]["States"]["Server"]["ToleratedFailurePercentagePath"]
    # Each database's failure is a Fail state, so the Map Run counts it against the budget.
    for path in ("Plan/PlanVerdict", "Wave/Server/MigrateVerdict"):
        default = dict(states)[path]["Default"]
        assert dict(states)[path.rsplit("/", 1)[0] + "/" + default]["Type"] == "Fail"
    top = definition["States"]
    for name in ("Prepare", "Plan", "CheckPlan", "Wave", "Summarize"):
        (catch,) = top[name]["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] in ("Summarize", "Answer"), name
    assert top["Summarize"]["Next"] == "Answer" and top["Answer"]["Next"] == "Done"


def test_the_fleet_bucket_is_private_versioned_and_forgets_old_runs(stack) -> None:
    bucket = stack["Resources"]["FleetBucket"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    properties = bucket["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}  # a rollout pins its manifest's version
    assert all(properties["PublicAccessBlockConfiguration"].values())
    runs = next(rule for rule in properties["LifecycleConfiguration"]["Rules"] if rule["Prefix"] == "runs/")
    assert runs["ExpirationInDays"] == {"Ref": "FleetRunRetentionDays"}
    (deny,) = stack["Resources"]["FleetBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_definition_passes_cfn_lints_state_machine_schema() -> None:
    # The template names the definition's file (DefinitionUri), which cfn-lint does not open: inlined here.
    def machine(definition: dict[str, Any]) -> dict[str, Any]:
        substitutions = {"FunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f", "FleetBucket": "b"}
        properties = {"RoleArn": "arn:aws:iam::123456789012:role/r", "Definition": definition}
        properties["DefinitionSubstitutions"] = substitutions
        resources = {"Fleet": {"Type": "AWS::StepFunctions::StateMachine", "Properties": properties}}
        return {"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources}

    assert lint_errors(machine(fleet_definition())) == []
    broken = fleet_definition()
    innermost = broken["States"]["Wave"]["ItemProcessor"]["States"]["Server"]["ItemProcessor"]["States"]
    innermost["MigrateDatabase"]["Retry"][0]["BackoffRate"] = "twice"
    # The schema is checked down to the innermost Map's states: the nested Distributed Maps are what it accepts.
    assert any("E3601" in error for error in lint_errors(machine(broken)))
