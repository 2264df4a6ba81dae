"""The judgement of ``premigrate check`` on facts alone (no database): catalog diffs, measured work and
locks, findings and their levels, allow directives, the report."""

from __future__ import annotations

import json

import pytest

from premigrate.checking.catalog import Catalog, Column, Constraint, Index, Relation, Routine, TypeDef
from premigrate.checking.changes import Change, diff
from premigrate.checking.facts import HeldLock, Observation, StatementFacts, Unit, Work, held_locks, measured_work
from premigrate.checking.judging import Finding, Judging, TableSize, acknowledge, judge
from premigrate.checking.report import CheckReport
from premigrate.checking.rules import BREAKING, RULES, Level
from premigrate.engine.directives import Allowance

INT, BIGINT, TEXT, VARCHAR, NUMERIC = 23, 20, 25, 1043, 1700


def column(name: str, type_oid: int = INT, typmod: int = -1, *, not_null: bool = False, default: bool = False):
    return Column(
        name, type_oid, {INT: "integer", BIGINT: "bigint", TEXT: "text"}.get(type_oid, "t"), typmod, not_null, default
    )


ORDERS = Relation(
    10,
    1,
    "orders",
    "r",
    500,
    {1: column("id", not_null=True), 2: column("total"), 3: column("note", TEXT)},
    (Constraint(11, "orders_pkey", "p", True, 12),),
    (Index(12, "orders_pkey", True, True, 501),),
)
RECENT = Relation(20, 1, "recent", "v", 0, {1: column("id")})
BASE = Catalog(
    {1: "public"},
    {10: ORDERS, 20: RECENT},
    {30: Routine(30, 1, "double", "n integer", "f")},
    {40: TypeDef(40, 1, "mood", "e", ("sad", "ok"))},
)


def changed(relation: Relation, **fields) -> Relation:
    return Relation(**{**relation.__dict__, **fields})


def kinds(changes: list[Change]) -> set[tuple[str, str]]:
    return {(c.kind, c.subject) for c in changes}


def test_columns_running_code_knows_are_compared_by_attnum() -> None:
    renamed = changed(
        ORDERS, columns={1: ORDERS.columns[1], 2: column("amount"), 3: column("note", TEXT, not_null=True)}
    )
    assert kinds(diff(BASE, BASE.with_relations([renamed]), BASE)) == {
        ("rename-column", "public.orders.total"),
        ("not-null-added", "public.orders.note"),
    }
    dropped = changed(ORDERS, columns={1: ORDERS.columns[1], 2: column("total", BIGINT)})
    assert kinds(diff(BASE, BASE.with_relations([dropped]), BASE)) == {
        ("drop-column", "public.orders.note"),
        ("column-type-changed", "public.orders.total"),
    }


@pytest.mark.parametrize(
    ("old", "new", "breaks"),
    [
        ((VARCHAR, 14), (VARCHAR, 54), False),  # varchar(10) -> varchar(50)
        ((VARCHAR, 54), (VARCHAR, 14), True),  # shorter
        ((VARCHAR, 14), (TEXT, -1), False),
        ((TEXT, -1), (VARCHAR, 24), True),  # a limit where there was none
        ((NUMERIC, (10 << 16 | 2) + 4), (NUMERIC, (12 << 16 | 2) + 4), False),  # numeric(10,2) -> (12,2)
        ((NUMERIC, (10 << 16 | 2) + 4), (NUMERIC, (12 << 16 | 3) + 4), True),  # another scale
        ((INT, -1), (BIGINT, -1), True),
    ],
)
def test_a_type_change_breaks_running_code_unless_it_widens(old, new, breaks) -> None:
    before = changed(ORDERS, columns={2: Column("total", old[0], "a", old[1], False, False)})
    after = changed(ORDERS, columns={2: Column("total", new[0], "b", new[1], False, False)})
    start = BASE.with_relations([before])
    found = kinds(diff(start, start.with_relations([after]), start))
    assert (("column-type-changed", "public.orders.total") in found) is breaks


