"""Every hostile input of the suite through the command line: a clear message and a documented exit code,
never a traceback, never a password, nothing applied by a refused run."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from premigrate.cli import main

pytestmark = pytest.mark.reliability

PASSWORD = "Sup3r/Se[cret+pw"
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3}
USERS = "CREATE TABLE users (id int);\n"


@dataclass
class Hostile:
    files: dict[str, str | bytes] = field(default_factory=lambda: {"V1__users.sql": USERS})
    args: tuple[str, ...] = ()
    expected_code: int = 1
    message: str = ""
    """Part of the error message (stderr) the user must read."""
    with_url: bool = True
    prepare: Callable[..., None] | None = None


def _read_only(db, url: str) -> None:
    (name,) = db.run("SELECT current_database()")[0]
    db.run(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')


def _foreign_history(db, url: str) -> None:
    db.run("CREATE TABLE premigrate_schema_history (id int)")


HOSTILE = {
    "misplaced URL with a password": Hostile(args=("status", f"postgresql://u:{PASSWORD}@h/db"), expected_code=2),
    "misspelt option before a URL": Hostile(
        args=("status", "--databse-url", f"postgresql://u:{PASSWORD}@h/db"), expected_code=2
    ),
    "lock timeout beyond PostgreSQL's": Hostile(
        args=("up", "--lock-timeout", "99999999"), expected_code=2, message="above PostgreSQL's longest"
    ),
    "lock timeout below a millisecond": Hostile(
        args=("up", "--lock-timeout", "0.0001"), expected_code=2, message="below PostgreSQL's resolution"
    ),
    "target beyond the last file": Hostile(args=("up", "--target", "99"), expected_code=2, message="beyond the last"),
    "empty schema": Hostile(args=("up", "--schema", ""), expected_code=2, message="must not be empty"),
    "not a duration": Hostile(args=("up", "--lock-wait", "soon"), expected_code=2, message="is not a duration"),
    "not a yes or no": Hostile(args=("up", "--sslmode", "maybe"), expected_code=2, message="is not an sslmode"),
    "migrations folder is a file": Hostile(
        args=("up", "--migrations", "/etc/hostname"), expected_code=2, message="/etc/hostname"
    ),
    "new with a very long description": Hostile(args=("new", "x" * 300), expected_code=0, with_url=False),
    "new with a non-Latin description": Hostile(args=("new", "добавить заказы"), expected_code=0, with_url=False),
    "badly named file": Hostile(files={"V1_users.sql": USERS}, args=("up",), message="V1_users.sql"),
    "COMMIT AND CHAIN": Hostile(
        files={"V1__s.sql": "BEGIN; CREATE TABLE t (id int); COMMIT AND CHAIN;"}, args=("up",), message="V1__s.sql"
    ),
    "no-transaction file without COMMIT": Hostile(
        files={"V1__s.sql": "-- premigrate:no-transaction\nBEGIN;\nCREATE TABLE t (id int);\n"},
        args=("up",),
        message="V1__s.sql",
    ),
    "COPY FROM STDIN": Hostile(
        files={"V1__c.sql": "CREATE TABLE t (a int);\nCOPY t FROM STDIN;\n1\n\\.\n"}, args=("up",), message="COPY"
    ),
    "COPY TO STDOUT": Hostile(files={"V1__c.sql": "COPY (SELECT 1) TO STDOUT;"}, args=("up",), message="COPY"),
    "NUL byte": Hostile(files={"V1__n.sql": b"CREATE TABLE t (id int);\x00\n"}, args=("up",), message="NUL"),
    "bare carriage returns": Hostile(
        files={"V1__cr.sql": "-- note\rCREATE TABLE a (id int);\r"}, args=("up",), expected_code=0
    ),
    "psql variable": Hostile(files={"V1__v.sql": "SELECT :'ON_ERROR_ROLLBACK';"}, args=("up",), message="psql"),
    "DISCARD ALL": Hostile(files={"V1__d.sql": "DISCARD ALL;"}, args=("up",), message="DISCARD ALL"),
    "a failing statement": Hostile(files={"V1__bad.sql": "SELEC 1;"}, args=("up",), message="V1__bad.sql:1:1"),
    "SET ROLE in a transaction-mode file": Hostile(
        files={"V1__r.sql": "CREATE TABLE t (id int);\nSET ROLE pg_monitor;\n"}, args=("up",), expected_code=0
    ),
    "a deferred constraint at COMMIT": Hostile(
        files={
            "V1__fk.sql": "CREATE TABLE p (id int PRIMARY KEY);\n"
            "CREATE TABLE c (p int REFERENCES p DEFERRABLE INITIALLY DEFERRED);\nINSERT INTO c VALUES (1);\n"
        },
        args=("up",),
        message="V1__fk.sql: ERROR 23503",
    ),
    "a read-only database": Hostile(args=("up",), expected_code=2, message="read-only", prepare=_read_only),
    "a history table of another shape": Hostile(
        args=("up",), message="is not a premigrate history table", prepare=_foreign_history
    ),
    "an unreachable server": Hostile(
        args=("up", "--database-url", "postgresql://app@127.0.0.1:1/app?sslmode=disable"),
        expected_code=2,
        message="could not connect",
        with_url=False,
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_gets_a_message_and_a_documented_exit_code(
    name, capsys, monkeypatch, database_url, db, write_migrations, tmp_path, reliability
) -> None:
    hostile = HOSTILE[name]
    monkeypatch.chdir(tmp_path)
    folder = write_migrations(hostile.files)
    if hostile.prepare:
        hostile.prepare(db, database_url)
    args = [*hostile.args]
    if "--migrations" not in args:
        args += ["--migrations", str(folder)]
    if hostile.with_url and "--database-url" not in args and args[1:2] != [f"postgresql://u:{PASSWORD}@h/db"]:
        args += ["--database-url", database_url]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own usage errors
        code = int(exit_.code or 0)
    except BaseException:
        pytest.fail(f"{name}: a traceback reached the user:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    assert code in DOCUMENTED_EXIT_CODES and code == hostile.expected_code, (code, err)
    assert "Traceback" not in out + err
    assert PASSWORD not in out + err and "Se[cret" not in out + err and "Sup3r" not in out + err
    if code:
        assert "error: " in err and hostile.message in err, err
    if code and hostile.args[0] == "up" and hostile.prepare is None:
        assert db.run("SELECT to_regclass('users'), to_regclass('t')") == [[None, None]]  # nothing applied
    first_line = err.strip().splitlines()[-1][:90].replace("|", "\\|") if code else "(applied)"
    reliability(
        f"hostile input through the CLI: {name}",
        1,
        "a message and a documented exit code, no traceback, no password, nothing applied when refused",
        f"exit {code}: {first_line}",
    )


def test_new_names_files_within_the_limits(tmp_path, capsys) -> None:
    assert main(["new", "x" * 300, "--migrations", str(tmp_path)]) == 0
    assert main(["new", "добавить заказы", "--migrations", str(tmp_path)]) == 0
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == [f"V1__{'x' * 100}.sql", "V2__добавить_заказы.sql"]
    assert all(len(os.fsencode(name)) < 255 for name in names)
    assert Path(tmp_path, names[1]).read_text(encoding="utf-8") == "-- добавить заказы\n"
