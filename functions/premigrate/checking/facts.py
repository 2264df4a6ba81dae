"""What one statement was measured doing on the scratch database, as plain data, and how that is worked
out from what PostgreSQL showed before and after it (a pure function).

Only relations that existed before the pending migrations count: a table a pending migration creates is
new and empty, and no running code uses it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from premigrate.checking.catalog import Catalog, Relation
from premigrate.checking.changes import Change

LOCK_MODES = {
    "AccessShareLock": "ACCESS SHARE",
    "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}
"""pg_locks' names, weakest first, and the names PostgreSQL's "Explicit Locking" table uses."""
STRENGTH = {mode: rank for rank, mode in enumerate(LOCK_MODES.values())}
BLOCKS_WRITES = frozenset({"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"})
"""The modes that conflict with ROW EXCLUSIVE, which every INSERT, UPDATE and DELETE takes."""
BLOCKS_READS = frozenset({"ACCESS EXCLUSIVE"})
"""The one mode that conflicts with ACCESS SHARE, which every SELECT takes."""
CHANGES_DEFINITIONS = frozenset(
    m for m, name in LOCK_MODES.items() if STRENGTH[name] >= STRENGTH["SHARE UPDATE EXCLUSIVE"]
)
"""pg_locks modes strong enough to change a relation's definition: the relations to read again."""


@dataclass(frozen=True)
class HeldLock:
    relation: str
    mode: str
    line: int
    """Line of the statement that took it (it is held until its transaction ends)."""

    @property
    def blocks(self) -> str:
        return "reads and writes" if self.mode in BLOCKS_READS else "writes" if self.mode in BLOCKS_WRITES else ""


@dataclass(frozen=True)
class Work:
    """Work on an existing relation that grows with its size."""

    relation: str
    kind: str
    """rewrite | index | validate | data"""
    detail: str
    wrote: bool = False
    """The statement changed rows of it (it took ROW EXCLUSIVE): they stay locked until its transaction ends."""


@dataclass(frozen=True)
class StatementFacts:
    script: str
    line: int
    statement: str
    after_rollout: bool = False
    held: tuple[HeldLock, ...] = ()
    """Locks blocking reads or writes of existing relations, held while the statement ran."""
    work: tuple[Work, ...] = ()
    changes: tuple[Change, ...] = ()
    """What running code can see change, once the statement's transaction commits."""
    lock_timeout_ms: int | None = None
    """PostgreSQL's lock_timeout after the statement."""
    documented: bool = False
    """The statement cannot run in a transaction block, so its locks were not measurable: ``held`` is what
    PostgreSQL documents for it."""

    @property
    def taken(self) -> tuple[HeldLock, ...]:
        return tuple(lock for lock in self.held if lock.line == self.line)


@dataclass
class Unit:
    """One transaction on the scratch database: what its statements have locked and scanned so far."""

    start: Catalog
    locks: dict[tuple[int, str], int] = field(default_factory=dict)
    """(relation, pg_locks mode) -> line of the statement that took it."""
    scans: dict[int, int] = field(default_factory=dict)
    """Sequential scans counted so far in this transaction, by relation."""
    touched: set[int] | None = field(default_factory=set)
    """Relations read again in it (None: the whole catalog was)."""
    object_writes: int | None = None
    """Rows it has written to the catalogs of schemas, functions and types so far (None: not known)."""
    facts: list[StatementFacts] = field(default_factory=list)


@dataclass(frozen=True)
class Observation:
    """What PostgreSQL showed right after a statement, inside its transaction."""

    locks: frozenset[tuple[int, str]]
    scans: Mapping[int, int]
    lock_timeout_ms: int | None = None


def held_locks(unit: Unit, observed: Observation, line: int, existing: Catalog) -> tuple[HeldLock, ...]:
    """Blocking locks on existing relations, the strongest per relation; records when each was taken."""
    strongest: dict[int, HeldLock] = {}
    for oid, pg_mode in sorted(observed.locks):
        taken_at = unit.locks.setdefault((oid, pg_mode), line)
        mode = LOCK_MODES.get(pg_mode, pg_mode)
        if oid not in existing.relations or mode not in BLOCKS_WRITES:
            continue
        if existing.relations[oid].kind == "m" and mode not in BLOCKS_READS:
            continue  # nothing but a refresh writes a materialized view
        held = strongest.get(oid)
        if held is None or STRENGTH[mode] > STRENGTH[held.mode]:
            strongest[oid] = HeldLock(existing.relation_name(oid), mode, taken_at)
    return tuple(strongest[oid] for oid in sorted(strongest))


def measured_work(
    before: Catalog,
    after: Catalog,
    existing: Catalog,
    scanned: Mapping[int, int],
    changes: Collection[Change],
    *,
    wrote: Collection[int] = (),
    truncates: bool = False,
) -> tuple[Work, ...]:
    """The work a statement did on existing relations: rewritten (a new filenode), indexes built, rows
    scanned to validate what it added, or rows scanned by a data statement."""
    work = []
    for oid in sorted(set(existing.relations) & set(after.relations) & set(before.relations)):
        old, new = before.relations[oid], after.relations[oid]
        name = existing.relation_name(oid)
        if truncates:
            continue  # a new, empty filenode and empty indexes: the rows are gone, not rewritten nor read
        if new.filenode != old.filenode and old.filenode and new.filenode:
            work.append(Work(name, "rewrite", _rewritten(new)))
        elif built := _built_indexes(old, new):
            work.append(Work(name, "index", f"index {', '.join(built)} built"))
        elif scanned.get(oid) and (validated := _validated(old, new, oid, changes)):
            work.append(Work(name, "validate", f"scanned to validate {', '.join(validated)}"))
        elif scanned.get(oid):
            # Nothing but a refresh writes a materialized view: its row locks keep no one waiting.
            work.append(Work(name, "data", "every row read", wrote=oid in wrote and new.kind != "m"))
    return tuple(work)


def _rewritten(relation: Relation) -> str:
    count = len(relation.indexes)
    return "rewritten" + (f" with its {count} index{'es' if count > 1 else ''}" if count else "")


def _built_indexes(old: Relation, new: Relation) -> list[str]:
    earlier = {index.oid: index.filenode for index in old.indexes}
    # A partitioned index has no storage of its own (filenode 0): its partitions' indexes are the ones built.
    return [index.name for index in new.indexes if index.filenode and earlier.get(index.oid, 0) != index.filenode]


def _validated(old: Relation, new: Relation, oid: int, changes: Collection[Change]) -> list[str]:
    """What the statement checked every existing row against: constraints it added or validated, NOT NULL."""
    was_valid = {constraint.oid: constraint.validated for constraint in old.constraints}
    names = [
        constraint.name
        for constraint in new.constraints
        if constraint.validated and not was_valid.get(constraint.oid, False) and constraint.kind != "n"
    ]
    for change in changes:
        if change.relation == oid and change.kind in ("not-null-added", "required-column"):
            names.append(f"NOT NULL on {change.subject.rsplit('.', 1)[-1]}")
    return names
