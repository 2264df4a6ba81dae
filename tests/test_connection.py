"""Connection settings from URLs and Secrets Manager (moto), and TLS defaults."""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import replace

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from premigrate.adapters.connection import params_from_secret, params_from_url
from premigrate.adapters.postgres import AuthenticationFailedError, connect, tls_context
from premigrate.adapters.secret import read_secret
from premigrate.engine import ConfigurationError

RDS_SECRET = {
    "engine": "postgres",
    "username": "app",
    "password": "s3cr3t-p@ss",
    "host": "db.example.internal",
    "port": 5432,
    "dbname": "app",
}


def test_url_with_tcp_host_verifies_tls_by_default() -> None:
    params = params_from_url("postgresql://app:p%40ss@db.example.com:6432/prod")
    assert (params.user, params.password, params.host, params.port, params.database) == (
        "app",
        "p@ss",
        "db.example.com",
        6432,
        "prod",
    )
    context = tls_context(params)
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert "p@ss" not in params.describe() and "p@ss" not in repr(params)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sslmode=disable", False),
        ("sslmode=prefer", None),
        ("sslmode=require", ssl.CERT_NONE),
        ("sslmode=verify-ca", ssl.CERT_REQUIRED),
    ],
)
def test_sslmode_is_honoured(query: str, expected) -> None:
    context = tls_context(params_from_url(f"postgresql://app@db.example.com/prod?{query}"))
    if isinstance(context, ssl.SSLContext):
        assert context.verify_mode == expected
        assert not context.check_hostname
    else:
        assert context is expected


def test_unix_socket_urls_need_no_tls() -> None:
    params = params_from_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert (params.socket_dir, params.host, params.sslmode) == ("/tmp/pg", None, "disable")
    assert tls_context(params) is False


def test_rds_secret_becomes_connection_settings() -> None:
    params = params_from_secret(RDS_SECRET)
    assert (params.user, params.host, params.port, params.database, params.sslmode) == (
        "app",
        "db.example.internal",
        5432,
        "app",
        "verify-full",
    )


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("just a string", "must be a JSON object"),
        ({"username": "app", "host": "h"}, "lacks password"),
        ({**RDS_SECRET, "password": 1234}, "lacks password (or they are not strings)"),
        ({**RDS_SECRET, "port": "fivefour"}, "port is not a number"),
    ],
)
def test_malformed_secret_is_refused_without_echoing_it(secret, message) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        params_from_secret(secret)
    assert "s3cr3t" not in str(caught.value)


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    parameters.clear_caches()
    with mock_aws():
        yield boto3.client("secretsmanager")
    parameters.clear_caches()


def test_secret_is_read_from_secrets_manager(secrets) -> None:
    secrets.create_secret(Name="prod/db", SecretString=json.dumps(RDS_SECRET))
    assert read_secret("prod/db").password == "s3cr3t-p@ss"


def test_missing_and_non_json_secrets_say_what_to_check(secrets) -> None:
    with pytest.raises(ConfigurationError, match=r"could not read secret prod/none.*GetSecretValue"):
        read_secret("prod/none")
    secrets.create_secret(Name="prod/text", SecretString="not json at all")
    with pytest.raises(ConfigurationError, match="secret prod/text is not JSON") as caught:
        read_secret("prod/text")
    assert "not json at all" not in str(caught.value)


def test_wrong_password_is_reported_as_such(database_url, password_user) -> None:
    params = replace(params_from_url(database_url), user=password_user, password="wrong-password")
    with pytest.raises(AuthenticationFailedError, match="the server refused the credentials") as caught:
        connect(params)
    assert "wrong-password" not in str(caught.value)
    connect(replace(params, password="first-password")).close()
