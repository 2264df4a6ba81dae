"""Applying generated migrations to an empty database: premigrate against psql doing the least and the same
work, and against dbmate, each on a fresh database, round-robin."""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from pathlib import Path

from harness import Bench, premigrate, psql_args, run
from latency import DelayProxy, delayed
from peers import DBMATE, Dbmate

from pgservers import Server
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.engine import Engine, Settings
from premigrate.engine.directives import Phase
from premigrate.engine.history import HistoryTable

UP = "premigrate up (process: start, migrate, exit)"
PSQL_PER_FILE = "psql, one transaction per file, one session (baseline)"


def generate(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(1, count + 1):
        path = folder / f"V{n}__table_{n}.sql"
        path.write_text(
            f"CREATE TABLE t_{n} (id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz DEFAULT now());\n"
            f"CREATE INDEX t_{n}_name_idx ON t_{n} (name);\n"
            f"INSERT INTO t_{n} (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c');\n"
        )
        files.append(path)
    return files


ROUND_TRIP_SECONDS = 0.001
"""Between availability zones; within one, RDS is often 0.2-0.5 ms away."""


def apply_cases(bench: Bench, server: Server, work: Path, dbmate: Dbmate) -> None:
    for count in (100, 1000):
        apply_case(bench, server, work, count, dbmate)
    across_a_network(bench, server, work, dbmate, 100)


def across_a_network(bench: Bench, server: Server, work: Path, dbmate: Dbmate, count: int) -> None:
    """The same files, with every byte between client and server delayed as by a network."""
    table = f"Apply {count} generated migrations across a network ({ROUND_TRIP_SECONDS * 1000:g} ms round trip)"
    folder, per_file_tx = work / f"set_{count}", work / f"per_file_tx_{count}.sql"
    dbmate_folder, why_not = dbmate.prepare(server, folder, work / f"dbmate_{count}")
    with delayed(server.admin_url, ROUND_TRIP_SECONDS / 2) as proxy:
        contenders: list[Contender] = [
            (PSQL_PER_FILE, lambda url: run([*psql_args(server, proxy.url(url)), "-f", str(per_file_tx)])),
            (UP, lambda url: run(premigrate("up", "--database-url", proxy.url(url), "--migrations", str(folder)))),
        ]
        if dbmate_folder is not None:
            contenders.append((DBMATE, lambda url: dbmate.migrate(dbmate_folder, proxy.url(url))))
        bench.compare(table, server, contenders)
        requests = {name: requests_per_migration(server, proxy, apply, count) for name, apply in contenders}
    dbmate.note(bench, table, UP, DBMATE, folder=dbmate_folder, why_not=why_not)
    bench.note(
        table,
        "Requests each sent per migration (chunks the proxy carried to the server, each a round trip, "
        "connecting and the history's set-up included): "
        + ", ".join(f"{name.split(' (')[0]} {sent:.1f}" for name, sent in requests.items())
        + ". premigrate sends a file's statements, its history row and its COMMIT as one message.",
    )


def requests_per_migration(server: Server, proxy: DelayProxy, apply: Callable[[str], object], count: int) -> float:
    with server.database("b") as url:
        before = proxy.requests
        apply(url)
        return (proxy.requests - before) / count


def apply_case(bench: Bench, server: Server, work: Path, count: int, dbmate: Dbmate) -> None:
    table = f"Apply {count} generated migrations to an empty database"
    folder = work / f"set_{count}"
    files = generate(folder, count)
    dbmate_folder, why_not = dbmate.prepare(server, folder, work / f"dbmate_{count}")
    contenders = psql_contenders(server, work, files)
    contenders += premigrate_contenders(folder)
    if dbmate_folder is not None:
        contenders.append((DBMATE, lambda url: dbmate.migrate(dbmate_folder, url)))
    bench.compare(table, server, contenders)
    apply_notes(bench, table)
    dbmate.note(bench, table, UP, DBMATE, folder=dbmate_folder, why_not=why_not)
    if count == 1000:
        profile(bench, table, server, folder)


Contender = tuple[str, Callable[[str], object]]


def psql_contenders(server: Server, work: Path, files: list[Path]) -> list[Contender]:
    """psql's least work first (the baseline), then with premigrate's history rows (the same work)."""
    count = len(files)
    per_file_tx = work / f"per_file_tx_{count}.sql"
    per_file_tx.write_text("".join(f"BEGIN;\n{f.read_text()}COMMIT;\n" for f in files))
    everything = work / f"all_{count}.sql"
    everything.write_text("".join(f.read_text() for f in files))
    history = HistoryTable("public", "premigrate_schema_history")
    with_history = with_history_rows(files, history, work / f"per_file_tx_with_history_{count}.sql")

    def psql_with_history(url: str) -> None:
        connection = connect(params_from_url(url))
        history.create(connection)
        connection.close()
        run([*psql_args(server, url), "-f", str(with_history)])

    def psql(*args: str) -> Callable[[str], object]:
        return lambda url: run([*psql_args(server, url), *args])

    return [
        (PSQL_PER_FILE, psql("-f", str(per_file_tx))),
        ("psql -1 -f, all files in one transaction", psql("-1", "-f", str(everything))),
        ("psql, one transaction per file with premigrate's history row (equal work)", psql_with_history),
        ("psql -f, one process per file", lambda url: [psql("-f", str(f))(url) for f in files] and None),
    ]


def premigrate_contenders(folder: Path) -> list[Contender]:
    def engine_only(url: str, all_or_nothing: bool = False) -> None:
        connection = connect(params_from_url(url))
        Engine(connection, load_folder(folder), Settings(all_or_nothing=all_or_nothing)).migrate()
        connection.close()

    return [
        (UP, lambda url: run(premigrate("up", "--database-url", url, "--migrations", str(folder)))),
        ("premigrate engine in-process (connected, files loaded)", engine_only),
        (
            "premigrate up --all-or-nothing (process)",
            lambda url: run(premigrate("up", "--all-or-nothing", "--database-url", url, "--migrations", str(folder))),
        ),
        ("premigrate engine in-process, all-or-nothing", lambda url: engine_only(url, all_or_nothing=True)),
    ]


def apply_notes(bench: Bench, table: str) -> None:
    one_transaction = bench.find(table, "psql -1 -f, all files in one transaction").median
    grouped = bench.find(table, "premigrate up --all-or-nothing (process)").median
    grouped_engine = bench.find(table, "premigrate engine in-process, all-or-nothing").median
    bench.note(
        table,
        f"All-or-nothing against `psql -1 -f` (one transaction, one commit: the physical limit for applying "
        f"files): the `up --all-or-nothing` process takes {grouped / one_transaction:.2f}x, its engine "
        f"{grouped_engine / one_transaction:.2f}x (target: within 1.05x; "
        f"{'met' if grouped <= 1.05 * one_transaction else 'not met'} by the process).",
    )
    equal = bench.find(table, "psql, one transaction per file with premigrate's history row (equal work)").median
    process = bench.find(table, UP).median
    engine = bench.find(table, "premigrate engine in-process (connected, files loaded)").median
    bench.note(
        table,
        (
            f"Against psql doing the same work (each file and one history row per transaction), premigrate's "
            f"engine takes {engine / equal:.2f}x and the whole `up` process {process / equal:.2f}x. The gap to "
            "plain psql is the history row the database writes per migration, which is what makes a run "
            "idempotent, plus about 0.2 s of Python start-up and imports for the process."
        ),
    )


def with_history_rows(files: list[Path], history: HistoryTable, script: Path) -> Path:
    """The same work premigrate does, for psql: each file and its history row in one transaction."""
    rows = [
        history.insert_sql(
            version=str(n),
            description=f.stem,
            type="SQL",
            script=f.name,
            checksum="0" * 64,
            execution_ms=1,
            success=True,
            execution_mode="transaction",
            phase=Phase.BEFORE_ROLLOUT.value,
        )
        for n, f in enumerate(files, start=1)
    ]
    script.write_text("".join(f"BEGIN;\n{f.read_text()}{row};\nCOMMIT;\n" for f, row in zip(files, rows, strict=True)))
    return script


def profile(bench: Bench, table: str, server: Server, folder: Path) -> None:
    with server.database("b") as url:
        connection = connect(params_from_url(url))
        migration_set = load_folder(folder)
        profiler = cProfile.Profile()
        profiler.enable()
        Engine(connection, migration_set).migrate()
        profiler.disable()
        connection.close()
    stats = pstats.Stats(profiler)
    shares = {"server (waiting on the socket)": 0.0, "pg8000": 0.0, "premigrate": 0.0, "other Python": 0.0}
    for (file, _, name), (_, _, own_time, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "_socket.socket" in name:
            shares["server (waiting on the socket)"] += own_time
        elif "/pg8000/" in file:
            shares["pg8000"] += own_time
        elif "/premigrate/" in file:
            shares["premigrate"] += own_time
        else:
            shares["other Python"] += own_time
    total = sum(shares.values())
    bench.note(
        table,
        (
            "Where the time goes (cProfile of the engine applying the 1000, own time): "
            + ", ".join(f"{name} {seconds / total:.0%}" for name, seconds in shares.items())
            + ". Premigrate sends each file as one message: BEGIN, its statements, its history row, the lock's "
            "check, COMMIT and the session's reset; psql sends each statement on its own. What remains is the "
            "server executing the DDL and the commits, whose time on this machine's disk varies from run to run "
            "more than the tools differ (compare the two psql baselines)."
        ),
    )
