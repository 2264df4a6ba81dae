"""From measured facts to findings: pure functions, so every rule is tested on facts alone.

- A change running code can see (a drop, a rename, a new constraint...) in a before-rollout migration is
  an error: the old code is still running while it applies.
- A lock that blocks reads or writes, held while the statement does work that grows with the table (a
  rewrite, an index build, a validating scan, a backfill), is an error on a table above --max-locked-rows
  (or of unknown size), a warning below it. A lock taken for a catalog-only change is information:
  premigrate's lock_timeout makes the statement give up rather than queue traffic behind it.
- What the empty scratch database cannot show (the rows a constraint will meet, rows a backfill will lock,
  a file that lifts lock_timeout) is a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from premigrate.checking.facts import HeldLock, StatementFacts, Work
from premigrate.checking.rules import BREAKING, RULES, Level
from premigrate.engine.directives import Allowance

_WORK_RULES = (("rewrite", "table-rewrite"), ("index", "blocking-index-build"), ("validate", "validating-scan"))


@dataclass(frozen=True)
class TableSize:
    rows: int | None
    """Estimated rows (None: the statistics do not say)."""
    bytes: int | None = None


@dataclass(frozen=True)
class Judging:
    max_locked_rows: int
    lock_timeout_ms: int
    sizes: Mapping[str, TableSize] | None = None
    """The target database's tables by qualified name; None when there is no target to read them from."""

    def rows(self, table: str) -> int | None:
        size = self.sizes.get(table) if self.sizes is not None else None
        return size.rows if size is not None else None

    def size_text(self, table: str) -> str:
        rows = self.rows(table)
        if rows is not None:
            return f"{human(rows)} rows"
        return "size unknown" if self.sizes is not None else "size unknown without --database-url"


@dataclass(frozen=True)
class Finding:
    rule: str
    level: Level
    script: str
    line: int
    statement: str
    measured: str
    allowed: str | None = None
    """The reason its file's ``-- premigrate:allow`` gives, when it acknowledges the finding."""

    @property
    def blocking(self) -> bool:
        return self.level is Level.ERROR and self.allowed is None

    @property
    def advice(self) -> str:
        return RULES[self.rule].advice

    @property
    def anchors(self) -> str:
        return RULES[self.rule].anchors


def human(rows: int) -> str:
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if rows >= limit:
            return f"{rows / limit:.3g}{suffix}"
    return str(rows)


def judge(facts: Sequence[StatementFacts], judging: Judging) -> list[Finding]:
    findings: list[Finding] = []
    lifted: set[str] = set()
    for fact in facts:
        findings += _breaking(fact, judging) + _locking(fact, judging)
        timeout = fact.lock_timeout_ms
        if fact.script not in lifted and timeout is not None and (timeout == 0 or timeout > judging.lock_timeout_ms):
            lifted.add(fact.script)
            shown = "0 (none)" if timeout == 0 else f"{timeout} ms"
            measured = f"lock_timeout is {shown} after this statement; premigrate sets {judging.lock_timeout_ms} ms"
            findings.append(_finding("lock-timeout-overridden", Level.WARNING, fact, measured))
    return findings


def _finding(rule: str, level: Level, fact: StatementFacts, measured: str) -> Finding:
    return Finding(rule, level, fact.script, fact.line, fact.statement, measured)


def _breaking(fact: StatementFacts, judging: Judging) -> list[Finding]:
    findings = []
    for change in fact.changes:
        what = f"{change.subject}: {change.detail}" if change.detail else change.subject
        if change.kind in BREAKING and not fact.after_rollout:
            measured = f"{what}, while the running code still uses it (before-rollout)"
            findings.append(_finding(change.kind, RULES[change.kind].level, fact, measured))
        rows = judging.rows(change.table)
        if change.checks_rows and rows != 0:
            level, measured = Level.WARNING, f"{what} checked every row and passed on the empty scratch table"
            if change.kind == "required-column" and rows is not None:
                level, measured = Level.ERROR, f"{what}: fails where the table has rows"
            measured += f"; {change.table}: {judging.size_text(change.table)}"
            findings.append(_finding("may-fail-on-data", level, fact, measured))
    return findings