def test_new_columns_constraints_and_unique_indexes_on_existing_tables() -> None:
    grown = changed(
        ORDERS,
        columns={
            **ORDERS.columns,
            4: column("code", TEXT, not_null=True),
            5: column("flag", not_null=True, default=True),
        },
        constraints=(*ORDERS.constraints, Constraint(13, "positive", "c", False), Constraint(14, "nn", "n", True)),
        indexes=(
            *ORDERS.indexes,
            Index(15, "orders_note", True, True, 502),
            Index(16, "orders_total", False, True, 503),
        ),
    )
    changes = diff(BASE, BASE.with_relations([grown]), BASE)
    assert kinds(changes) == {
        ("required-column", "public.orders.code"),
        ("constraint-added", "public.orders: positive"),
        ("constraint-added", "public.orders: orders_note"),
    }
    by_subject = {c.subject: c for c in changes}
    assert not by_subject["public.orders: positive"].checks_rows  # NOT VALID checks no existing row
    assert by_subject["public.orders: orders_note"].checks_rows and by_subject["public.orders: orders_note"].table


def test_what_the_pending_set_creates_is_exempt() -> None:
    new_table = Relation(50, 1, "items", "r", 600, {1: column("id")})
    start = BASE.with_relations([new_table])
    gone = start.with_relations([], gone=[50])
    assert diff(start, gone, BASE) == []  # dropping it breaks nothing that runs


def test_a_name_dropped_and_made_again_is_compared_by_name() -> None:
    remade = Relation(21, 1, "recent", "v", 0, {1: column("id"), 2: column("total")})
    after = BASE.with_relations([remade], gone=[20])
    assert diff(BASE, after, BASE) == []
    narrower = Relation(21, 1, "recent", "v", 0, {1: column("total")})
    assert kinds(diff(BASE, BASE.with_relations([narrower], gone=[20]), BASE)) == {("drop-column", "public.recent.id")}
    assert kinds(diff(BASE, BASE.with_relations([], gone=[20]), BASE)) == {("drop-view", "public.recent")}
    moved = changed(ORDERS, name="purchases")
    assert kinds(diff(BASE, BASE.with_relations([moved]), BASE)) == {("rename-table", "public.orders")}


def test_functions_types_and_schemas() -> None:
    recreated = Catalog(BASE.schemas, BASE.relations, {31: Routine(31, 1, "double", "n integer", "f")}, BASE.types)
    assert diff(BASE, recreated, BASE) == []
    renamed = Catalog({1: "app"}, BASE.relations, {30: Routine(30, 1, "twice", "n integer", "f")}, {})
    assert kinds(diff(BASE, renamed, BASE)) == {
        ("rename-function", "public.double(n integer)"),
        ("drop-type", "public.mood"),
        ("rename-schema", "public"),
    }
    relabelled = Catalog(
        BASE.schemas, BASE.relations, BASE.routines, {40: TypeDef(40, 1, "mood", "e", ("ok", "happy"))}
    )
    assert kinds(diff(BASE, relabelled, BASE)) == {("rename-enum-value", "public.mood")}


def test_measured_work_rewrite_index_validation_and_reads() -> None:
    rewritten = changed(ORDERS, filenode=900, indexes=(Index(12, "orders_pkey", True, True, 901),))
    assert measured_work(BASE, BASE.with_relations([rewritten]), BASE, {10: 2}, []) == (
        Work("public.orders", "rewrite", "rewritten with its 1 index"),
    )
    assert measured_work(BASE, BASE.with_relations([rewritten]), BASE, {10: 1}, [], truncates=True) == ()
    indexed = changed(ORDERS, indexes=(*ORDERS.indexes, Index(13, "orders_total", False, True, 700)))
    assert measured_work(BASE, BASE.with_relations([indexed]), BASE, {10: 1}, [])[0].kind == "index"
    checked = changed(ORDERS, constraints=(*ORDERS.constraints, Constraint(14, "positive", "c", True)))
    after = BASE.with_relations([checked])
    assert measured_work(BASE, after, BASE, {}, []) == ()  # proven without reading a row: no work
    assert measured_work(BASE, after, BASE, {10: 1}, [])[0].detail == "scanned to validate positive"
    assert measured_work(BASE, BASE, BASE, {10: 1}, [], wrote={10}) == (
        Work("public.orders", "data", "every row read", wrote=True),
    )


