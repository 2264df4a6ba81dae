"""TLS verification against a server with a certificate from a CA the tests make, and events that try to
reach the tables premigrate keeps."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
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
from premigrate.adapters.postgres import UnreachableError, connect
from premigrate.engine import ConfigurationError
from premigrate.engine.database import ServerError
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


def private_pem(key, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


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
    client_key, client_certificate = make_certificate("certuser", ca_key, "premigrate test CA", ca=False)
    (home / "client.crt").write_bytes(pem(client_certificate))
    (home / "client.key").write_bytes(private_pem(client_key))
    (home / "client.key").chmod(0o600)
    data = home / "data"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (data / "server.crt").write_bytes(pem(server_certificate))
    (data / "server.key").write_bytes(private_pem(server_key))
    hba = data / "pg_hba.conf"
    hba.write_text("hostssl all certuser 127.0.0.1/32 cert\n" + hba.read_text())  # a client certificate or nothing
    (data / "server.key").chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(data / "server.crt", "postgres")
        shutil.chown(data / "server.key", "postgres")
    port = free_port()
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_ca_file={home}/ca.pem"
    subprocess.run(
        [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    admin = connect(ConnectionParams(user="postgres", socket_dir=str(home), port=port))
    admin.run("CREATE ROLE certuser LOGIN")
    admin.close()
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


def test_cancel_travels_over_tls_when_the_session_does(tls_server) -> None:
    port, ca, _ = tls_server
    session = connect(ConnectionParams(user="postgres", host="localhost", port=port, sslrootcert=str(ca)))
    threading.Timer(0.5, session.cancel).start()
    with pytest.raises(ServerError) as caught:
        session.run("SELECT pg_sleep(30)")
    assert caught.value.sqlstate == "57014"
    session.close()


def test_a_notification_wakes_a_session_over_tls(tls_server) -> None:
    """The lock's waiters wait on the TLS socket: what OpenSSL decrypted already must count, not only the
    socket's own bytes."""
    port, ca, _ = tls_server
    params = ConnectionParams(user="postgres", host="localhost", port=port, sslrootcert=str(ca))
    listener, notifier = connect(params), connect(params)
    listener.run("LISTEN over_tls")
    assert listener.wait_for_notification(0.05) is False
    notifier.run("NOTIFY over_tls")
    started = time.monotonic()
    assert listener.wait_for_notification(30) is True  # only the notification ends it this soon
    assert time.monotonic() - started < 10
    assert listener.run("SELECT 1") == [[1]]
    listener.close()
    notifier.close()


def test_require_with_a_root_certificate_checks_the_chain_as_libpq_does(tls_server) -> None:
    port, ca, other_ca = tls_server
    by_address = ConnectionParams(user="postgres", host="127.0.0.1", port=port, sslrootcert=str(ca))
    for sslmode in ("require", "verify-ca"):  # the chain is checked, the host name (an IP here) is not
        session = connect(replace(by_address, sslmode=sslmode))
        assert session.run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [[True]]
        session.close()
        with pytest.raises(ConfigurationError, match="could not verify the TLS certificate"):
            connect(replace(by_address, sslmode=sslmode, sslrootcert=str(other_ca)))
    for sslmode in ("allow", "prefer"):  # TLS when offered, never checked
        session = connect(replace(by_address, sslmode=sslmode, sslrootcert=str(other_ca)))
        assert session.run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [[True]]
        session.close()


@pytest.fixture
def attacker(tmp_path) -> Iterator[int]:
    """A server that speaks TLS like PostgreSQL with a certificate for "localhost" from a CA of its own, as a
    machine in the middle would; it hangs up after the handshake. Yields its port."""
    attacker_ca_key, _ = make_certificate("attacker CA", ca=True)
    key, certificate = make_certificate("localhost", attacker_ca_key, "attacker CA", ca=False, dns="localhost")
    (tmp_path / "attacker.crt").write_bytes(pem(certificate))
    (tmp_path / "attacker.key").write_bytes(private_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "attacker.crt", tmp_path / "attacker.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        for _ in range(3):
            with contextlib.suppress(OSError):
                client, _ = listener.accept()
                with client:
                    client.settimeout(10)
                    client.recv(8)  # the SSLRequest
                    client.sendall(b"S")
                    with context.wrap_socket(client, server_side=True) as tls:
                        tls.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes a pending accept() on Linux
    listener.close()
    thread.join(10)


def test_require_with_a_root_certificate_refuses_a_certificate_from_another_ca(tls_server, attacker) -> None:
    _, ca, _ = tls_server
    params = ConnectionParams(user="postgres", host="localhost", port=attacker, sslmode="require")
    for sslmode in ("require", "verify-full"):
        with pytest.raises(ConfigurationError, match="could not verify the TLS certificate") as caught:
            connect(replace(params, sslmode=sslmode, sslrootcert=str(ca)), connect_timeout=5)
        assert not isinstance(caught.value, UnreachableError)  # not worth a retry: a refusal
    # Without a root certificate, require encrypts without checking, as libpq does: the handshake succeeds.
    with pytest.raises(UnreachableError, match="closed the connection during the login"):
        connect(params, connect_timeout=5)


def test_client_certificate_logs_in(tls_server) -> None:
    port, ca, _ = tls_server
    url = f"postgresql://certuser@localhost:{port}/postgres?sslrootcert={ca}"
    client = f"&sslcert={ca.parent / 'client.crt'}&sslkey={ca.parent / 'client.key'}"
    session = connect(params_from_url(url + client))
    assert session.run("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == [["/CN=certuser"]]
    session.close()
    with pytest.raises(ConfigurationError, match=r"the server refused the credentials .*certificate"):
        connect(params_from_url(url))


def test_encrypted_or_missing_client_key_is_refused_clearly(tls_server, tmp_path) -> None:
    port, _, _ = tls_server
    key, certificate = make_certificate("certuser", ca=False)
    (tmp_path / "client.crt").write_bytes(pem(certificate))
    (tmp_path / "client.key").write_bytes(private_pem(key, b"Xy7-key-password"))
    url = f"postgresql://certuser@localhost:{port}/postgres?sslcert={tmp_path / 'client.crt'}"
    with pytest.raises(ConfigurationError, match="The key must be PEM and not encrypted"):
        connect(params_from_url(f"{url}&sslkey={tmp_path / 'client.key'}"))
    with pytest.raises(ConfigurationError, match="cannot use the client certificate"):
        connect(params_from_url(f"{url}&sslkey={tmp_path / 'no-such.key'}"))


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
