"""psql is the reference: for what the splitter learned beyond plain ASCII SQL (lone carriage returns,
non-ASCII names and dollar-quote tags, standard_conforming_strings off, casts and slices) premigrate sends
exactly the statements psql sends, and such files migrate a real server as psql would run them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pgservers import PSQL_LOGGED_QUERY, Server
from premigrate.cli import main
from premigrate.engine.statements import split_statements

# psql 18 frames the queries of its -L log with /* … */ instead of bare asterisks.

SCRIPTS = {
    "carriage returns": (
        "-- written on an old Mac\rCREATE TABLE a (id int);\rSELECT 1 -- a note\rFROM a;\r-- c\r  SELECT 2\r"
    ),
    "non-ASCII names": (
        "DO $€$ BEGIN PERFORM 2; END $€$;\nDO $é1$ BEGIN PERFORM 'x;y'; END $é1$;\n"
        "CREATE TABLE café (naïve€ int);\nSELECT 1 AS a€e'x;y';\nSELECT naïve€ FROM café;\n"
    ),
    "casts, slices and comments in operators": (
        "SELECT (ARRAY[1,2,3])[1:2], (ARRAY[1,2,3])[lo:hi] FROM (SELECT 1 AS lo, 2 AS hi) s;\n"
        "SELECT '{1,2}'::int[], $$a;b$$::text, 1+-- a comment ;\n2;\nSELECT 1 :: int;\n1;\n"
    ),
    "standard_conforming_strings": (
        "set standard_conforming_strings = off;\n"
        r"select 'a\\bcd' as f1, 'a\\b\'cd' as f2, 'a\\b\'''cd' as f3, 'abcd\\'   as f4, 'ab\\\'cd' as f5;"
        "\nset standard_conforming_strings = on;\n"
        r"select 'a\bcd' as f1, 'a\b''cd' as f2, 'a\b''''cd' as f3, 'abcd\'   as f4, 'ab\''cd' as f5, '\\' as f6;"
        "\nSET SESSION standard_conforming_strings TO 'false';\n"
        r"SELECT 'it\'s; fine', b'01', x'ff', N'a\'b;', U&'d\0061t';"
        "\nRESET ALL;\n"
        r"SELECT 'C:\'; SET standard_conforming_strings = off; SELECT 'same line: \';"
        "\n"
        r"SELECT 'next line: \';';"
    ),
}


def _normalise(statement: str) -> str:
    return statement.strip().rstrip(";").rstrip()


def sent_by_psql(server: Server, database_url: str, sql: str, tmp_path: Path) -> list[str]:
    script, log = tmp_path / "script.sql", tmp_path / "psql.log"
    script.write_bytes(sql.encode())
    # No ON_ERROR_STOP: a statement the server refuses is still one psql sent, and the next ones count too.
    command = [server.tool("psql"), "-X", "-q", *server.client_args(database_url), "-o", "/dev/null"]
    environment = {**os.environ, "PGCLIENTENCODING": "UTF8"}
    subprocess.run(
        [*command, "-L", str(log), "-f", str(script)], capture_output=True, timeout=60, check=True, env=environment
    )
    # Bytes, not read_text: a lone \r stays as psql sent it instead of turning into \n.
    return PSQL_LOGGED_QUERY.findall(log.read_bytes().decode())


@pytest.mark.parametrize("name", SCRIPTS)
def test_sends_the_statements_psql_sends(server: Server, database_url: str, tmp_path: Path, name: str) -> None:
    sql = SCRIPTS[name]
    ours = [_normalise(statement.text) for statement in split_statements(sql)]
    assert ours == [_normalise(statement) for statement in sent_by_psql(server, database_url, sql, tmp_path)]
    assert len(ours) >= 3  # the script really was split


def test_such_files_migrate_a_real_server(database_url: str, db, write_migrations, capsys) -> None:
    folder = write_migrations(
        {
            "V1__notes.sql": b"-- saved with old Mac line endings\rCREATE TABLE notes (body text);\r",
            "V2__escapes.sql": "SET standard_conforming_strings = off;\nINSERT INTO notes VALUES ('it\\'s; fine');\n",
            "V3__mood.sql": "CREATE TYPE mood AS ENUM ('sad');\n",
            "V4__meh.sql": "ALTER TYPE mood ADD VALUE 'meh';\nCREATE TABLE person (m mood DEFAULT 'meh');\n",
            # Each file starts with standard_conforming_strings on again, as it would in a psql of its own.
            "V5__euro.sql": "DO $€$ BEGIN INSERT INTO notes VALUES ('€; inside'); END $€$;\nSELECT 'C:\\';\n",
        }
    )
    assert main(["up", "--database-url", database_url, "--migrations", str(folder), "--json"]) == 0
    applied = json.loads(capsys.readouterr().out)["applied"]
    assert [(run["script"], run["mode"]) for run in applied] == [
        ("V1__notes.sql", "transaction"),
        ("V2__escapes.sql", "transaction"),
        ("V3__mood.sql", "transaction"),
        ("V4__meh.sql", "no-transaction"),
        ("V5__euro.sql", "transaction"),
    ]
    assert applied[3]["mode_reason"].startswith("detected: ALTER TYPE ... ADD VALUE 'meh' is used later")
    assert db.run("SELECT body FROM notes ORDER BY body") == [["it's; fine"], ["€; inside"]]
    assert db.run("SELECT column_default FROM information_schema.columns WHERE table_name = 'person'") == [
        ["'meh'::mood"]
    ]
