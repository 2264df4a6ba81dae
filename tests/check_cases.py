"""The case table of ``premigrate check``: SQL from the anchors' own documented rules (squawk, strong_migrations,
Atlas ``migrate lint``) and PostgreSQL's documentation of lock levels, with the findings measuring must give.

Every case runs in a schema of its own, on two tables that exist before the pending migrations (so they
are "existing", of unknown size: no target database):

    users (id bigint PRIMARY KEY, email text, name text NOT NULL, age int)
    orders (id bigint PRIMARY KEY, user_id bigint, total int, status varchar(10), note text)

``expected`` is the exact set of rules reported for the case's file(s); ``disagrees`` says where measuring
and the anchor part ways, and which is right.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON = """CREATE TABLE users (id bigint PRIMARY KEY, email text, name text NOT NULL, age int);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, total int, status varchar(10), note text);"""
AFTER = "-- premigrate:after-rollout\n"


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    migration: str | tuple[str, ...]
    expected: frozenset[str]
    setup: str = ""
    disagrees: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        return (self.migration,) if isinstance(self.migration, str) else self.migration


def case(name: str, source: str, migration: str | tuple[str, ...], *expected: str, **more: str) -> Case:
    return Case(name, source, migration, frozenset(expected), **more)


# A table reads best as one: one case per entry, not one argument per line.
# fmt: off
CASES = [
    # ---- squawk ------------------------------------------------------------------------------------
    case("constant-default", "squawk adding-field-with-default (PostgreSQL 11+ note)",
         "ALTER TABLE orders ADD COLUMN paid boolean NOT NULL DEFAULT false;", "catalog-lock",
         disagrees="squawk flags any default; measured: no rewrite since PostgreSQL 11, so only a brief lock"),
    case("volatile-default", "squawk adding-field-with-default; strong_migrations volatile default; Atlas PG302",
         "ALTER TABLE orders ADD COLUMN r float DEFAULT random();", "table-rewrite"),
    case("stable-default", "strong_migrations volatile default (now() is STABLE, evaluated once)",
         "ALTER TABLE orders ADD COLUMN at timestamptz DEFAULT now();", "catalog-lock"),
    case("generated-stored", "squawk adding-field-with-default (generated column); strong_migrations",
         "ALTER TABLE orders ADD COLUMN twice int GENERATED ALWAYS AS (total * 2) STORED;", "table-rewrite"),
    case("required-field", "squawk adding-required-field; Atlas MF103",
         "ALTER TABLE orders ADD COLUMN code text NOT NULL;",
         "required-column", "validating-scan", "may-fail-on-data"),
    case("set-not-null", "squawk adding-not-nullable-field; strong_migrations setting NOT NULL; Atlas MF104/PG303",
         "ALTER TABLE orders ALTER COLUMN total SET NOT NULL;",
         "not-null-added", "validating-scan", "may-fail-on-data"),
    case("not-null-check-not-valid", "squawk adding-not-nullable-field, step 1 (after the rollout)",
         AFTER + "ALTER TABLE orders ADD CONSTRAINT total_nn CHECK (total IS NOT NULL) NOT VALID;", "catalog-lock"),
    case("not-null-check-validate", "squawk adding-not-nullable-field, step 2",
         "ALTER TABLE orders VALIDATE CONSTRAINT total_nn;",
         setup="ALTER TABLE orders ADD CONSTRAINT total_nn CHECK (total IS NOT NULL) NOT VALID;"),
    case("not-null-after-check", "squawk adding-not-nullable-field, step 3 (PostgreSQL 12+ skips the scan)",
         AFTER + "ALTER TABLE orders ALTER COLUMN total SET NOT NULL;", "catalog-lock",
         setup="ALTER TABLE orders ADD CONSTRAINT total_nn CHECK (total IS NOT NULL);"),
    case("check-constraint", "squawk constraint-missing-not-valid; strong_migrations adding a check constraint",
         "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0);",
         "constraint-added", "validating-scan", "may-fail-on-data"),
    case("check-not-valid", "squawk constraint-missing-not-valid (solution)",
         AFTER + "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0) NOT VALID;", "catalog-lock"),
    case("validate-same-transaction", "squawk issue: VALIDATE in the same transaction as NOT VALID",
         AFTER + "ALTER TABLE orders ADD CONSTRAINT positive CHECK (total >= 0) NOT VALID;\n"
         "ALTER TABLE orders VALIDATE CONSTRAINT positive;", "catalog-lock", "validating-scan",
         disagrees="squawk accepts it; measured: the scan runs under the ACCESS EXCLUSIVE taken by the ADD"),
    case("foreign-key", "squawk adding-foreign-key-constraint; strong_migrations adding a foreign key",
         "ALTER TABLE orders ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id);",
         "constraint-added", "validating-scan", "may-fail-on-data"),
    case("foreign-key-not-valid", "squawk adding-foreign-key-constraint (solution)",
         AFTER + "ALTER TABLE orders ADD CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
         "catalog-lock"),
    case("index", "squawk require-concurrent-index-creation; strong_migrations; Atlas PG101",
         "CREATE INDEX orders_status ON orders (status);", "blocking-index-build"),
    case("index-concurrently", "squawk require-concurrent-index-creation (solution)",
         "CREATE INDEX CONCURRENTLY orders_status ON orders (status);"),
    case("index-new-table", "squawk require-concurrent-index-creation (tables created in the transaction)",
         "CREATE TABLE items (id int);\nCREATE INDEX items_id ON items (id);"),
    case("index-table-of-earlier-file", "strong_migrations adding an index (new tables are exempt)",
         ("CREATE TABLE items (id int);", "CREATE INDEX items_id ON items (id);"),
         disagrees="squawk and strong_migrations flag it (another file or migration); measured: a table the "
         "pending set creates is new and empty, whichever file creates it"),
    case("unique-constraint", "squawk disallowed-unique-constraint; strong_migrations adding a unique constraint",
         "ALTER TABLE users ADD CONSTRAINT users_email UNIQUE (email);",
         "constraint-added", "blocking-index-build", "may-fail-on-data"),
    case("unique-index-concurrently", "squawk disallowed-unique-constraint (solution, step 1); Atlas MF101",
         AFTER + "CREATE UNIQUE INDEX CONCURRENTLY users_email_idx ON users (email);", "may-fail-on-data"),
    case("unique-using-index", "squawk disallowed-unique-constraint (solution, step 2)",
         AFTER + "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_idx;",
         "catalog-lock", setup="CREATE UNIQUE INDEX users_email_idx ON users (email);"),
    case("primary-key", "squawk adding-serial-primary-key-field; Atlas PG104/PG304",
         "ALTER TABLE events ADD PRIMARY KEY (id);",
         "constraint-added", "not-null-added", "blocking-index-build", "may-fail-on-data",
         setup="CREATE TABLE events (id int, name text);"),
    case("serial-column", "strong_migrations adding an auto-incrementing column",
         "ALTER TABLE orders ADD COLUMN seq serial;", "table-rewrite"),
    case("identity-column", "strong_migrations adding an auto-incrementing column (identity)",
         "ALTER TABLE orders ADD COLUMN num bigint GENERATED ALWAYS AS IDENTITY;", "table-rewrite"),
    case("drop-column", "squawk ban-drop-column; strong_migrations removing a column; Atlas DS103",
         "ALTER TABLE orders DROP COLUMN note;", "drop-column", "catalog-lock"),
    case("drop-column-after-rollout", "strong_migrations removing a column (step 3, after the deploy)",
         AFTER + "ALTER TABLE orders DROP COLUMN note;", "catalog-lock"),
    case("drop-table", "squawk ban-drop-table; Atlas DS102", "DROP TABLE orders;", "drop-table", "catalog-lock"),
    case("drop-not-null", "squawk ban-drop-not-null",
         "ALTER TABLE users ALTER COLUMN name DROP NOT NULL;", "drop-not-null", "catalog-lock"),
    case("rename-column", "squawk renaming-column; strong_migrations renaming a column; Atlas BC102",
         "ALTER TABLE users RENAME COLUMN name TO full_name;", "rename-column", "catalog-lock"),
    case("rename-table", "squawk renaming-table; strong_migrations renaming a table; Atlas BC101",
         "ALTER TABLE orders RENAME TO purchases;", "rename-table", "catalog-lock"),
    case("rename-table-view", "squawk renaming-table (solution: a view with the new name)",
         "CREATE VIEW purchases AS SELECT * FROM orders;"),
    case("type-int-bigint", "squawk changing-column-type; strong_migrations; Atlas PG301",
         "ALTER TABLE orders ALTER COLUMN total TYPE bigint;", "column-type-changed", "table-rewrite"),
    case("type-varchar-longer", "squawk changing-column-type (binary coercible)",
         "ALTER TABLE orders ALTER COLUMN status TYPE varchar(50);", "catalog-lock",
         disagrees="squawk flags every type change; measured: no rewrite, and every value reads the same"),
    case("type-varchar-text", "strong_migrations changing the type of a column (string to text is safe)",
         "ALTER TABLE orders ALTER COLUMN status TYPE text;", "catalog-lock"),
    case("type-text-varchar", "strong_migrations changing the type of a column (adding a limit)",
         "ALTER TABLE orders ALTER COLUMN note TYPE varchar(20);", "column-type-changed", "table-rewrite"),
    case("char-field", "squawk ban-char-field (style: out of scope)",
         "ALTER TABLE users ADD COLUMN code char(5);", "catalog-lock"),
    case("style-serial-table", "squawk prefer-identity, prefer-bigint-over-int (style: out of scope)",
         "CREATE TABLE tags (id serial PRIMARY KEY, label varchar(40));"),
    case("json-column", "strong_migrations adding a json column (style: out of scope)",
         "ALTER TABLE orders ADD COLUMN data json;", "catalog-lock"),
    case("drop-index", "squawk require-concurrent-index-deletion; Atlas PG102",
         "DROP INDEX orders_note;", "catalog-lock", setup="CREATE INDEX orders_note ON orders (note);",
         disagrees="squawk flags it; measured: ACCESS EXCLUSIVE for a catalog change only, brief under lock_timeout"),
    case("drop-index-concurrently", "squawk require-concurrent-index-deletion (solution)",
         "DROP INDEX CONCURRENTLY orders_note;", setup="CREATE INDEX orders_note ON orders (note);"),
    case("lock-timeout-lifted", "squawk require-lock-timeout, Applying migrations safely",
         "SET lock_timeout = 0;\nALTER TABLE users ADD COLUMN nickname text;", "lock-timeout-overridden",
         "catalog-lock"),
    case("reindex", "squawk require-concurrent-reindex; PostgreSQL REINDEX (SHARE on the table)",
         "REINDEX TABLE orders;", "blocking-index-build"),
    case("reindex-concurrently", "squawk require-concurrent-reindex (solution)", "REINDEX TABLE CONCURRENTLY orders;"),
    # ---- strong_migrations ---------------------------------------------------------------------------
    case("rename-enum-value", "strong_migrations renaming an enum value",
         "ALTER TYPE mood RENAME VALUE 'sad' TO 'unhappy';", "rename-enum-value",
         setup="CREATE TYPE mood AS ENUM ('sad', 'ok');"),
    case("rename-schema", "strong_migrations renaming a schema",
         "ALTER SCHEMA {schema} RENAME TO {schema}_v2;", "rename-schema"),
    case("backfill-same-transaction", "strong_migrations backfilling data (in the migration's transaction)",
         "ALTER TABLE orders ADD COLUMN paid boolean;\nUPDATE orders SET paid = false;",
         "catalog-lock", "backfill-under-lock"),
    case("backfill", "strong_migrations backfilling data (one statement, every row)",
         "UPDATE orders SET status = 'new';", "backfill"),
    case("targeted-update", "strong_migrations backfilling data (a few rows by key)",
         "UPDATE orders SET status = 'new' WHERE id = 42;"),
    case("backfill-no-transaction", "strong_migrations backfilling data (outside the schema change's transaction)",
         "-- premigrate:no-transaction\nALTER TABLE orders ADD COLUMN paid boolean;\nUPDATE orders SET paid = false;",
         "catalog-lock", "backfill"),
    case("exclusion-constraint", "strong_migrations adding an exclusion constraint",
         "ALTER TABLE orders ADD CONSTRAINT one_per_id EXCLUDE USING btree (id WITH =);",
         "constraint-added", "blocking-index-build", "may-fail-on-data"),
    # ---- Atlas migrate lint ----------------------------------------------------------------------------
    case("index-to-unique", "Atlas MF102 (modifying a non-unique index to unique)",
         "DROP INDEX orders_note;\nCREATE UNIQUE INDEX orders_note ON orders (note);",
         "catalog-lock", "blocking-index-build", "constraint-added", "may-fail-on-data",
         setup="CREATE INDEX orders_note ON orders (note);"),
    case("drop-schema", "Atlas DS101 (schema dropped: its tables with it)",
         "DROP SCHEMA {schema} CASCADE;", "drop-table", "catalog-lock"),
    case("partitioned-type", "Atlas PG301 on a partitioned table (every partition is rewritten)",
         "ALTER TABLE events ALTER COLUMN id TYPE bigint;", "column-type-changed", "table-rewrite",
         setup="CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);\n"
         "CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"),
    # ---- PostgreSQL's documentation of lock levels (Explicit Locking, ALTER TABLE notes) ------------------
    case("create-trigger", "PostgreSQL Explicit Locking: CREATE TRIGGER takes SHARE ROW EXCLUSIVE",
         "CREATE TRIGGER audit BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION noop();", "catalog-lock",
         setup="CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';"),
    case("set-storage-parameter", "PostgreSQL ALTER TABLE: SET (fillfactor) takes SHARE UPDATE EXCLUSIVE",
         "ALTER TABLE orders SET (fillfactor = 70);"),
    case("vacuum-full", "PostgreSQL Explicit Locking: VACUUM FULL takes ACCESS EXCLUSIVE and rewrites",
         "VACUUM FULL orders;", "table-rewrite"),
    case("cluster", "PostgreSQL Explicit Locking: CLUSTER takes ACCESS EXCLUSIVE and rewrites",
         "CLUSTER orders USING orders_pkey;", "table-rewrite"),
    case("refresh-matview", "PostgreSQL Explicit Locking: REFRESH MATERIALIZED VIEW takes ACCESS EXCLUSIVE",
         "REFRESH MATERIALIZED VIEW totals;", "table-rewrite",
         setup="CREATE MATERIALIZED VIEW totals AS SELECT user_id, sum(total) AS total FROM orders GROUP BY user_id;"),
    case("refresh-matview-concurrently", "PostgreSQL: REFRESH ... CONCURRENTLY takes EXCLUSIVE (reads go on)",
         "REFRESH MATERIALIZED VIEW CONCURRENTLY totals;",
         setup="CREATE MATERIALIZED VIEW totals AS SELECT user_id, sum(total) AS total FROM orders GROUP BY user_id;\n"
         "CREATE UNIQUE INDEX totals_user ON totals (user_id);"),
    case("truncate", "PostgreSQL Explicit Locking: TRUNCATE takes ACCESS EXCLUSIVE (no scan, no rewrite)",
         "TRUNCATE orders;", "catalog-lock"),
    case("lock-table", "PostgreSQL LOCK: ACCESS EXCLUSIVE by default", "LOCK TABLE orders;", "catalog-lock"),
    case("drop-view", "squawk ban-drop-view", "DROP VIEW recent;", "drop-view", "catalog-lock",
         setup="CREATE VIEW recent AS SELECT id, total FROM orders;"),
    case("replace-view", "a view dropped and made again in one transaction",
         "DROP VIEW recent;\nCREATE VIEW recent AS SELECT id, total, status FROM orders;", "catalog-lock",
         setup="CREATE VIEW recent AS SELECT id, total FROM orders;"),
    case("rename-view", "squawk renaming-table (views)", "ALTER VIEW recent RENAME TO latest;",
         "rename-view", "catalog-lock", setup="CREATE VIEW recent AS SELECT id, total FROM orders;"),
    case("drop-function", "squawk ban-drop-function", "DROP FUNCTION double(int);", "drop-function",
         setup="CREATE FUNCTION double(n int) RETURNS int LANGUAGE sql AS 'SELECT n * 2';"),
    case("replace-function", "CREATE OR REPLACE FUNCTION keeps its signature",
         "CREATE OR REPLACE FUNCTION double(n int) RETURNS int LANGUAGE sql AS 'SELECT n + n';",
         setup="CREATE FUNCTION double(n int) RETURNS int LANGUAGE sql AS 'SELECT n * 2';"),
    case("rename-function", "Atlas backward-incompatible changes (a function renamed)",
         "ALTER FUNCTION double(int) RENAME TO twice;", "rename-function",
         setup="CREATE FUNCTION double(n int) RETURNS int LANGUAGE sql AS 'SELECT n * 2';"),
    case("drop-type", "squawk ban-drop-type", "DROP TYPE mood;", "drop-type",
         setup="CREATE TYPE mood AS ENUM ('sad', 'ok');"),
    case("own-transaction", "psql's way: a file with its own BEGIN/COMMIT, then an index outside it",
         "BEGIN;\nALTER TABLE orders ADD COLUMN x int;\nCOMMIT;\nCREATE INDEX orders_x ON orders (x);",
         "catalog-lock", "blocking-index-build"),
    case("own-transaction-rolled-back", "psql's way: what a ROLLBACK undoes never reaches running code",
         "BEGIN;\nALTER TABLE orders DROP COLUMN note;\nROLLBACK;", "catalog-lock"),
]
# fmt: on
