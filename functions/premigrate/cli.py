"""The command line: ``premigrate plan | up | status | validate | baseline | repair | new``.

Exit codes: 0 success, 1 migration or validation failure, 2 usage or configuration error,
3 migration lock not obtained within --lock-wait. With no database given, an embedded PostgreSQL
under ``.premigrate/`` is used, so the commands work on a laptop with nothing installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from premigrate import __version__
from premigrate.adapters.connection import ConnectionParams, close_quietly, connect, params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.durations import parse_duration
from premigrate.engine import (
    ConfigurationError,
    Engine,
    LockNotAcquiredError,
    PremigrateError,
    Report,
    Settings,
    Version,
)
from premigrate.engine.report import MigrationRun

EXIT_OK, EXIT_FAILED, EXIT_CONFIGURATION, EXIT_LOCK = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    output = _Output(json_mode=args.json)
    try:
        if args.command == "new":
            return _new_migration(Path(args.migrations), args.description)
        if args.command == "invoke":
            return _invoke(args)
        if args.command == "fingerprint":
            print(load_folder(Path(args.migrations)).fingerprint)
            return EXIT_OK
        return _run_engine_command(args, output)
    except LockNotAcquiredError as error:
        return output.failure(error, EXIT_LOCK)
    except ConfigurationError as error:
        return output.failure(error, EXIT_CONFIGURATION)
    except PremigrateError as error:
        return output.failure(error, EXIT_FAILED)


def _run_engine_command(args: argparse.Namespace, output: _Output) -> int:
    migrations = load_folder(Path(args.migrations))
    params = _connection_params(args)
    output.line(f"database    {params.describe()}")
    output.line(
        f"migrations  {args.migrations} ({len(migrations.versioned)} versioned, "
        f"{len(migrations.repeatable)} repeatable)"
    )
    connection = connect(params)
    try:
        engine = Engine(connection, migrations, _settings(args), progress=output.progress)
        commands: dict[str, Callable[[], Report]] = {
            "plan": engine.plan,
            "validate": engine.validate,
            "status": engine.status,
            "up": engine.migrate,
            "repair": engine.repair,
            "baseline": lambda: engine.baseline(args.version),
        }
        report = commands[args.command]()
    finally:
        close_quietly(connection)
    output.report(report)
    return EXIT_OK


def _invoke(args: argparse.Namespace) -> int:
    """The Lambda handler in-process; its settings reach it through the environment, as in Lambda."""
    from premigrate.local_invoke import invoke

    try:
        event = json.loads(Path(args.event_file).read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot read the event file {args.event_file}: {error}") from None
    if not args.database_url and not args.secret_id:
        from premigrate.adapters.embedded import start_embedded

        args.database_url = start_embedded(Path(args.embedded_dir))
    settings = {
        "PREMIGRATE_DATABASE_URL": args.database_url or "",
        "PREMIGRATE_SECRET_ID": args.secret_id or "",
        "PREMIGRATE_MIGRATIONS": str(Path(args.migrations).resolve()),
        "PREMIGRATE_SCHEMA": args.schema,
        "PREMIGRATE_LOCK_WAIT": str(args.lock_wait),
        "PREMIGRATE_LOCK_TIMEOUT": str(args.lock_timeout),
        "PREMIGRATE_STATEMENT_TIMEOUT": str(args.statement_timeout),
    }
    os.environ.update(settings)
    result = invoke(event, remaining_seconds=args.remaining_time)
    print(json.dumps(result, indent=2, default=str))
    return EXIT_OK if result.get("ok") or result.get("Status") == "SUCCESS" else EXIT_FAILED


def _connection_params(args: argparse.Namespace) -> ConnectionParams:
    if args.database_url:
        return params_from_url(args.database_url)
    if args.secret_id:
        from premigrate.adapters.secret import read_secret  # boto3 only when a secret is asked for

        return read_secret(args.secret_id, sslrootcert=os.environ.get("PREMIGRATE_CA_BUNDLE"))
    from premigrate.adapters.embedded import start_embedded

    return params_from_url(start_embedded(Path(args.embedded_dir)))


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        schema=args.schema,
        lock_wait_seconds=args.lock_wait,
        lock_timeout_seconds=args.lock_timeout,
        statement_timeout_seconds=args.statement_timeout,
        allow_out_of_order=args.out_of_order,
        target=args.target,
    )


def _new_migration(folder: Path, description: str) -> int:
    slug = re.sub(r"[^0-9a-z]+", "_", description.lower()).strip("_")
    if not slug:
        raise ConfigurationError('the description needs at least one letter or digit, like "add sessions"')
    migrations = load_folder(folder) if folder.is_dir() else None
    versions = [m.version for m in migrations.versioned if m.version] if migrations else []
    highest = max(versions, default=Version((0,), "0"))
    width = max((len(v.text) for v in versions if v.text.isdigit()), default=1)
    path = folder / f"V{highest.key[0] + 1:0{width}d}__{slug}.sql"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(f"-- {description}\n")
    print(path)
    return EXIT_OK


class _Output:
    """Human lines on stdout (or the JSON report alone with --json); errors on stderr."""

    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode

    def line(self, text: str) -> None:
        if not self.json_mode:
            print(text, flush=True)

    def progress(self, event: str, run: MigrationRun) -> None:
        if event == "started":
            self.line(f"  applying {_label(run)} ({run.mode}: {run.mode_reason}) …")
        else:
            retried = f", {run.attempts} attempts" if run.attempts > 1 else ""
            self.line(f"  applied  {_label(run)} in {run.duration_ms:.0f} ms{retried}")

    def report(self, report: Report) -> None:
        if self.json_mode:
            print(json.dumps(report.to_dict(), default=str, indent=2))
            return
        if report.action in ("status", "plan", "validate") and report.states:
            self._table(report)
        for note in report.notes:
            self.line(f"note: {note}")
        before = report.schema_version_before or "none"
        after = report.schema_version_after or "none"
        if report.action == "migrate":
            if report.applied:
                self.line(
                    f"schema version {before} -> {after}: applied {len(report.applied)} migration(s) "
                    f"in {report.total_ms / 1000:.2f} s (waited {report.lock_wait_ms / 1000:.2f} s for the lock)"
                )
            else:
                self.line(f"schema is up to date at version {after}: nothing to apply")
        elif report.action in ("plan", "validate", "status"):
            if report.pending:
                self.line(f"schema version {before}; {len(report.pending)} migration(s) pending:")
                for run in report.pending:
                    self.line(f"  {_label(run)} ({run.mode}: {run.mode_reason})")
            else:
                self.line(f"schema is up to date at version {after}")
        else:
            self.line(f"schema version {after}")

    def _table(self, report: Report) -> None:
        rows = [("version", "description", "state", "installed on")] + [
            (s.version or "R", s.description, s.state, s.installed_on or "") for s in report.states
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            self.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def failure(self, error: PremigrateError, code: int) -> int:
        if self.json_mode:
            body: dict[str, Any] = {"error": str(error), "exit_code": code}
            if error.report is not None:
                body["report"] = error.report.to_dict()
            print(json.dumps(body, default=str, indent=2))
        elif error.report is not None and error.report.applied:
            self.line(f"applied before the failure: {', '.join(_label(r) for r in error.report.applied)}")
        print(f"error: {error}", file=sys.stderr)
        return code


def _label(run: MigrationRun) -> str:
    return f"V{run.version} {run.description}" if run.version else f"R {run.description}"


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and settings (each also read from the environment variable shown)")
    group.add_argument(
        "--database-url",
        default=env("PREMIGRATE_DATABASE_URL"),
        metavar="URL",
        help="postgresql://user:password@host:5432/db?sslmode=verify-full [PREMIGRATE_DATABASE_URL]; "
        "with neither this nor --secret-id an embedded PostgreSQL is used",
    )
    group.add_argument(
        "--secret-id",
        default=env("PREMIGRATE_SECRET_ID"),
        metavar="ID",
        help="Secrets Manager secret with the RDS connection JSON [PREMIGRATE_SECRET_ID]",
    )
    group.add_argument(
        "--migrations",
        default=env("PREMIGRATE_MIGRATIONS", "migrations"),
        metavar="DIR",
        help="folder of V<version>__<description>.sql and R__<description>.sql files "
        "[PREMIGRATE_MIGRATIONS, default: migrations]",
    )
    group.add_argument(
        "--schema",
        default=env("PREMIGRATE_SCHEMA", "public"),
        help="schema of the history table [PREMIGRATE_SCHEMA, default: public]",
    )
    group.add_argument(
        "--lock-wait",
        type=_duration,
        default=env("PREMIGRATE_LOCK_WAIT", "300s"),
        metavar="DURATION",
        help="how long to wait for another run's migration lock [PREMIGRATE_LOCK_WAIT, default: 300s]",
    )
    group.add_argument(
        "--lock-timeout",
        type=_duration,
        default=env("PREMIGRATE_LOCK_TIMEOUT", "5s"),
        metavar="DURATION",
        help="PostgreSQL lock_timeout for migration statements; retried "
        "with backoff [PREMIGRATE_LOCK_TIMEOUT, default: 5s]",
    )
    group.add_argument(
        "--statement-timeout",
        type=_duration,
        default=env("PREMIGRATE_STATEMENT_TIMEOUT", "0"),
        metavar="DURATION",
        help="PostgreSQL statement_timeout for migration statements, 0 = none "
        "[PREMIGRATE_STATEMENT_TIMEOUT, default: 0]",
    )
    group.add_argument(
        "--target",
        default=env("PREMIGRATE_TARGET"),
        metavar="VERSION",
        help="apply versions up to this one only [PREMIGRATE_TARGET]",
    )
    group.add_argument(
        "--out-of-order",
        action="store_true",
        default=env("PREMIGRATE_OUT_OF_ORDER") == "1",
        help="apply pending versions lower than the highest applied [PREMIGRATE_OUT_OF_ORDER=1]",
    )
    group.add_argument(
        "--embedded-dir",
        default=env("PREMIGRATE_EMBEDDED_DIR", ".premigrate"),
        metavar="DIR",
        help="where the embedded PostgreSQL keeps its data [default: .premigrate]",
    )
    group.add_argument("--json", action="store_true", help="print the report as JSON on stdout")

    parser = argparse.ArgumentParser(
        prog="premigrate",
        description="PostgreSQL schema migrations, exactly once, before your Auto Scaling Group rolls out.",
        epilog="exit codes: 0 success, 1 migration or validation failure, 2 usage or configuration error, "
        "3 migration lock not obtained within --lock-wait",
    )
    parser.add_argument("--version", action="version", version=f"premigrate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (
        ("plan", "show what `up` would apply, and refuse as `up` would"),
        ("up", "apply every pending migration"),
        ("status", "list every migration and its state"),
        ("validate", "check the history against the files; apply nothing"),
        ("repair", "remove failed records and re-record edited checksums"),
    ):
        commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    baseline = commands.add_parser(
        "baseline",
        parents=[common],
        help="adopt an existing database: record VERSION and all lower versions as applied without running them",
    )
    baseline.add_argument("--version", required=True, metavar="VERSION")
    invoke = commands.add_parser(
        "invoke", parents=[common], help="run the Lambda handler in this process on an event file (no Docker)"
    )
    invoke.add_argument("event_file", metavar="EVENT_FILE", help="a JSON event, such as events/direct-plan.json")
    invoke.add_argument(
        "--remaining-time",
        type=_duration,
        default="900s",
        metavar="DURATION",
        help="the Lambda time the context reports at the start [default: 900s]",
    )
    commands.add_parser(
        "fingerprint", parents=[common], help="print the migration set's fingerprint (changes with any file)"
    )
    new = commands.add_parser("new", parents=[common], help="create the next V<version>__<description>.sql")
    new.add_argument("description")
    return parser
