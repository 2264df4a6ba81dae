"""What running code can see of a database, as PostgreSQL's catalog says: schemas, relations (tables,
views, materialized views, foreign tables) with their columns, constraints and indexes, functions and
types. Objects of extensions and of premigrate itself are left out: no migration's author wrote them.

The whole catalog is read once; after each statement only the relations it locked are read again,
since PostgreSQL locks every relation whose definition it changes (a created one too). Schemas,
functions and types take no relation lock, so a digest of them tells when to read them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from premigrate.engine.database import Database

USER_SCHEMA = r"n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'"
"""Where users' objects live: not the system's schemas, not pg_toast nor the pg_temp_N ones."""


def _not_extension_member(catalog: str, alias: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass AND d.objid = {alias}.oid "
        "AND d.deptype = 'e')"
    )


RELATION_ROW = """json_build_array(c.oid, c.relnamespace, c.relname, c.relkind, c.relfilenode,
    coalesce((SELECT json_agg(json_build_array(a.attnum, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod),
              a.atttypmod, a.attnotnull, a.atthasdef, a.attidentity, a.attgenerated) ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'),
    coalesce((SELECT json_agg(json_build_array(k.oid, k.conname, k.contype, k.convalidated, k.conindid) ORDER BY k.oid)
              FROM pg_constraint k WHERE k.conrelid = c.oid), '[]'),
    coalesce((SELECT json_agg(json_build_array(i.indexrelid, x.relname, i.indisunique, i.indisvalid, x.relfilenode)
              ORDER BY i.indexrelid) FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
              WHERE i.indrelid = c.oid), '[]'))"""
"""One relation as JSON, so that any number of them comes back in one row of one round trip."""

RELATION_KINDS = f"""c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMA}
    AND {_not_extension_member("pg_class", "c")}"""
RELATIONS_FROM = f"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {RELATION_KINDS}"

_STANDALONE = "(t.typrelid = 0 OR (SELECT r.relkind FROM pg_class r WHERE r.oid = t.typrelid) = 'c')"
"""Not the row type every table has: creating a table must not look like creating a type."""
_SCHEMAS = f"SELECT n.oid, n.nspname FROM pg_namespace n WHERE {USER_SCHEMA}"
_ROUTINES = f"""SELECT p.oid, p.pronamespace, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE {USER_SCHEMA} AND {_not_extension_member("pg_proc", "p")}"""
# Enums, domains, ranges and stand-alone composite types; not the row type every table has, nor arrays.
_TYPES = f"""SELECT t.oid, t.typnamespace, t.typname, t.typtype,
    coalesce((SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '[]')
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE {USER_SCHEMA} AND t.typtype IN ('c', 'd', 'e', 'r') AND {_not_extension_member("pg_type", "t")}
      AND {_STANDALONE}"""
_SYSTEM_SCHEMAS = (
    r"(SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema') OR nspname LIKE 'pg\_%')"
)
OBJECTS_DIGEST = f"""md5(
    coalesce((SELECT string_agg(n.oid || ' ' || n.nspname, ',' ORDER BY n.oid) FROM pg_namespace n
              WHERE {USER_SCHEMA}), '') || '|' ||
    coalesce((SELECT string_agg(p.oid || ' ' || p.pronamespace || ' ' || p.proname || p.proargtypes::text, ','
              ORDER BY p.oid) FROM pg_proc p WHERE p.pronamespace NOT IN {_SYSTEM_SCHEMAS}), '') || '|' ||
    coalesce((SELECT string_agg(t.oid || ' ' || t.typnamespace || ' ' || t.typname, ',' ORDER BY t.oid)
              FROM pg_type t WHERE t.typnamespace NOT IN {_SYSTEM_SCHEMAS} AND (t.typtype IN ('d', 'e', 'r')
                OR (t.typtype = 'c' AND t.typrelid IN (SELECT oid FROM pg_class WHERE relkind = 'c')))), '') || '|' ||
    coalesce((SELECT string_agg(e.enumtypid || ' ' || e.enumlabel, ',' ORDER BY e.oid) FROM pg_enum e), ''))"""
"""Changes whenever a schema, function or type is created, dropped, renamed or gets an enum label."""
OBJECT_WRITES = (
    "("
    + " + ".join(
        f"pg_stat_get_xact_tuples_{change}('{catalog}'::regclass)"
        for catalog in ("pg_namespace", "pg_proc", "pg_type", "pg_enum")
        for change in ("inserted", "updated", "deleted")
    )
    + ")"
)
"""Rows this transaction wrote to the catalogs behind schemas, functions and types: while it stays the same,
they cannot have changed, and OBJECTS_DIGEST, which reads them all, need not be computed."""


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_name: str
    """As format_type writes it: ``character varying(20)``."""
    typmod: int
    not_null: bool
    has_default: bool
    identity: str = ""
    generated: str = ""


@dataclass(frozen=True)
class Constraint:
    oid: int
    name: str
    kind: str
    """pg_constraint.contype: c check, f foreign key, p primary key, u unique, x exclusion, n not null (18+)."""
    validated: bool
    index_oid: int = 0


@dataclass(frozen=True)
class Index:
    oid: int
    name: str
    unique: bool
    valid: bool
    filenode: int


@dataclass(frozen=True)
class Relation:
    oid: int
    schema_oid: int
    name: str
    kind: str
    """pg_class.relkind: r table, p partitioned table, v view, m materialized view, f foreign table."""
    filenode: int
    """Where its rows are stored; a new one means PostgreSQL rewrote them (0: no storage)."""
    columns: Mapping[int, Column] = field(default_factory=dict)
    """By attnum, which survives a rename or a type change."""
    constraints: tuple[Constraint, ...] = ()
    indexes: tuple[Index, ...] = ()

    @property
    def is_view(self) -> bool:
        return self.kind in ("v", "m")


@dataclass(frozen=True)
class Routine:
    oid: int
    schema_oid: int
    name: str
    arguments: str
    kind: str
    """pg_proc.prokind: f function, p procedure, a aggregate, w window function."""


@dataclass(frozen=True)
class TypeDef:
    oid: int
    schema_oid: int
    name: str
    kind: str
    labels: tuple[str, ...] = ()
    """An enum's labels, in order."""


@dataclass(frozen=True)
class Catalog:
    schemas: Mapping[int, str] = field(default_factory=dict)
    relations: Mapping[int, Relation] = field(default_factory=dict)
    routines: Mapping[int, Routine] = field(default_factory=dict)
    types: Mapping[int, TypeDef] = field(default_factory=dict)
    digest: str = ""

    def qualified(self, schema_oid: int, name: str) -> str:
        return f"{self.schemas.get(schema_oid, '?')}.{name}"

    def relation_name(self, oid: int) -> str:
        relation = self.relations[oid]
        return self.qualified(relation.schema_oid, relation.name)

    def with_relations(self, read: Iterable[Relation], gone: Iterable[int] = ()) -> Catalog:
        """This catalog with relations read again replacing theirs, and ``gone`` ones removed."""
        relations = dict(self.relations)
        for oid in gone:
            relations.pop(oid, None)
        relations.update((relation.oid, relation) for relation in read)
        return replace(self, relations=relations)


def parse_relation(row: list[Any]) -> Relation:
    oid, schema_oid, name, kind, filenode, columns, constraints, indexes = row
    return Relation(
        int(oid),
        int(schema_oid),
        name,
        kind,
        int(filenode),
        {
            int(c[0]): Column(c[1], int(c[2]), c[3], int(c[4]), bool(c[5]), bool(c[6]), c[7] or "", c[8] or "")
            for c in columns
        },
        tuple(Constraint(int(k[0]), k[1], k[2], bool(k[3]), int(k[4])) for k in constraints),
        tuple(Index(int(i[0]), i[1], bool(i[2]), bool(i[3]), int(i[4])) for i in indexes),
    )


def read_catalog(db: Database, ignored: frozenset[tuple[str, str]] = frozenset()) -> Catalog:
    """The whole catalog of the database; ``ignored`` relations (schema, name) left out."""
    rows = db.run(f"SELECT coalesce(json_agg({RELATION_ROW}), '[]'), {OBJECTS_DIGEST} {RELATIONS_FROM}")
    objects = read_objects(db, rows[0][1])
    relations = [parse_relation(row) for row in rows[0][0]]
    kept = [r for r in relations if (objects.schemas.get(r.schema_oid), r.name) not in ignored]
    return replace(objects, relations={relation.oid: relation for relation in kept})


def read_objects(db: Database, digest: str) -> Catalog:
    """Schemas, functions and types (no relations); ``digest`` is their OBJECTS_DIGEST."""
    schemas = {int(oid): name for oid, name in db.run(_SCHEMAS)}
    routines = {int(row[0]): Routine(int(row[0]), int(row[1]), row[2], row[3], row[4]) for row in db.run(_ROUTINES)}
    types = {int(row[0]): TypeDef(int(row[0]), int(row[1]), row[2], row[3], tuple(row[4])) for row in db.run(_TYPES)}
    return Catalog(schemas, {}, routines, types, digest)