def test_held_locks_keep_the_strongest_blocking_mode_and_when_it_was_taken() -> None:
    unit = Unit(BASE)
    first = Observation(frozenset({(10, "ShareUpdateExclusiveLock"), (50, "AccessExclusiveLock")}), {})
    assert held_locks(unit, first, 3, BASE) == ()  # SHARE UPDATE EXCLUSIVE blocks neither; 50 is new
    later = Observation(frozenset({(10, "ShareLock"), (10, "AccessExclusiveLock"), (20, "RowExclusiveLock")}), {})
    assert held_locks(unit, later, 5, BASE) == (HeldLock("public.orders", "ACCESS EXCLUSIVE", 5),)
    assert held_locks(unit, later, 7, BASE)[0].line == 5


def fact(*, work=(), held=(), changes=(), line=4, after_rollout=False, timeout=None, script="V2__x.sql"):
    return StatementFacts(script, line, "ALTER TABLE orders ...", after_rollout, held, work, changes, timeout)


AE = HeldLock("public.orders", "ACCESS EXCLUSIVE", 4)
REWRITE = Work("public.orders", "rewrite", "rewritten")


def rules_of(findings: list[Finding]) -> list[tuple[str, Level]]:
    return [(f.rule, f.level) for f in findings]


def test_locked_work_is_an_error_above_the_threshold_or_when_the_size_is_unknown() -> None:
    big = Judging(1000, 5000, {"public.orders": TableSize(48_000_000)})
    small = Judging(1000, 5000, {"public.orders": TableSize(200)})
    unknown = Judging(1000, 5000, None)
    assert rules_of(judge([fact(work=(REWRITE,), held=(AE,))], big)) == [("table-rewrite", Level.ERROR)]
    assert rules_of(judge([fact(work=(REWRITE,), held=(AE,))], small)) == [("table-rewrite", Level.WARNING)]
    assert rules_of(judge([fact(work=(REWRITE,), held=(AE,))], unknown)) == [("table-rewrite", Level.ERROR)]
    [finding] = judge([fact(work=(REWRITE,), held=(AE,))], big)
    assert finding.measured == "ACCESS EXCLUSIVE on public.orders (48M rows): rewritten"
    assert "size unknown without --database-url" in judge([fact(work=(REWRITE,), held=(AE,))], unknown)[0].measured


def test_a_lock_from_an_earlier_statement_counts_while_a_later_one_works() -> None:
    earlier = HeldLock("public.users", "ACCESS EXCLUSIVE", 2)
    reads = Work("public.orders", "data", "every row read", wrote=True)
    sized = Judging(1000, 5000, {"public.orders": TableSize(5000)})
    [finding] = judge([fact(work=(reads,), held=(earlier,))], sized)
    assert (finding.rule, finding.level) == ("backfill-under-lock", Level.ERROR)
    assert "ACCESS EXCLUSIVE on public.users held (taken at line 2), blocking reads and writes" in finding.measured
    assert rules_of(judge([fact(work=(reads,))], sized)) == [("backfill", Level.WARNING)]
    assert judge([fact(work=(reads,))], Judging(10_000, 5000, {"public.orders": TableSize(5000)})) == []


