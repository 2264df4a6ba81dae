"""Other migration tools measured beside premigrate in the same run: dbmate, a single Go binary.

dbmate comes from npm (its package ships the binary for this platform), into a cache folder in the repo
so that later runs need no network; DBMATE=/path/to/dbmate uses a given binary instead. When neither
works, the bench goes on without it and every note that would compare with it says why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from harness import REPO, Bench, duration, run

from pgservers import Server
from premigrate.adapters.connection import params_from_url
from premigrate.adapters.folder import load_folder
from premigrate.adapters.postgres import connect
from premigrate.engine.migrations import ExecutionMode

DBMATE_VERSION = "2.36.0"
"""Pinned, so that two runs of the bench compare with the same dbmate."""
CACHE = REPO / ".bench-tools" / f"dbmate-{DBMATE_VERSION}"
INSTALL_TIMEOUT = 180
DBMATE = "dbmate migrate (process)"
"""The name of dbmate's case in the tables that apply migrations."""


@dataclass(frozen=True)
class Dbmate:
    binary: Path | None
    version: str = ""
    skipped: str = ""
    """Why dbmate is not measured (when binary is None)."""

    def command(self, folder: Path, url: str) -> list[str]:
        """`dbmate migrate`: what `dbmate up` does minus its check that the database exists (it always does
        here), so the work is the same as `premigrate up`'s. No schema dump: that would run pg_dump."""
        assert self.binary is not None
        return [str(self.binary), "--no-dump-schema", "--migrations-dir", str(folder), "--url", dbmate_url(url)]

    def migrate(self, folder: Path, url: str) -> None:
        run([*self.command(folder, url), "migrate"])

    def prepare(self, server: Server, source: Path, target: Path) -> tuple[Path | None, str]:
        """Our folder converted for dbmate, and proven once on a fresh database; else None and why."""
        if self.binary is None:
            return None, self.skipped
        with server.database("b") as url:
            why_not = self.apply(source, target, url)
        return (None, why_not) if why_not else (target, "")

    def apply(self, source: Path, target: Path, url: str) -> str:
        """Converts our folder into target and has dbmate apply it to the database at url, then counts the
        rows of its history, so that a comparison cannot be silently wrong; why that failed, or ""."""
        count = convert(source, target)
        try:
            self.migrate(target, url)
        except subprocess.CalledProcessError as error:
            return f"dbmate failed on {source.name}: {(error.stderr or error.stdout).strip()[-300:]}"
        applied = applied_count(url)
        return "" if applied == count else f"dbmate recorded {applied} of the {count} migrations of {source.name}"

    def note(self, bench: Bench, table: str, ours: str, theirs: str, *, folder: Path | None, why_not: str) -> None:
        """The ratio of our case to dbmate's, from the medians of this run, and whether it meets ≤ 1.00x."""
        if folder is None:
            bench.note(table, f"Against dbmate: not measured ({why_not}).")
            return
        mine, peer = bench.find(table, ours).median, bench.find(table, theirs).median
        ratio = mine / peer
        bench.note(
            table,
            f"Against dbmate {self.version} (a Go binary, measured in the same run; `dbmate migrate` is `dbmate up` "
            "without its create-database check, and like premigrate it runs each file in a transaction with its "
            f"history row): {ours} takes {duration(mine)}, {theirs} {duration(peer)}: {ratio:.2f}x dbmate. "
            f"Target ≤ 1.00x dbmate: {'met' if ratio <= 1.0 else 'not met'}.",
        )


def find_dbmate() -> Dbmate:
    """The dbmate to compare with: $DBMATE, else the cached or freshly installed npm package."""
    given = os.environ.get("DBMATE")
    if given:
        return checked(Path(given), "DBMATE")
    binary = native_binary(CACHE)
    if binary is None:
        reason = npm_install(CACHE)
        if reason:
            return skipped(reason)
        binary = native_binary(CACHE)
        if binary is None:
            return skipped(f"npm installed dbmate but {CACHE} holds no dbmate binary")
    return checked(binary, "npm")


def native_binary(cache: Path) -> Path | None:
    """The platform package's binary itself: node_modules/.bin/dbmate is a Node script that starts it, and
    would add Node's start-up (tens of ms) to every dbmate run."""
    found = sorted(cache.glob("node_modules/@dbmate/*/bin/dbmate"))
    return found[0] if found else None


def npm_install(cache: Path) -> str:
    """Installs dbmate into the cache; the reason it could not, or ""."""
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (or give DBMATE=/path/to/dbmate)"
    cache.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), f"dbmate@{DBMATE_VERSION}"]
    print(f"installing dbmate {DBMATE_VERSION} with npm into {cache}", flush=True)
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"npm install dbmate took more than {INSTALL_TIMEOUT} s"
    except subprocess.CalledProcessError as error:
        return f"npm install dbmate failed: {(error.stderr or error.stdout).strip()[-300:]}"
    return ""


def checked(binary: Path, source: str) -> Dbmate:
    try:
        output = subprocess.run([str(binary), "--version"], check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return skipped(f"{binary} ({source}) does not run: {error}")
    match = re.search(r"version (\S+)", output.stdout)
    version = match.group(1) if match else output.stdout.strip()
    print(f"dbmate {version}: {binary}", flush=True)
    return Dbmate(binary, version)


def skipped(reason: str) -> Dbmate:
    print(f"skipped dbmate: {reason}", flush=True)
    return Dbmate(None, skipped=reason)


def convert(source: Path, target: Path) -> int:
    """Writes our folder's versioned migrations as dbmate files, same SQL text, same order; their count.

    dbmate takes the leading digits of a name as its version and applies in name order, so each file is
    named by its place in our order, zero-padded: dotted versions (1.2.10) need no translation."""
    migrations = load_folder(source).versioned
    target.mkdir(parents=True, exist_ok=True)
    width = len(str(len(migrations)))
    for place, migration in enumerate(migrations, start=1):
        # dbmate runs a file in a transaction unless told otherwise, as premigrate does by default; it
        # refuses a file without a down block, which is never run here.
        options = "" if migration.mode == ExecutionMode.TRANSACTION else " transaction:false"
        name = re.sub(r"\W+", "_", migration.description).strip("_") or "migration"
        path = target / f"{place:0{width}d}_{name}.sql"
        path.write_text(f"-- migrate:up{options}\n{migration.text}\n\n-- migrate:down\n", encoding="utf-8")
    return len(migrations)


def dbmate_url(url: str) -> str:
    """Our URL as dbmate reads it: a socket directory goes in its `socket` parameter (the embedded server
    listens on a unix socket only), TLS off as our URL has it for local servers."""
    params = params_from_url(url)
    user = quote(params.user, safe="") + (f":{quote(params.password, safe='')}" if params.password else "")
    query = {"sslmode": "disable"}
    if params.socket_dir:
        query |= {"socket": params.socket_dir, "port": str(params.port)}
        return f"postgres://{user}@/{quote(params.database)}?{urlencode(query)}"
    return f"postgres://{user}@{params.host}:{params.port}/{quote(params.database)}?{urlencode(query)}"


def applied_count(url: str) -> int:
    connection = connect(params_from_url(url))
    try:
        rows = connection.run("SELECT count(*) FROM public.schema_migrations")
    finally:
        connection.close()
    return int(rows[0][0])
