"""A libpq connection URL split into libpq's keywords, without ever echoing a password.

    >>> split_url("postgresql://app:pw@db.example.com:6432/app?sslmode=verify-full")["port"]
    '6432'

It reads what libpq reads: ``postgresql://user:password@host:port/dbname?keyword=value&…``. Query
parameters come after the URL's own parts and win over them, as in libpq. Values are percent-decoded as
a URI is (``unquote``): a ``+`` stays a plus, because a form's space-as-plus is not part of the URI syntax.
Two leniencies beside libpq: a value may hold an unencoded ``=`` (``options=-c search_path=app``), and an
unencoded ``@`` in the password is read as the password's (the host part is after the last ``@``).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from premigrate.engine import ConfigurationError

SUPPORTED = frozenset(
    {
        "host",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "connect_timeout",
        "options",
        "application_name",
        "fallback_application_name",
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "target_session_attrs",
    }
)
LIBPQ_ONLY = frozenset(
    {
        "hostaddr",
        "require_auth",
        "channel_binding",
        "client_encoding",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslnegotiation",
        "requiressl",
        "sslcompression",
        "sslpassword",
        "sslkeylogfile",
        "sslcertmode",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "load_balance_hosts",
        "min_protocol_version",
        "max_protocol_version",
    }
)
"""Keywords libpq knows that premigrate does not implement: refused by name rather than ignored."""

_ENCODE_HELP = (
    "percent-encode special characters in the user name and password (/ as %2F, ? as %3F, # as %23, "
    "@ as %40, : as %3A, % as %25)"
)


def split_url(url: str) -> dict[str, str]:
    """libpq's keywords and their (decoded, non-empty) values; a ConfigurationError that never shows a
    password when the URL cannot be read."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in ("postgres", "postgresql"):
        shown = f"{scheme}://" if separator and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,30}", scheme) else "no scheme"
        raise ConfigurationError(
            f"the database URL must look like postgresql://user:password@host:5432/dbname (it starts with {shown})"
        )
    before_query, _, query = rest.partition("?")
    authority, _, path = before_query.partition("/")
    user_info, at, host_and_port = authority.rpartition("@")
    if not at and "@" in path:
        raise ConfigurationError(
            "the database URL has an @ after the first /, so the user name or password seems to hold an "
            f"unencoded / (not shown here); {_ENCODE_HELP}"
        )
    found: dict[str, str] = {}
    if at:
        user, colon, password = user_info.partition(":")
        found["user"] = _decoded(user, "user name")
        if colon:
            found["password"] = _decoded(password, "password")
    found.update(_host_and_port(host_and_port))
    found["dbname"] = _decoded(path, "database name")
    for keyword, value in _query_parameters(query):  # after the host and port: their errors echo nothing
        found[keyword] = value
    return {keyword: value for keyword, value in found.items() if value}


def _host_and_port(text: str) -> dict[str, str]:
    if "," in text:
        raise ConfigurationError("the database URL names several hosts; premigrate connects to one: give only one")
    if text.startswith("["):  # an IPv6 address: [2001:db8::1]:5432
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigurationError("the IPv6 address in the database URL lacks its closing ]")
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        # Not echoed: when a password holds an unencoded / or ?, what stands here is part of it.
        raise ConfigurationError(
            f"the port in the database URL is not a number (not shown: it may be part of a password); {_ENCODE_HELP}"
        )
    return {"host": _decoded(host, "host"), "port": port}


def _query_parameters(query: str) -> list[tuple[str, str]]:
    parameters: list[tuple[str, str]] = []
    for item in query.split("&"):
        if not item:
            continue
        raw_keyword, equals, raw_value = item.partition("=")
        if not equals:
            raise ConfigurationError(
                "a query parameter of the database URL has no = (it is not shown: it might be part of a "
                f"password); write them as ?keyword=value&keyword=value, and {_ENCODE_HELP}"
            )
        keyword = _decoded(raw_keyword, "query parameter name")
        value = _decoded(raw_value, f"value of {keyword}" if keyword in SUPPORTED else "query parameter value")
        if keyword == "ssl" and value == "true":  # libpq reads the JDBC spelling too
            keyword, value = "sslmode", "require"
        if keyword in LIBPQ_ONLY:
            raise ConfigurationError(f'the URI query parameter "{keyword}" of libpq is not supported by premigrate')
        if keyword not in SUPPORTED:
            # libpq's keywords are lower case: anything else is not echoed, as it may be part of a password
            # that holds an unencoded ? (postgresql://app:pa?ss=…@host).
            shown = keyword if re.fullmatch(r"[a-z_]{1,40}", keyword) else "(not shown)"
            raise ConfigurationError(
                f'invalid URI query parameter: "{shown}"; premigrate reads {", ".join(sorted(SUPPORTED))}'
            )
        parameters.append((keyword, value))
    return parameters


def _decoded(text: str, what: str) -> str:
    try:
        value = unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ConfigurationError(f"the {what} in the database URL has a %-escape that is not UTF-8 text") from None
    if "\x00" in value:
        raise ConfigurationError(f"the {what} in the database URL holds %00, which PostgreSQL cannot take")
    return value