def test_breaking_changes_count_before_the_rollout_only() -> None:
    dropped = Change("drop-column", "public.orders.note", relation=10, table="public.orders")
    judging = Judging(1000, 5000, None)
    assert rules_of(judge([fact(changes=(dropped,), held=(AE,))], judging)) == [
        ("drop-column", Level.ERROR),
        ("catalog-lock", Level.INFO),
    ]
    assert rules_of(judge([fact(changes=(dropped,), held=(AE,), after_rollout=True)], judging)) == [
        ("catalog-lock", Level.INFO)
    ]


def test_rows_a_change_checks_may_fail_on_real_data() -> None:
    required = Change("required-column", "public.orders.code", relation=10, table="public.orders", checks_rows=True)
    facts = [fact(changes=(required,), after_rollout=True)]
    assert rules_of(judge(facts, Judging(1000, 5000, {"public.orders": TableSize(0)}))) == []
    assert rules_of(judge(facts, Judging(1000, 5000, {"public.orders": TableSize(3)}))) == [
        ("may-fail-on-data", Level.ERROR)
    ]
    assert rules_of(judge(facts, Judging(1000, 5000, None))) == [("may-fail-on-data", Level.WARNING)]


def test_a_lifted_lock_timeout_is_reported_once_per_file() -> None:
    facts = [
        fact(timeout=5000),
        fact(timeout=0, line=5),
        fact(timeout=0, line=6),
        fact(timeout=60_000, script="V3.sql"),
    ]
    found = judge(facts, Judging(1000, 5000, None))
    assert [(f.script, f.line, f.rule) for f in found] == [
        ("V2__x.sql", 5, "lock-timeout-overridden"),
        ("V3.sql", 4, "lock-timeout-overridden"),
    ]


def test_allow_directives_acknowledge_and_unknown_ones_are_findings() -> None:
    finding = Finding("drop-column", Level.ERROR, "V2__x.sql", 4, "...", "public.orders.note")
    allowances = {"V2__x.sql": [Allowance("drop-column", "nobody reads it", 1), Allowance("drop-colum", "typo", 2)]}
    acknowledged = acknowledge([finding], allowances)
    assert acknowledged[0].allowed == "nobody reads it" and not acknowledged[0].blocking
    assert (acknowledged[1].rule, acknowledged[1].line, acknowledged[1].level) == ("unknown-allow", 2, Level.WARNING)
    assert acknowledge([finding], {})[0].blocking


def test_the_report_counts_and_shows_every_finding() -> None:
    findings = [
        Finding("table-rewrite", Level.ERROR, "V2__x.sql", 3, "ALTER TABLE orders ...", "ACCESS EXCLUSIVE ..."),
        Finding("drop-column", Level.ERROR, "V2__x.sql", 4, "ALTER ...", "x", allowed="unused"),
        Finding("catalog-lock", Level.INFO, "V2__x.sql", 4, "ALTER ...", "y"),
    ]
    report = CheckReport(["V2__x.sql"], 1, "PostgreSQL 18.6", None, False, 100_000, findings, 1234.0)
    assert [f.rule for f in report.blocking] == ["table-rewrite"]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts"] == {"error": 2, "error_allowed": 1, "warning": 0, "info": 1}
    assert (
        data["findings"][1]["allowed"] == "unused" and data["findings"][0]["safe_way"] == RULES["table-rewrite"].advice
    )
    text = report.text()
    assert "V2__x.sql:4  error  drop-column  (allowed: unused)" in text
    assert text.endswith("2 error(s) (1 allowed), 0 warning(s), 1 info in 1.23 s")


def test_every_rule_has_advice_and_an_anchor() -> None:
    assert RULES.keys() >= BREAKING
    for rule in RULES.values():
        assert rule.advice and rule.anchors and rule.summary, rule.name


def test_the_docs_list_every_rule_with_its_level() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parent.parent / "docs" / "safe-rollouts.md").read_text()
    for rule in RULES.values():
        row = next((line for line in docs.splitlines() if line.startswith(f"| `{rule.name}` |")), None)
        assert row is not None, f"docs/safe-rollouts.md has no row for {rule.name}"
        assert row.split("|")[2].strip().startswith(str(rule.level)), rule.name
