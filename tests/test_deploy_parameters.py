"""template.yaml refuses the parameters that would deploy a function that cannot work.

The Rules are evaluated here as CloudFormation does before it creates anything (only the functions a Rule
may use are known: any other fails the test), and each AllowedPattern is matched as a whole value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = yaml_parse((REPO / "template.yaml").read_text())
REQUIRED = {
    "DatabaseSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/app/db-AbC123",
    "SubnetIds": "subnet-1,subnet-2",
    "SecurityGroupIds": "sg-1",
}


def evaluate(node: Any, values: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    ((function, argument),) = node.items()
    if function == "Ref":
        return values[argument]
    arguments = [evaluate(item, values) for item in argument] if isinstance(argument, list) else argument
    rule_functions = {
        "Fn::Equals": lambda a, b: a == b,
        "Fn::Not": lambda a: not a,
        "Fn::And": lambda *conditions: all(conditions),
        "Fn::Or": lambda *conditions: any(conditions),
        "Fn::Contains": lambda items, item: item in items,
        "Fn::EachMemberEquals": lambda items, item: all(member == item for member in items),
    }
    return rule_functions[function](*arguments)


def failed_rules(**given: str) -> dict[str, list[str]]:
    """Each rule whose assertions fail for these parameter values (the defaults filling in the rest)."""
    values: dict[str, Any] = {}
    for name, parameter in TEMPLATE["Parameters"].items():
        value = str({**REQUIRED, **given}.get(name, parameter.get("Default", "")))
        is_list = parameter["Type"] == "CommaDelimitedList" or parameter["Type"].startswith("List<")
        values[name] = value.split(",") if is_list else value
    failed = {}
    for name, rule in TEMPLATE["Rules"].items():
        if evaluate(rule.get("RuleCondition", True), values):
            broken = [a["AssertDescription"] for a in rule["Assertions"] if not evaluate(a["Assert"], values)]
            if broken:
                failed[name] = broken
    return failed


def allowed(parameter: str, value: str) -> bool:
    pattern = TEMPLATE["Parameters"][parameter]["AllowedPattern"]
    return re.fullmatch(pattern, value) is not None


def test_the_defaults_with_the_required_values_pass_every_rule() -> None:
    assert failed_rules() == {}


@pytest.mark.parametrize(
    "endpoint",
    ["CreateSecretsManagerEndpoint", "CreateCloudFormationEndpoint", "CreateCodePipelineEndpoint", "CreateS3Endpoint"],
)
def test_any_endpoint_needs_the_vpc(endpoint) -> None:
    given = {endpoint: "true", "RouteTableIds": "rtb-1"}
    assert set(failed_rules(**given)) == {"VpcForEndpoints"}
    assert failed_rules(**given, VpcId="vpc-0123abcd") == {}


def test_the_s3_endpoint_needs_route_tables() -> None:
    assert set(failed_rules(CreateS3Endpoint="true", VpcId="vpc-1")) == {"RouteTablesForS3"}
    assert failed_rules(CreateS3Endpoint="true", VpcId="vpc-1", RouteTableIds="rtb-1,rtb-2") == {}
    assert failed_rules(CreateSecretsManagerEndpoint="true", VpcId="vpc-1") == {}  # interface endpoints do not


def test_iam_auth_needs_the_resource_id_and_the_user() -> None:
    both = {"DatabaseResourceId": "db-ABCDEFGHIJKLMNOPQRSTUVWXYZ", "IamDatabaseUser": "app"}
    assert failed_rules(IamDatabaseAuth="true", **both) == {}
    assert failed_rules(IamDatabaseAuth="false") == {}
    for missing in both:
        (descriptions,) = failed_rules(IamDatabaseAuth="true", **{**both, missing: ""}).values()
        assert len(descriptions) == 1 and missing in descriptions[0]


def test_the_secret_arn_must_be_complete() -> None:
    # IAM matches a secret by its complete ARN, with the 6 characters Secrets Manager adds to the name.
    for good in (
        REQUIRED["DatabaseSecretArn"],
        "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:db-credentials-x1Y2z3",
    ):
        assert allowed("DatabaseSecretArn", good), good
    for partial in (
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/app/db",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/app/db-AbC12",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/*",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:",
        "arn:aws:secretsmanager:::secret:db-AbC123",
        "prod/app/db",
        "",
    ):
        assert not allowed("DatabaseSecretArn", partial), partial


def test_iam_auth_values_cannot_widen_the_permission() -> None:
    for good in ("", "db-ABCDEFGHIJKLMNOPQRSTUVWXYZ", "cluster-ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
        assert allowed("DatabaseResourceId", good), good
    for bad in ("mydb", "db-", "db-*", "*", "cluster-abc/x", "arn:aws:rds:eu-west-1:123456789012:db:mydb"):
        assert not allowed("DatabaseResourceId", bad), bad
    for good in ("", "app", "app_migrator", "svc.user-1"):
        assert allowed("IamDatabaseUser", good), good
    for bad in ("*", "app*", "a?", "app/other", "app user", "1app"):
        assert not allowed("IamDatabaseUser", bad), bad


def test_other_ids_are_checked_too() -> None:
    assert allowed("DatabaseSecretKmsKeyArn", "")
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert allowed("DatabaseSecretKmsKeyArn", key)
    assert not allowed("DatabaseSecretKmsKeyArn", "arn:aws:kms:eu-west-1:123456789012:alias/app")
    assert allowed("VpcId", "") and allowed("VpcId", "vpc-0123456789abcdef0")
    assert not allowed("VpcId", "subnet-0123")
