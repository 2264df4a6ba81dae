"""What changed, between two catalogs, that code already running against the database can see: a pure
function, so every kind of change is tested on catalogs alone.

Only objects that existed before the pending migrations count (``existing``): code that is running now
cannot use what a pending migration creates. A name that is dropped and made again within the same
catalogs (``DROP VIEW v; CREATE VIEW v ...``) is compared with what took its place, by name.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from premigrate.checking.catalog import Catalog, Column, Relation

_CONSTRAINT_KINDS = {"c": "CHECK", "f": "FOREIGN KEY", "p": "PRIMARY KEY", "u": "UNIQUE", "x": "EXCLUDE"}
_VARCHAR, _TEXT, _NUMERIC, _VARBIT, _CIDR, _INET = 1043, 25, 1700, 1562, 650, 869
_PRECISION_TYPES = {1083, 1114, 1184, 1186, 1266}
"""time, timestamp, timestamptz, interval, timetz: a larger (or no) precision keeps every value."""


@dataclass(frozen=True)
class Change:
    kind: str
    """The rule it falls under: drop-table, rename-column, not-null-added, ..."""
    subject: str
    """What changed, by the name running code knows: ``public.orders.total``."""
    detail: str = ""
    relation: int = 0
    """The existing relation it concerns (0: none)..."""
    table: str = ""
    """... and its name before the pending migrations, by which the target database knows its size."""
    checks_rows: bool = False
    """Adding it checked the existing rows (so it may fail on real data the empty scratch lacks)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.subject


def diff(before: Catalog, after: Catalog, existing: Catalog, candidates: Collection[int] | None = None) -> list[Change]:
    """Changes from ``before`` to ``after`` to what ``existing`` had; ``candidates``: the only relations
    that may have changed (None: any)."""
    oids = existing.relations.keys() if candidates is None else [o for o in candidates if o in existing.relations]
    changes: list[Change] = []
    for oid in oids:
        old = before.relations.get(oid)
        if old is not None:
            table = existing.relation_name(oid)
            changes += _relation_changes(old, before, after, existing.relations[oid], table)
    if before.digest != after.digest or not after.digest:
        changes += _routine_changes(before, after, existing) + _type_changes(before, after, existing)
        changes += [
            Change("rename-schema", name, f"renamed to {after.schemas[oid]}")
            for oid, name in before.schemas.items()
            if oid in existing.schemas and after.schemas.get(oid, name) != name
        ]
    return changes


def _relation_changes(old: Relation, before: Catalog, after: Catalog, baseline: Relation, table: str) -> list[Change]:
    """Subjects are named as before the pending migrations (``table``, the baseline's column names): the
    names running code uses, and the same whichever statement of a transaction is compared."""
    what = "view" if old.is_view else "table"
    new = after.relations.get(old.oid)
    if new is None:
        new = _same_name(after, before.qualified(old.schema_oid, old.name))
        if new is None:
            return [Change(f"drop-{what}", table, relation=old.oid, table=table)]
        by_name = {column.name: column for column in new.columns.values()}
        pairs = [(n, column, by_name.get(column.name)) for n, column in old.columns.items()]
        return _columns(pairs, baseline, old.oid, table, renames=False)
    changes = []
    if new.name != old.name or new.schema_oid != old.schema_oid:
        new_name = after.qualified(new.schema_oid, new.name)
        changes.append(Change(f"rename-{what}", table, f"renamed to {new_name}", old.oid, table))
    changes += _columns([(n, c, new.columns.get(n)) for n, c in old.columns.items()], baseline, old.oid, table)
    changes += _added_columns(old, new, baseline, table)
    if not old.is_view:
        changes += _added_constraints(old, new, table)
    return changes


def _same_name(catalog: Catalog, qualified: str) -> Relation | None:
    return next((r for r in catalog.relations.values() if catalog.qualified(r.schema_oid, r.name) == qualified), None)


def _columns(
    pairs: list[tuple[int, Column, Column | None]], baseline: Relation, oid: int, table: str, *, renames: bool = True
) -> list[Change]:
    """Changes of the columns running code knows: (attnum, column before, column after) each."""
    changes = []
    for number, old, new in pairs:
        if number not in baseline.columns:
            continue
        subject = f"{table}.{baseline.columns[number].name}"
        if new is None:
            changes.append(Change("drop-column", subject, relation=oid, table=table))
            continue
        if renames and new.name != old.name:
            changes.append(Change("rename-column", subject, f"renamed to {new.name}", oid, table))
        if (new.type_oid, new.typmod) != (old.type_oid, old.typmod) and not _widens(old, new):
            changes.append(Change("column-type-changed", subject, f"{old.type_name} -> {new.type_name}", oid, table))
        if new.not_null and not old.not_null:
            changes.append(Change("not-null-added", subject, relation=oid, table=table, checks_rows=True))
        elif old.not_null and not new.not_null:
            changes.append(Change("drop-not-null", subject, relation=oid, table=table))
    return changes


