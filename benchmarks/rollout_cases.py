"""Benchmarks of the rollout commands: ``premigrate check`` on 1000 pending migrations (beside applying
them), and ``premigrate fleet up`` on hundreds of databases against a loop of ``premigrate up``, with how
it scales with its concurrency. Every case runs against the bench's embedded server."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from harness import Bench, Case, premigrate, run

from pgservers import Server

FLEET_DATABASES = int(os.environ.get("BENCH_FLEET_DATABASES", "500"))
FLEET_MIGRATIONS = 20
CONCURRENCY = (1, 4, 16, 64)


def check_cases(bench: Bench, server: Server, work: Path, count: int = 1000) -> None:
    from premigrate.service.checking import check_files

    table = f"Check {count} pending migrations"
    files = [(f"V{n}__table_{n}.sql", _small_migration(n).encode()) for n in range(1, count + 1)]
    folder = work / f"check_{count}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files:
        (folder / name).write_bytes(content)

    def apply() -> None:
        with server.database("b") as url:
            run(premigrate("up", "--database-url", url, "--migrations", str(folder)))

    def checked() -> float:
        result = check_files(files, server.admin_url, since="2")  # V1 replayed, the rest measured
        assert result.exit_code == 0 and result.report is not None, result.error
        return result.report.total_ms / 1000

    bench.measure(table, "premigrate up, the same files (baseline)", apply, runs=1)
    bench.measure(
        table,
        "premigrate check (measured on a scratch database)",
        checked,
        baseline="premigrate up, the same files (baseline)",
        runs=1,
    )
    bench.note(
        table,
        "Each migration creates a table with a foreign key to an earlier one and an index; every tenth adds a "
        "column to an existing table. The check replays V1 and measures every statement of the others (locks, "
        "rewrites, catalog changes).",
    )


def _small_migration(n: int) -> str:
    if n == 1:
        return "CREATE TABLE t_1 (id bigint PRIMARY KEY);\n"
    sql = f"CREATE TABLE t_{n} (id bigint PRIMARY KEY, parent bigint REFERENCES t_{n - 1});\n"
    sql += f"CREATE INDEX ON t_{n} (parent);\n"
    if n % 10 == 0:
        sql += f"ALTER TABLE t_{n - 5} ADD COLUMN note text;\n"
    return sql


@contextlib.contextmanager
def _databases(server: Server, count: int) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(server.database("fleet")) for _ in range(count)]


def fleet_cases(bench: Bench, server: Server, work: Path) -> None:
    from apply_cases import generate

    count = FLEET_DATABASES
    table = f"Fleet: {count} databases x {FLEET_MIGRATIONS} migrations"
    folder = work / "fleet_set"
    generate(folder, FLEET_MIGRATIONS)
    loop = Case(table, "a loop of `premigrate up`, one database after another (baseline)")
    with _databases(server, count) as urls:
        started = time.perf_counter()
        for url in urls:
            run(premigrate("up", "--database-url", url, "--migrations", str(folder)))
        loop.seconds.append(time.perf_counter() - started)
    cases = [loop]
    for concurrency in CONCURRENCY:
        case = Case(table, f"premigrate fleet up --concurrency {concurrency}", baseline=loop.name)
        with _databases(server, count) as urls:
            targets = work / f"targets_{concurrency}.jsonl"
            targets.write_text(
                "".join(json.dumps({"name": f"db{i}", "database_url": u}) + "\n" for i, u in enumerate(urls))
            )
            command = ["fleet", "up", "--json", "--targets", str(targets), "--migrations", str(folder)]
            options = ["--concurrency", str(concurrency), "--per-server", str(concurrency)]
            started = time.perf_counter()
            summary = json.loads(run(premigrate(*command, *options)).stdout)
            case.seconds.append(time.perf_counter() - started)
            assert summary["counts"] == {"migrated": count}, summary
        cases.append(case)
    bench.add(cases)
    best = min(cases[1:], key=lambda c: c.median)
    bench.note(
        table,
        f"One run each (creating {count} databases takes longer than migrating them). The fleet runner plans every "
        f"database, then migrates them with a bounded thread pool in one process; {best.name.split()[-1]} at once was "
        f"{loop.median / best.median:.1f}x faster than the loop here, on {os.cpu_count()} cores with one server, "
        "where the server's own CPU is the limit.",
    )
