"""Connection settings from URLs and Secrets Manager (moto), and TLS defaults."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import boto3
import pg8000.core
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from premigrate.adapters.cancel_request import CancelKey
from premigrate.adapters.connection import ConnectionParams, params_from_secret, params_from_url
from premigrate.adapters.postgres import (
    CANCEL_WAIT,
    AuthenticationFailedError,
    PostgresDatabase,
    UnreachableError,
    connect,
    tls_context,
)
from premigrate.adapters.secret import read_secret
from premigrate.engine import ConfigurationError
from premigrate.engine.database import ServerError

RDS_SECRET = {
    "engine": "postgres",
    "username": "app",
    "password": "s3cr3t-p@ss",
    "host": "db.example.internal",
    "port": 5432,
    "dbname": "app",
}


@pytest.fixture(autouse=True)
def no_libpq_environment(monkeypatch, tmp_path):
    """Neither the developer's PG* variables nor their ~/.pgpass may change what these tests see."""
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


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


# ---- Connecting to servers that misbehave: tiny local servers, each bounded in time ----------------------


@contextlib.contextmanager
def fake_server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on 127.0.0.1 that plays ``answer`` to one client, then hangs up; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            client, _ = listener.accept()
            with client:
                client.settimeout(10)
                client.recv(65536)  # the SSLRequest or the startup message
                answer(client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() no client came to, on Linux
        thread.join(10)
        listener.close()


def fake_params(port: int, sslmode: str = "disable") -> ConnectionParams:
    return ConnectionParams(user="app", host="127.0.0.1", port=port, database="app", sslmode=sslmode)


@pytest.mark.parametrize("sslmode", ["disable", "require", "verify-full"])
def test_a_server_that_never_answers_times_out(sslmode) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # TCP accepted by the kernel, never answered
        started = time.monotonic()
        with pytest.raises(UnreachableError, match=r"could not connect to app@127\.0\.0\.1:\d+/app .*: timed out"):
            connect(fake_params(silent.getsockname()[1], sslmode), connect_timeout=1)
        assert time.monotonic() - started < 2.5


def test_an_invalid_host_name_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("'x..y' is not a valid host name")):
        connect(params_from_url("postgresql://app@x..y/app"))


def _sends(data: bytes) -> Callable[[socket.socket], None]:
    return lambda client: client.sendall(data)


def _agrees_to_tls_then_sends_garbage(client: socket.socket) -> None:
    client.sendall(b"S")
    client.sendall(b"\x15\x03\x03\x00\x02garbage, not a TLS record" * 4)
    client.recv(65536)