def _widens(old: Column, new: Column) -> bool:
    """A type change that keeps every value and how it reads (strong_migrations' "safe changes")."""
    if (old.type_oid, new.type_oid) in ((_VARCHAR, _TEXT), (_CIDR, _INET)) or (
        (old.type_oid, new.type_oid, new.typmod) == (_TEXT, _VARCHAR, -1)
    ):
        return True
    if old.type_oid != new.type_oid or old.typmod == -1:
        return False
    if new.typmod == -1:
        return old.type_oid in (_VARCHAR, _NUMERIC, _VARBIT) or old.type_oid in _PRECISION_TYPES
    if old.type_oid == _NUMERIC:
        # numeric(p, s) is stored as ((p << 16) | s) + 4: a larger precision at the same scale keeps every value.
        (old_precision, old_scale), (new_precision, new_scale) = (
            divmod(old.typmod - 4, 65536),
            divmod(new.typmod - 4, 65536),
        )
        return new_scale == old_scale and new_precision >= old_precision
    return (old.type_oid in (_VARCHAR, _VARBIT) or old.type_oid in _PRECISION_TYPES) and new.typmod > old.typmod


def _added_columns(old: Relation, new: Relation, baseline: Relation, table: str) -> list[Change]:
    changes = []
    for number, column in new.columns.items():
        if number in old.columns or number in baseline.columns or new.is_view:
            continue
        if column.not_null and not (column.has_default or column.identity or column.generated):
            detail = f"NOT NULL {column.type_name} without a default"
            changes.append(
                Change("required-column", f"{table}.{column.name}", detail, old.oid, table, checks_rows=True)
            )
    return changes


def _added_constraints(old: Relation, new: Relation, table: str) -> list[Change]:
    before = {constraint.oid for constraint in old.constraints}
    backing = {constraint.index_oid for constraint in new.constraints}
    changes = []
    for constraint in new.constraints:
        if constraint.oid in before or constraint.kind not in _CONSTRAINT_KINDS:
            continue
        kind = _CONSTRAINT_KINDS[constraint.kind] + ("" if constraint.validated else " NOT VALID")
        subject = f"{table}: {constraint.name}"
        changes.append(Change("constraint-added", subject, kind, old.oid, table, checks_rows=constraint.validated))
    earlier = {index.oid for index in old.indexes}
    for index in new.indexes:
        if index.unique and index.oid not in earlier and index.oid not in backing:
            subject = f"{table}: {index.name}"
            changes.append(Change("constraint-added", subject, "UNIQUE index", old.oid, table, checks_rows=True))
    return changes


def _routine_changes(before: Catalog, after: Catalog, existing: Catalog) -> list[Change]:
    signatures = {f"{after.qualified(r.schema_oid, r.name)}({r.arguments})" for r in after.routines.values()}
    changes = []
    for oid, old in before.routines.items():
        if oid not in existing.routines:
            continue
        known = existing.routines[oid]
        subject = f"{existing.qualified(known.schema_oid, known.name)}({known.arguments})"
        new = after.routines.get(oid)
        if new is None and f"{before.qualified(old.schema_oid, old.name)}({old.arguments})" not in signatures:
            changes.append(Change("drop-function", subject))
        elif new is not None and (new.name, new.schema_oid) != (old.name, old.schema_oid):
            changes.append(
                Change("rename-function", subject, f"renamed to {after.qualified(new.schema_oid, new.name)}")
            )
    return changes


def _type_changes(before: Catalog, after: Catalog, existing: Catalog) -> list[Change]:
    names = {after.qualified(t.schema_oid, t.name) for t in after.types.values()}
    changes = []
    for oid, old in before.types.items():
        if oid not in existing.types:
            continue
        subject = existing.qualified(existing.types[oid].schema_oid, existing.types[oid].name)
        new = after.types.get(oid)
        if new is None:
            if before.qualified(old.schema_oid, old.name) not in names:
                changes.append(Change("drop-type", subject))
            continue
        if (new.name, new.schema_oid) != (old.name, old.schema_oid):
            changes.append(Change("rename-type", subject, f"renamed to {after.qualified(new.schema_oid, new.name)}"))
        if gone := [label for label in old.labels if label not in new.labels]:
            labels = ", ".join(repr(label) for label in gone)
            changes.append(Change("rename-enum-value", subject, f"{labels} no longer a value"))
    return changes
