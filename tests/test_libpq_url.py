"""libpq connection URLs, the PG* environment variables and the password file, read as libpq reads them;
no message ever shows a password."""

from __future__ import annotations

import re

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.engine import ConfigurationError


@pytest.fixture(autouse=True)
def no_libpq_environment(monkeypatch, tmp_path):
    """Neither the developer's PG* variables nor their ~/.pgpass may change what these tests see."""
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:Xy[7@db/app", ("app", "Xy[7", "db", 5432, "app")),
        ("postgresql://app:p@ss@db:6432/app", ("app", "p@ss", "db", 6432, "app")),
        ("postgresql://app:Xy7#Qz9@db/app", ("app", "Xy7#Qz9", "db", 5432, "app")),
        ("postgresql://db/app?user=me&password=a+b%2Bc%20d", ("me", "a+b+c d", "db", 5432, "app")),
        ("postgresql://a:pw@h1:1/d1?host=h2&port=2&user=b&dbname=d2", ("b", "pw", "h2", 2, "d2")),
        ("postgres://[2001:db8::1]:6543/app", ("postgres", None, "2001:db8::1", 6543, "app")),
        ("postgresql://%2Ftmp%2Fpg/app", ("postgres", None, None, 5432, "app")),
    ],
)
def test_url_is_read_as_libpq_reads_it(url, expected) -> None:
    params = params_from_url(url)
    assert (params.user, params.password, params.host, params.port, params.database) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://app:Xy7/Qz9@db/app", "seems to hold an unencoded /"),
        ("postgresql://app:Xy7?Qz9@db/app", "the port in the database URL is not a number"),
        ("postgresql://app?Xy7Qz9@db/app", "has no = (it is not shown"),
        ("postgresql://app:Xy7?Qz9=1@db/app", "the port in the database URL is not a number"),
        ("postgresql://app:123?Qz9=1@db/app", 'invalid URI query parameter: "(not shown)"'),
        ("postgresql://db:70000/app", "the port '70000' of the database is not a number from 1 to 65535"),
        ("postgresql://db/app?Xy7Qz9", "has no = (it is not shown"),
        ("postgresql://db/app?sslmod=require", 'invalid URI query parameter: "sslmod"'),
        ("postgresql://db/app?hostaddr=10.0.0.1", 'parameter "hostaddr" of libpq is not supported'),
        ("postgresql://db/app?target_session_attrs=read-write", "target_session_attrs=read-write is not supported"),
        ("postgresql://db/app?connect_timeout=0", "connect_timeout='0' is not a whole number of seconds"),
        ("postgresql://db/app?connect_timeout=1.5", "connect_timeout='1.5' is not a whole number"),
        ("postgresql://h1,h2/app", "names several hosts"),
        ("postgresql://db/app?password=%FFXy7", "password in the database URL has a %-escape that is not UTF-8"),
        ("postgresql://db/app?sslrootcert=system&sslmode=require", "sslrootcert=system needs sslmode=verify-full"),
        ("mysql://app:Xy7@db/app", "it starts with mysql://"),
        ("app:Xy7Qz9@db/app", "it starts with no scheme"),
    ],
)
def test_malformed_url_is_refused_without_echoing_the_password(url, message) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as caught:
        params_from_url(url)
    assert "Xy7" not in str(caught.value) and "Qz9" not in str(caught.value)


def test_url_parameters_libpq_honours() -> None:
    params = params_from_url(
        "postgresql://db/app?application_name=deploy&options=-csearch_path%3Dapp&connect_timeout=15"
        "&sslmode=verify-ca&sslrootcert=/ca.pem&sslcert=/c.pem&sslkey=/k.pem&target_session_attrs=any"
    )
    assert (params.application_name, params.options, params.connect_timeout) == ("deploy", "-csearch_path=app", 15)
    assert (params.sslmode, params.sslrootcert, params.sslcert, params.sslkey) == (
        "verify-ca",
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    assert params_from_url("postgresql://db/app?options=-c search_path=app,public").options == (
        "-c search_path=app,public"
    )
    assert params_from_url("postgresql://db/app?connect_timeout=1").connect_timeout == 2  # libpq's minimum
    assert params_from_url("postgresql://db/app?fallback_application_name=x").application_name == "x"
    assert params_from_url("postgresql://db/app?ssl=true").sslmode == "require"
    assert params_from_url("postgresql://db/app").application_name == "premigrate"


def test_libpq_environment_fills_what_the_url_leaves_out(monkeypatch) -> None:
    monkeypatch.setenv("PGHOST", "/run/pg")
    monkeypatch.setenv("PGPORT", "6000")
    monkeypatch.setenv("PGUSER", "env-user")
    monkeypatch.setenv("PGDATABASE", "env-db")
    monkeypatch.setenv("PGPASSWORD", "env-Xy7")
    params = params_from_url("postgresql://")
    assert (params.socket_dir, params.port, params.user, params.database, params.password) == (
        "/run/pg",
        6000,
        "env-user",
        "env-db",
        "env-Xy7",
    )
    params = params_from_url("postgresql://app:url-pw@db:5433/app")
    assert (params.host, params.port, params.user, params.database, params.password) == (
        "db",
        5433,
        "app",
        "app",
        "url-pw",
    )
    assert "env-Xy7" not in params_from_url("postgresql://").describe()


PGPASS = r"""# comments and blank lines are skipped

db.example.com:5432:app:app:first-match
db.example.com:5432:app:app:second-match
*:*:*:wild:from-wildcard
\*:*:*:star:literal-star-host
a\:b:*:*:colon:co\:lon\\pw
localhost:5432:*:sock:default-socket
/tmp/pg:5432:*:sock:other-socket
"""


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql://app@db.example.com/app", "first-match"),
        ("postgresql://wild@anywhere:1/any", "from-wildcard"),
        ("postgresql://star@anywhere/any", None),
        ("postgresql://star@%2A/any", "literal-star-host"),
        ("postgresql://colon@a%3Ab/any", "co:lon\\pw"),
        ("postgresql://sock@/any", "default-socket"),
        ("postgresql://sock@/any?host=/tmp/pg", "other-socket"),
        ("postgresql://sock@/any?host=/var/run/other", None),
        ("postgresql://app:given@db.example.com/app", "given"),
    ],
)
def test_password_file_is_read_as_libpq_reads_it(monkeypatch, tmp_path, url, password) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(PGPASS)
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert params_from_url(url).password == password
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    assert params_from_url(f"{url}{'&' if '?' in url else '?'}passfile={passfile}").password == password


def test_password_file_others_may_read_is_skipped(monkeypatch, tmp_path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:*:Xy7-open\n")
    passfile.chmod(0o644)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert params_from_url("postgresql://app@db/app").password is None
    monkeypatch.setenv("PGPASSWORD", "env-pw")
    assert params_from_url("postgresql://app@db/app").password == "env-pw"  # PGPASSWORD comes first anyway
