"""The command line: ``premigrate plan | up | status | validate | baseline | repair | new | invoke | fingerprint``,
and the rollout commands ``check | ready | fleet`` (``cli_rollout``).

A translator, as dbmate's CLI is: the options are generated from the settings' one declaration, copied
onto a Config, and each command is one ``Service.run``. With no database given, an embedded PostgreSQL
under ``.premigrate/`` is used, so the commands work on a laptop with nothing installed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import NoReturn

from premigrate import __version__
from premigrate.cli_rollout import ROLLOUT_COMMANDS, add_rollout_commands, run_rollout_command
from premigrate.console import Console
from premigrate.interruptions import Interrupted, Interruptions
from premigrate.service import EXIT_CODES, SPECS, Category, Config, Request, Service, failure, load_config
from premigrate.service.setting_kinds import DURATION
from premigrate.service.settings import hide_passwords

_COMMANDS = {  # command: (service action, help)
    "plan": ("plan", "show what `up` would apply, and refuse as `up` would"),
    "up": ("migrate", "apply every pending migration"),
    "status": ("status", "list every migration and its state"),
    "validate": ("validate", "check the history against the files; apply nothing"),
    "repair": ("repair", "remove failed records and re-record edited checksums"),
    "baseline": (
        "baseline",
        "adopt an existing database: record VERSION and all lower versions as applied without running them",
    ),
}
_EXIT_HELP = (
    f"exit codes: 0 success, {EXIT_CODES[Category.MIGRATION]} a migration, validation or database operation "
    f"failed, {EXIT_CODES[Category.CONFIGURATION]} usage or configuration error (bad option, unreachable database), "
    f"{EXIT_CODES[Category.LOCK]} migration lock not obtained within --lock-wait, "
    f"{EXIT_CODES[Category.UNSAFE]} `premigrate check` found an error-level finding no allow directive acknowledges, "
    f"{EXIT_CODES[Category.NOT_READY]} `premigrate ready`: the database still lacks a migration after --wait, "
    f"{EXIT_CODES[Category.INTERNAL]} internal error (a premigrate bug), 130 and 143 interrupted by Ctrl-C or "
    "SIGTERM (the running statement is cancelled on the server)"
)


class _Parser(argparse.ArgumentParser):
    """argparse echoes what it could not use: a misplaced URL would show its password on stderr."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {hide_passwords(message)}\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(json_mode=args.json)
    with Interruptions() as interruptions:
        try:
            return _command(args, console, interruptions)
        except Interrupted:
            return console.interrupted(None, interruptions.signal_name or "a signal", interruptions.exit_code)


def _command(args: argparse.Namespace, console: Console, interruptions: Interruptions) -> int:
    try:
        config = load_config("cli", os.environ, {name: getattr(args, name) for name in SPECS})
        console.folder = config.migrations
        if args.command == "new":
            console.out(str(_new_migration(Path(config.migrations), args.description)))
            return 0
        if args.command in ROLLOUT_COMMANDS:
            return run_rollout_command(config, args, console)
        if args.command == "fingerprint":
            from premigrate.adapters.folder import load_folder

            console.out(load_folder(Path(config.migrations)).fingerprint)
            return 0
        from premigrate.service.connecting import with_embedded_database

        config = with_embedded_database(config)
        if args.command == "invoke":
            return _invoke(config, args.event_file, args.remaining_time, console)
    except Exception as error:
        return console.show(failure(error))
    action, _ = _COMMANDS[args.command]
    interruptions.service = Service(config, observer=console)
    result = interruptions.service.run(Request(action, baseline_version=getattr(args, "baseline_version", None)))
    if interruptions.signal_name:
        return console.interrupted(result, interruptions.signal_name, interruptions.exit_code)
    return console.show(result)


def _invoke(config: Config, event_file: str, remaining_seconds: float, console: Console) -> int:
    """The Lambda handler in-process; its settings reach it through the environment, as in Lambda."""
    import json

    from premigrate.local_invoke import invoke

    try:
        event = json.loads(Path(event_file).read_text())
    except (OSError, ValueError) as error:
        from premigrate.engine import ConfigurationError

        raise ConfigurationError(f"cannot read the event file {event_file}: {error}") from None
    saved = dict(os.environ)
    try:
        for spec in SPECS.values():
            if "lambda" not in spec.front_doors:
                os.environ.pop(spec.env, None)
        os.environ.update(config.to_environ())
        os.environ["PREMIGRATE_MIGRATIONS"] = str(Path(config.migrations).resolve())
        result = invoke(event, remaining_seconds=remaining_seconds)
    finally:  # the function's environment is this invocation's only
        os.environ.clear()
        os.environ.update(saved)
    console.out(json.dumps(result, indent=2, default=str))
    if result.get("ok") or result.get("Status") == "SUCCESS":
        return 0
    kind = result.get("error_kind")
    return EXIT_CODES[Category(kind)] if kind in set(Category) else EXIT_CODES[Category.MIGRATION]


_LONGEST_SLUG = 100
"""File names stay far below the usual 255-byte limit, whatever the description's length."""


def _new_migration(folder: Path, description: str) -> Path:
    from premigrate.adapters.folder import load_folder
    from premigrate.engine import ConfigurationError, Version

    slug = re.sub(r"\W+", "_", description.lower()).strip("_")[:_LONGEST_SLUG].rstrip("_")
    if not slug:
        raise ConfigurationError('the description needs at least one letter or digit, like "add sessions"')
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"{folder} is a file, not a folder of migrations: give the folder with --migrations")
    migrations = load_folder(folder) if folder.is_dir() else None
    versions = [m.version for m in migrations.versioned if m.version] if migrations else []
    highest = max(versions, default=Version((0,), "0"))
    width = max((len(v.text) for v in versions if v.text.isdigit()), default=1)
    path = folder / f"V{highest.key[0] + 1:0{width}d}__{slug}.sql"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"-- {description}\n", encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot create {path}: {error.strerror or error}") from None
    return path


def _duration(text: str) -> float:
    try:
        return float(DURATION.coerce(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _settings_options() -> _Parser:
    """One option per setting of the command line, from the settings' declaration."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("settings (each also read from the environment variable shown)")
    defaults = {f.name: f.default for f in fields(Config)}
    for name, spec in SPECS.items():
        if "cli" not in spec.front_doors:
            continue
        default = defaults[name]
        shown = f", default: {spec.kind.format(default)}" if default not in (None, False) else ""
        help_text = f"{spec.help} [{spec.env}{shown}]"
        if spec.kind.is_flag:
            group.add_argument(spec.option, dest=name, action="store_const", const=True, help=help_text)
        else:
            group.add_argument(spec.option, dest=name, metavar=spec.metavar, help=help_text)
    group.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _settings_options()
    parser = _Parser(
        prog="premigrate",
        description="PostgreSQL schema migrations, exactly once, before your Auto Scaling Group rolls out.",
        epilog=_EXIT_HELP,
    )
    parser.add_argument("--version", action="version", version=f"premigrate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in _COMMANDS.items():
        command = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "baseline":
            command.add_argument("--version", dest="baseline_version", required=True, metavar="VERSION")
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
    add_rollout_commands(commands, common)
    commands.add_parser(
        "fingerprint", parents=[common], help="print the migration set's fingerprint (changes with any file)"
    )
    new = commands.add_parser("new", parents=[common], help="create the next V<version>__<description>.sql")
    new.add_argument("description")
    return parser
