"""A real-world migration folder nobody here wrote (Lemmy, 247 files): premigrate must split every file
exactly where psql does and end with the very schema psql makes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pgservers import CORPORA, PSQL_LOGGED_QUERY, Server
from premigrate.adapters.folder import load_folder
from premigrate.cli import main

LEMMY = CORPORA / "lemmy"
EXTENSIONS = ("ltree", "pg_trgm", "pgcrypto")

pytestmark = pytest.mark.slow


@pytest.fixture
def lemmy(server: Server) -> Path:
    if not LEMMY.is_dir():
        pytest.skip(f"the shared corpus is not beside this clone ({LEMMY}); it is only in the team's workspace")
    missing = [name for name in EXTENSIONS if not server.has_extension(name)]
    if missing:
        pytest.skip(f"the {server.name} server lacks the extensions Lemmy needs: {', '.join(missing)}")
    return LEMMY


def psql(server: Server, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [server.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *server.client_args(database_url), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def _normalise(statement: str) -> str:
    return statement.strip().rstrip(";").rstrip()


def test_lemmy_splits_like_psql_and_applies_to_the_same_schema(server, lemmy, database_url, tmp_path, capsys):
    with server.database("psql") as reference_url:
        migration_set = load_folder(lemmy)
        files = [str(lemmy / m.script) for m in migration_set.versioned]
        assert len(files) == 247
        log = tmp_path / "psql.log"
        arguments = [argument for file in files for argument in ("-f", file)]
        psql(server, reference_url, "-o", "/dev/null", "-L", str(log), *arguments)
        sent_by_psql = PSQL_LOGGED_QUERY.findall(log.read_text())
        ours = [s.text for m in migration_set.versioned for s in m.statements]
        assert len(ours) == len(sent_by_psql)
        assert [_normalise(s) for s in ours] == [_normalise(s) for s in sent_by_psql]

        assert main(["up", "--database-url", database_url, "--migrations", str(lemmy), "--json"]) == 0
        assert '"schema_version_after": "247"' in capsys.readouterr().out
        history = "public.premigrate_schema_history"
        assert server.schema_dump(database_url, history) == server.schema_dump(reference_url, history)
