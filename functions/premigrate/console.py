"""What the command line shows: human lines on stdout (or the JSON report alone with --json), warnings
and errors on stderr. It is the CLI's Observer of a run, and prints the run's Result."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from premigrate.engine import MigrationSet, Report
from premigrate.engine.report import MigrationRun
from premigrate.service import Observer, Result


class Console(Observer):
    def __init__(self, *, json_mode: bool, folder: str = "") -> None:
        self.json_mode = json_mode
        self.folder = folder
        self._reader_gone = False

    def line(self, text: str) -> None:
        if not self.json_mode:
            self.out(text)

    def out(self, text: str) -> None:
        """Print to stdout, unless its reader went away (``| head``): then nobody is left to read the rest."""
        if self._reader_gone:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            self._reader_gone = True
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout once more at exit

    def starting(self, database: str, migrations: MigrationSet) -> None:
        self.line(f"database    {database}")
        self.line(
            f"migrations  {self.folder} ({len(migrations.versioned)} versioned, "
            f"{len(migrations.repeatable)} repeatable)"
        )

    def migration(self, event: str, run: MigrationRun) -> None:
        if event == "started":
            self.line(f"  applying {run.label} ({run.mode}: {run.mode_reason}) …")
        else:
            retried = f", {run.attempts} attempts" if run.attempts > 1 else ""
            self.line(f"  applied  {run.label} in {run.duration_ms:.0f} ms{retried}")

    def warning(self, message: str, **details: Any) -> None:
        if "exc_info" not in details:  # an unexpected error's message is printed as the run's error
            print(f"warning: {message}", file=sys.stderr, flush=True)

    def show(self, result: Result) -> int:
        """Print the result; returns the exit code."""
        if not result.ok:
            return self._failure(result)
        assert result.report is not None
        if self.json_mode:
            self.out(json.dumps(result.report.to_dict(), default=str, indent=2))
        else:
            self._report(result.report)
        return result.exit_code

    def interrupted(self, result: Result | None, signal_name: str, exit_code: int) -> int:
        """After Ctrl-C or SIGTERM: what was done, then why the run stopped; returns the exit code."""
        report = result.report if result is not None else None
        if self.json_mode:
            body = {"interrupted": signal_name, "exit_code": exit_code, "error": result.error if result else None}
            self.out(json.dumps({**body, "report": report.to_dict() if report else None}, default=str, indent=2))
        elif report is not None and report.applied:
            self.line(f"applied before the interruption: {', '.join(r.label for r in report.applied)}")
        why = f": {result.error}" if result is not None and result.error else ""
        print(
            f"error: interrupted by {signal_name}: the running statement, if any, was cancelled on the server and "
            f"no further migration was started{why}",
            file=sys.stderr,
        )
        return exit_code

    def _report(self, report: Report) -> None:
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
                    after = ", after the rollout" if run.phase == "after-rollout" else ""
                    group = f"group {run.group}: " if run.group else ""
                    self.line(f"  {group}{run.label} ({run.mode}: {run.mode_reason}{after})")
            else:
                self.line(f"schema is up to date at version {after}")
        else:
            self.line(f"schema version {after}")

    def _table(self, report: Report) -> None:
        rows: list[tuple[str, ...]] = [("version", "description", "state", "installed on", "phase")]
        rows += [(s.version or "R", s.description, s.state, s.installed_on or "", s.phase) for s in report.states]
        if all(state.phase == "before-rollout" for state in report.states):
            rows = [row[:4] for row in rows]  # a set without phases reads as before
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.line("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def _failure(self, result: Result) -> int:
        if self.json_mode:
            body: dict[str, Any] = {
                "error": result.error,
                "error_kind": result.error_kind,
                "exit_code": result.exit_code,
            }
            if result.report is not None:
                body["report"] = result.report.to_dict()
            self.out(json.dumps(body, default=str, indent=2))
        elif result.report is not None and result.report.applied:
            self.line(f"applied before the failure: {', '.join(r.label for r in result.report.applied)}")
        print(f"error: {result.error}", file=sys.stderr)
        return result.exit_code
