"""Many processes at once, and a real project's migrations: the cases where premigrate is not alone."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness import Bench, duration, premigrate, psql_args, run, timed_with_fresh_database
from peers import DBMATE, Dbmate

from pgservers import CORPORA, Server, debian_bin_dir, debian_server
from premigrate.adapters.folder import load_folder

RACERS = 8
"""The racers the race target is stated for."""


def race_cases(bench: Bench, server: Server, work: Path) -> None:
    table = f"Race: {RACERS} concurrent `up` on an empty database, 100 migrations"
    folder = work / "set_100"

    def command(url: str) -> list[str]:
        return premigrate("up", "--database-url", url, "--migrations", str(folder))

    bench.measure(table, "one `up` (baseline)", timed_with_fresh_database(server, lambda url: run(command(url))))

    def racing(url: str) -> None:
        runners = [
            subprocess.Popen(command(url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(RACERS)
        ]
        assert [r.wait(timeout=600) for r in runners] == [0] * RACERS

    racing_case = bench.measure(
        table, f"{RACERS} concurrent `up`", timed_with_fresh_database(server, racing), baseline="one `up` (baseline)"
    )

    def starting_only() -> None:
        command = [sys.executable, "-c", "import premigrate.cli, pg8000.native"]
        starters = [subprocess.Popen(command) for _ in range(RACERS)]
        assert [starter.wait(timeout=600) for starter in starters] == [0] * RACERS

    floor = bench.measure(
        table,
        f"{RACERS} interpreters that only start and import premigrate (no database)",
        starting_only,
        baseline="one `up` (baseline)",
    )
    race_note(bench, table, bench.find(table, "one `up` (baseline)").median, floor.median, racing_case.median)


def race_note(bench: Bench, table: str, single: float, start_up: float, race: float) -> None:
    """The target: the racers' wall time within 1.2x of one run plus the start-up of their interpreters, both
    measured in this run (the start-up is what the machine's cores cost, not what the lock costs)."""
    target = 1.2 * (single + start_up)
    verdict = "met" if race <= target else "missed"
    bench.note(
        table,
        (
            f"Target: {RACERS} racers within 1.2x (one `up` + the start-up of {RACERS} interpreters) = 1.2 x "
            f"({duration(single)} + {duration(start_up)}) = {duration(target)}; the race took {duration(race)} "
            f"({race / (single + start_up):.2f}x): {verdict}. {RACERS} processes start {RACERS} Python interpreters "
            f"on {os.cpu_count()} cores. The waiters wake when the winner releases the lock (its NOTIFY), not at "
            "their next poll, find the work done and exit. In Lambda, the same lock makes such racing invocations "
            "take turns (and ReservedConcurrency can cap them)."
        ),
    )


def corpus_cases(bench: Bench, dbmate: Dbmate) -> None:
    table = "Real-world folder: Lemmy, 247 migrations (Debian PostgreSQL 15, for pgcrypto)"
    lemmy = CORPORA / "lemmy"
    bin_dir = debian_bin_dir()
    if not lemmy.is_dir() or bin_dir is None:
        print(f"  skipped {table}: needs ../shared/corpora and the Debian PostgreSQL binaries")
        return
    files = [str(lemmy / m.script) for m in load_folder(lemmy).versioned]
    up = "premigrate up (process)"
    with debian_server(bin_dir) as server, tempfile.TemporaryDirectory(prefix="premigrate-bench-") as scratch:
        dbmate_folder, why_not = dbmate.prepare(server, lemmy, Path(scratch))
        contenders: list[tuple[str, Callable[[str], object]]] = [
            (
                "psql, all files in one session (baseline)",
                lambda url: run([*psql_args(server, url), *[a for f in files for a in ("-f", f)]]),
            ),
            (up, lambda url: run(premigrate("up", "--database-url", url, "--migrations", str(lemmy)))),
        ]
        if dbmate_folder is not None:
            contenders.append((DBMATE, lambda url: dbmate.migrate(dbmate_folder, url)))
        bench.compare(table, server, contenders)
    bench.note(
        table,
        (
            "psql runs each statement in its own transaction here (no -1); premigrate wraps each file, its "
            "statements and its history row in one transaction, so it commits 247 times instead of about 1,500."
        ),
    )
    dbmate.note(bench, table, up, DBMATE, folder=dbmate_folder, why_not=why_not)