def _locking(fact: StatementFacts, judging: Judging) -> list[Finding]:
    findings = []
    for kind, rule in _WORK_RULES:
        work = [w for w in fact.work if w.kind == kind]
        if work and fact.held:
            findings.append(_locked_work(rule, fact, work, judging))
    # A read that is part of bigger work (the query a REFRESH runs, the table a foreign key checks) is
    # that work's; only a statement that does nothing else is a backfill.
    data = [] if findings else [w for w in fact.work if w.kind == "data"]
    if data and fact.held:
        findings.append(_locked_work("backfill-under-lock", fact, data, judging))
    elif written := [w for w in data if w.wrote]:
        rows = _total(written, judging)
        if rows is None or rows > judging.max_locked_rows:
            tables = ", ".join(f"{w.relation} ({judging.size_text(w.relation)})" for w in written)
            measured = f"changes rows of {tables} after reading all of them; each stays locked until the commit"
            findings.append(_finding("backfill", Level.WARNING, fact, measured))
    # A lock taken by a statement that works on a table is held through that work, not briefly.
    if not fact.work and (brief := fact.taken):
        locks = ", ".join(f"{lock.mode} on {lock.relation}" for lock in brief)
        measured = f"{locks}: catalog only (no rewrite, no scan), held until the migration's transaction ends"
        findings.append(_finding("catalog-lock", Level.INFO, fact, measured))
    return findings


def _total(work: Sequence[Work], judging: Judging) -> int | None:
    sizes = [judging.rows(w.relation) for w in work]
    return None if None in sizes else sum(size for size in sizes if size is not None)


def _locked_work(rule: str, fact: StatementFacts, work: Sequence[Work], judging: Judging) -> Finding:
    held = {lock.relation: lock for lock in fact.held}
    parts = []
    for w in work:
        lock = held.get(w.relation)
        locked = f"{lock.mode} on " if lock else ""
        since = f", taken at line {lock.line}" if lock and lock.line != fact.line else ""
        parts.append(f"{locked}{w.relation} ({judging.size_text(w.relation)}{since}): {w.detail}")
    worked = {w.relation for w in work}
    if others := [lock for lock in fact.held if lock.relation not in worked]:
        parts.append("meanwhile " + ", ".join(_held(lock, fact.line) for lock in others))
    rows = _total(work, judging)
    level = Level.ERROR if rows is None or rows > judging.max_locked_rows else Level.WARNING
    measured = "; ".join(parts)
    if level is Level.WARNING:
        measured += f" (within --max-locked-rows {judging.max_locked_rows})"
    if fact.documented:
        measured += " (the lock as PostgreSQL documents it: the statement runs outside a transaction)"
    return _finding(rule, level, fact, measured)


def _held(lock: HeldLock, line: int) -> str:
    since = f" (taken at line {lock.line})" if lock.line != line else ""
    return f"{lock.mode} on {lock.relation} held{since}, blocking {lock.blocks}"


def acknowledge(findings: Sequence[Finding], allowances: Mapping[str, Sequence[Allowance]]) -> list[Finding]:
    """Mark what each file's ``-- premigrate:allow`` lines accept; an allow naming no rule is a finding."""
    acknowledged = []
    for finding in findings:
        reason = next((a.reason for a in allowances.get(finding.script, ()) if a.rule == finding.rule), None)
        acknowledged.append(replace(finding, allowed=reason) if reason else finding)
    for script, given in allowances.items():
        for allowance in given:
            if allowance.rule not in RULES:
                measured = f"'-- premigrate:allow {allowance.rule}': no rule has that name"
                acknowledged.append(Finding("unknown-allow", Level.WARNING, script, allowance.line, "", measured))
    return acknowledged
