"""The command line's rollout commands, beside the migration ones of ``cli``:

- ``check``: measure the pending migrations on a scratch database (docs/safe-rollouts.md);
- ``ready``: an instance waits until the database has what its code needs (exit 5 when it does not);
- ``fleet plan|up``: one migration set over the databases of a manifest (docs/fleet.md).

Each only translates: options in, one service call, its result printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from premigrate.console import Console
from premigrate.service import Config
from premigrate.service.setting_kinds import DURATION

ROLLOUT_COMMANDS = ("check", "ready", "fleet")


def run_rollout_command(config: Config, args: argparse.Namespace, console: Console) -> int:
    if args.command == "check":
        return _check(config, args, console)
    if args.command == "ready":
        return _ready(config, args, console)
    return _fleet(config, args, console)


def _check(config: Config, args: argparse.Namespace, console: Console) -> int:
    from premigrate.service.checking import CheckOptions, check

    options = CheckOptions(scratch_url=args.scratch_url, since=args.since, max_locked_rows=args.max_locked_rows)
    result = check(config, options, observer=console)
    if args.json:
        console.out(json.dumps(result.to_dict(), indent=2))
    elif result.report is not None:
        console.out(result.report.text())
    return _finish(result.error, result.exit_code)


def _ready(config: Config, args: argparse.Namespace, console: Console) -> int:
    from premigrate.service.connecting import with_embedded_database
    from premigrate.service.readiness import ReadyQuestion, wait_until_ready

    question = ReadyQuestion(args.expect_version, args.expect_fingerprint, args.wait)
    result = wait_until_ready(with_embedded_database(config), question, observer=console)
    if result.ok and result.report is not None:
        console.out(
            json.dumps({"ready": True, "summary": result.report.notes[0]}) if args.json else result.report.notes[0]
        )
    elif args.json:
        console.out(json.dumps({"ready": False, "error": result.error, "error_kind": result.error_kind}))
    return _finish(result.error, result.exit_code)


def _fleet(config: Config, args: argparse.Namespace, console: Console) -> int:
    from premigrate.fleet.rollout import Outcome, RolloutOptions, Status, Summary
    from premigrate.service.fleet import fleet

    started = time.monotonic()

    def progress(step: str, outcomes: list[Outcome]) -> None:
        counted = ", ".join(f"{count} {status}" for status, count in Summary(outcomes).counts().items())
        console.line(f"{step:<16} {len(outcomes)} database(s): {counted} ({time.monotonic() - started:.1f} s)")

    options = RolloutOptions(args.concurrency, args.per_server, args.tolerated_failure_percentage)
    result = fleet(config, args.targets, options, args.fleet_action == "plan", progress)
    if result.summary is not None and args.json:
        console.out(json.dumps(result.summary.to_dict(), indent=2))
    elif result.summary is not None:
        for outcome in result.summary.outcomes:
            if outcome.status in (Status.FAILED, Status.INVALID):
                console.out(f"  {outcome.name} ({outcome.status}): {outcome.error}")
        pending = sum(o.pending for o in result.summary.outcomes if o.status is Status.PLANNED)
        counted = ", ".join(f"{count} {status}" for status, count in result.summary.counts().items())
        console.out(f"summary: {counted}" + (f"; {pending} migration(s) pending in all" if pending else ""))
    return _finish(result.error, result.exit_code)


def _finish(error: str | None, exit_code: int) -> int:
    if error:
        print(f"error: {error}", file=sys.stderr)
    return exit_code


def add_rollout_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    _add_check(commands, common)
    ready = commands.add_parser(
        "ready",
        parents=[common],
        help="wait until the database has the before-rollout migrations this code needs (read-only)",
        description="For an instance about to start: read-only, no lock, one query a poll. Exit 0 when ready, 5 "
        "when not (one line says what is missing). Without --expect-version, every before-rollout file of the "
        "migrations folder must be applied. docs/deploying.md has the same check as one psql query.",
    )
    which = ready.add_mutually_exclusive_group()
    which.add_argument(
        "--expect-version", metavar="VERSION", help="ready once a before-rollout version >= VERSION is applied"
    )
    which.add_argument(
        "--expect-fingerprint", metavar="FINGERPRINT", help="refuse a migrations folder of another release"
    )
    ready.add_argument("--wait", type=_duration, default=0.0, metavar="DURATION", help="how long to wait [default: 0s]")
    _add_fleet(commands, common)


def _add_fleet(commands: Any, common: argparse.ArgumentParser) -> None:
    fleet = commands.add_parser(
        "fleet",
        parents=[common],
        help="plan or apply the migrations on every database of a targets manifest",
        description="Plan every database (read-only; any invalid one stops the rollout before a change), then the "
        "canary (wave 0), then each later wave within its failure budget. Exit 0 only when every database is "
        "migrated. See docs/fleet.md.",
    )
    fleet.add_argument("fleet_action", choices=("plan", "up"), metavar="plan|up")
    fleet.add_argument(
        "--targets", required=True, metavar="FILE", help="JSON Lines manifest, or s3://bucket/key?versionId=V"
    )
    fleet.add_argument("--concurrency", type=_positive, default=8, metavar="N", help="databases at once [default: 8]")
    fleet.add_argument(
        "--per-server", type=_positive, default=2, metavar="N", help="at once on one server [default: 2]"
    )
    fleet.add_argument(
        "--tolerated-failure-percentage",
        type=_percentage,
        default=0.0,
        metavar="P",
        help="failures a wave may have before it stops starting databases (not the canary's) [default: 0]",
    )


def _add_check(commands: Any, common: argparse.ArgumentParser) -> None:
    from premigrate.checking.rules import DEFAULT_MAX_LOCKED_ROWS

    check = commands.add_parser(
        "check",
        parents=[common],
        help="measure the pending migrations on a scratch database: locks, rewrites, breaking changes",
        description="Replay the migrations on a new scratch database and measure what each pending statement "
        "does there (locks held, tables rewritten or scanned, what running code sees change); with "
        "--database-url the target's history says what is pending and its statistics size the tables (read "
        "only). Exit 4 when an error-level finding stands. See docs/safe-rollouts.md.",
    )
    check.add_argument(
        "--scratch-url",
        metavar="URL",
        help="server to create the scratch database on (its user needs CREATEDB) [default: the embedded PostgreSQL]",
    )
    check.add_argument(
        "--since",
        metavar="VERSION",
        help="without --database-url: check VERSION and later, replaying the earlier ones "
        "[default: what the embedded database has not applied]",
    )
    check.add_argument(
        "--max-locked-rows",
        type=_row_count,
        default=DEFAULT_MAX_LOCKED_ROWS,
        metavar="N",
        help="work under a lock that blocks reads or writes is an error on a table with more rows than this, a "
        f"warning below [default: {DEFAULT_MAX_LOCKED_ROWS}]",
    )


def _duration(text: str) -> float:
    try:
        return float(DURATION.coerce(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _row_count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of rows; give a whole number, like 100000")
    return int(text)


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more, like 8")
    return int(text)


def _percentage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage from 0 to 100")
    return value