@pytest.mark.parametrize(
    ("sslmode", "answer", "error", "message"),
    [
        (
            "require",
            _sends(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            ConfigurationError,
            "did not answer the request for TLS",
        ),
        ("require", _agrees_to_tls_then_sends_garbage, ConfigurationError, "the TLS handshake with app@127"),
        ("require", _sends(b""), UnreachableError, "closed the connection when asked for TLS"),
        ("require", _sends(b"N"), ConfigurationError, "does not offer TLS"),
        ("disable", _sends(b"X\x00\x00\x00\x04"), ConfigurationError, "the server's answer was not understood"),
        ("disable", _sends(b"HTTP/1.1 400 Bad Request\r\n\r\n"), UnreachableError, "closed the connection during"),
        ("disable", _sends(b"R\x00\x00\x00\x08\x00\x00\x00\x07"), ConfigurationError, "authentication method"),
    ],
)
def test_a_server_that_is_not_postgresql_is_a_clear_error(sslmode, answer, error, message) -> None:
    with fake_server(answer) as port, pytest.raises(error, match=re.escape(message)):
        connect(fake_params(port, sslmode), connect_timeout=5)


NO_PASSWORD = "the server asks for a password and none was given: put it in the URL, PGPASSWORD or ~/.pgpass"


@pytest.mark.parametrize(
    "request_for_password",
    [
        b"R\x00\x00\x00\x08\x00\x00\x00\x03",  # cleartext
        b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt",  # md5
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",  # SASL
    ],
)
def test_a_password_asked_for_and_not_given_says_where_to_put_it(monkeypatch, tmp_path, request_for_password) -> None:
    with fake_server(_sends(request_for_password)) as port, pytest.raises(AuthenticationFailedError) as caught:
        connect(fake_params(port), connect_timeout=5)
    assert NO_PASSWORD in str(caught.value)

    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:*:Xy7\n")
    passfile.chmod(0o640)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    with fake_server(_sends(request_for_password)) as port, pytest.raises(AuthenticationFailedError) as caught:
        connect(fake_params(port), connect_timeout=5)
    assert f"was skipped because group or others may access it, as libpq does; chmod 600 {passfile}" in str(
        caught.value
    )


# ---- Connecting to real servers ------------------------------------------------------------------------


def test_a_real_server_asking_for_a_password_gets_it_from_the_password_file(
    monkeypatch, tmp_path, database_url, password_user
) -> None:
    params = replace(params_from_url(database_url), user=password_user)
    with pytest.raises(AuthenticationFailedError, match=re.escape(NO_PASSWORD)):
        connect(params)
    passfile = tmp_path / "pgpass"
    where = f"{params.socket_dir or params.host}:{params.port}:{params.database}"
    passfile.write_text(f"{where}:someone-else:wrong\n{where}:{password_user}:first-password\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    url = database_url.replace("://postgres@", f"://{password_user}@").replace("://postgres:@", f"://{password_user}:@")
    connect(params_from_url(url)).close()
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("PGPASSWORD", "first-password")
    connect(params_from_url(url)).close()


def test_application_name_and_options_reach_the_server(database_url) -> None:
    url = f"{database_url}&application_name=deploy-42&options=-c%20search_path%3Dapp,public%20-cwork_mem%3D5MB"
    session = connect(params_from_url(url))
    try:
        assert session.run("SHOW application_name") == [["deploy-42"]]
        assert session.run("SHOW search_path") == [["app,public"]]
        assert session.run("SHOW work_mem") == [["5MB"]]
    finally:
        session.close()
    with pytest.raises(ConfigurationError, match=r"could not connect to .*no_such_setting"):
        connect(params_from_url(f"{database_url}&options=-c%20no_such_setting%3D1"))


# ---- Cancelling -----------------------------------------------------------------------------------------


def _cancelled_within_seconds(session: PostgresDatabase) -> float:
    threading.Timer(0.5, session.cancel).start()
    started = time.monotonic()
    with pytest.raises(ServerError) as caught:
        session.run("SELECT pg_sleep(30)")
    assert caught.value.sqlstate == "57014"
    assert session.run("SELECT 1") == [[1]]  # only the statement ended, not the session
    return time.monotonic() - started


def test_cancel_stops_the_running_statement(database_url) -> None:
    session = connect(params_from_url(database_url))
    assert session._cancel_key is not None and session._cancel_key.secret is not None  # pg8000's key data
    assert _cancelled_within_seconds(session) < 2.5
    session.close()
    session.cancel()  # a closed session: nothing to do, no error


def test_cancel_without_pg8000s_key_data_asks_pg_cancel_backend(monkeypatch, database_url) -> None:
    # What a pg8000 release that no longer keeps BackendKeyData where we read it would look like.
    monkeypatch.setattr(pg8000.core.CoreConnection, "handle_BACKEND_KEY_DATA", lambda self, data, context: None)
    session = connect(params_from_url(database_url))
    assert session._cancel_key is not None and session._cancel_key.secret is None  # the fallback is what runs
    try:
        assert _cancelled_within_seconds(session) < 2.5
    finally:
        session.close()


def test_cancel_is_bounded_and_never_raises() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = silent.getsockname()
        session = PostgresDatabase(
            object(), fake_params(address[1], "require"), CancelKey(socket.AF_INET, address, 1234, b"key!")
        )
        started = time.monotonic()
        session.cancel()
        assert time.monotonic() - started < CANCEL_WAIT + 0.5
    PostgresDatabase(object(), fake_params(1), CancelKey(socket.AF_INET, ("127.0.0.1", 1), 1234, b"key!")).cancel()
