"""TLS verification against a server with a certificate from a CA the tests make, and events that try to
reach the tables premigrate keeps."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pgservers import debian_bin_dir, free_port
from premigrate.adapters.connection import ConnectionParams, params_from_url
from premigrate.adapters.postgres import connect
from premigrate.engine import ConfigurationError
from premigrate.local_invoke import invoke

pytestmark = pytest.mark.reliability


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificate(subject: str, issuer_key=None, issuer: str | None = None, *, ca: bool, dns: str | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    certificate = builder.sign(issuer_key or key, hashes.SHA256())
    return key, certificate


def pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[int, Path, Path]]:
    """A PostgreSQL (Debian's, built with OpenSSL) whose certificate says "localhost", signed by our CA.
    Yields its port, our CA's file and another CA's file."""
    bin_dir = debian_bin_dir()
    if bin_dir is None:
        pytest.skip("needs the Debian PostgreSQL binaries (the embedded server has no TLS)")
    home = Path(tempfile.mkdtemp(prefix="premigrate-test-tls-"))
    home.chmod(0o777)  # initdb and the socket run as the postgres user
    ca_key, ca = make_certificate("premigrate test CA", ca=True)
    _, other_ca = make_certificate("some other CA", ca=True)
    server_key, server_certificate = make_certificate(
        "localhost", ca_key, "premigrate test CA", ca=False, dns="localhost"
    )
    (home / "ca.pem").write_bytes(pem(ca))
    (home / "other-ca.pem").write_bytes(pem(other_ca))
    data = home / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (data / "server.crt").write_bytes(pem(server_certificate))
    (data / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (data / "server.key").chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(data / "server.crt", "postgres")
        shutil.chown(data / "server.key", "postgres")
    port = free_port()
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c ssl=on"
    subprocess.run(
        [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield port, home / "ca.pem", home / "other-ca.pem"
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


def test_tls_is_verified_in_full(tls_server, reliability) -> None:
    port, ca, other_ca = tls_server
    good = ConnectionParams(user="postgres", host="localhost", port=port, sslrootcert=str(ca))
    connection = connect(good)
    assert connection.run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [[True]]
    connection.close()

    with pytest.raises(ConfigurationError, match=r"could not verify the TLS certificate of .*sslrootcert"):
        connect(replace(good, sslrootcert=str(other_ca)))
    with pytest.raises(
        ConfigurationError, match=r"IP address mismatch.*connect with the host name the certificate names"
    ):
        connect(replace(good, host="127.0.0.1"))
    with pytest.raises(ConfigurationError, match="could not verify the TLS certificate"):
        connect(replace(good, sslrootcert=None))  # the system's CAs do not know ours
    encrypted_without_check = connect(replace(good, host="127.0.0.1", sslmode="require", sslrootcert=None))
    encrypted_without_check.close()
    reliability(
        "TLS: a server with a certificate from a CA the tests make",
        5,
        "verify-full connects; wrong CA, wrong host name and the system CAs are refused with a clear "
        "error; require encrypts without checking",
        "1 verified connection, 3 refusals as expected",
    )


def test_plaintext_server_is_refused_unless_asked_for(server, database_url, reliability) -> None:
    if server.name != "debian":
        pytest.skip("needs a server on TCP without TLS")
    with pytest.raises(ConfigurationError, match=r"does not offer TLS.*sslmode=disable"):
        connect(params_from_url(database_url.replace("sslmode=disable", "sslmode=verify-full")))
    connect(params_from_url(database_url)).close()
    reliability("TLS: a server without TLS", 2, "refused by default; allowed with sslmode=disable", "as expected")


def test_events_cannot_reach_premigrates_own_tables(
    monkeypatch, database_url, write_migrations, db, reliability
) -> None:
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", database_url)
    monkeypatch.setenv("PREMIGRATE_MIGRATIONS", str(write_migrations({"V1__users.sql": "CREATE TABLE users ();"})))
    hostile = "x'); DROP TABLE premigrate_schema_history; DELETE FROM premigrate_run_ledger; --"
    answers = [
        invoke({"action": "migrate", "request_id": hostile}),
        invoke({"action": "status", "request_id": hostile + "2", "target": "1; DROP TABLE users"}),
        invoke({"action": "migrate", "sql": "DROP TABLE premigrate_schema_history"}),
        invoke({"action": "plan; DROP TABLE users"}),
    ]
    assert answers[0]["ok"]
    assert [a["ok"] for a in answers[1:]] == [False, False, False]
    assert "'target': '1; DROP TABLE users' is not a version" in answers[1]["error"]
    assert "it never runs SQL from the event" in answers[2]["error"]
    assert db.run("SELECT script FROM premigrate_schema_history") == [["V1__users.sql"]]
    assert db.run("SELECT request_id FROM premigrate_run_ledger") == [[hostile]]  # refused before any run
    assert db.run("SELECT to_regclass('users') IS NOT NULL") == [[True]]
    reliability(
        "direct invokes with SQL in request_id, target, an sql key and the action",
        4,
        "no SQL from the event runs; history and ledger intact",
        "1 migrate succeeded, 3 refused",
    )
