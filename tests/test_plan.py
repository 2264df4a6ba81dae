"""Planning rules, from history rows and files alone (no database)."""

import datetime

from premigrate.engine import MigrationSet, Version
from premigrate.engine.history import BASELINE, REPEATABLE, VERSIONED, HistoryRow
from premigrate.engine.plan import make_plan

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def files(*names: str, text: str = "SELECT 1") -> MigrationSet:
    return MigrationSet.from_files([(name, text.encode()) for name in names])


def row(
    rank: int,
    version: str | None,
    script: str,
    *,
    kind: str = VERSIONED,
    checksum: str | None = None,
    success: bool = True,
) -> HistoryRow:
    migration_set = files(script)
    migration = (migration_set.versioned or migration_set.repeatable)[0]
    return HistoryRow(
        rank,
        version,
        migration.description,
        kind,
        script,
        checksum or migration.checksum,
        NOW,
        success,
        "transaction",
    )


def scripts(plan) -> list[str]:
    return [m.script for m in plan.pending]


def test_empty_history_plans_everything_versioned_first() -> None:
    plan = make_plan([], files("V2__b.sql", "R__view.sql", "V1__a.sql"))
    assert scripts(plan) == ["V1__a.sql", "V2__b.sql", "R__view.sql"]
    assert plan.problems == []
    assert plan.current_version is None


def test_applied_migrations_are_not_planned_again() -> None:
    history = [row(1, "1", "V1__a.sql"), row(2, None, "R__view.sql", kind=REPEATABLE)]
    plan = make_plan(history, files("V1__a.sql", "V2__b.sql", "R__view.sql"))
    assert scripts(plan) == ["V2__b.sql"]
    assert plan.current_version == "1"


def test_changed_repeatable_is_planned_again() -> None:
    history = [row(1, None, "R__view.sql", kind=REPEATABLE, checksum="old")]
    plan = make_plan(history, files("R__view.sql"))
    assert scripts(plan) == ["R__view.sql"]
    assert [s.state for s in plan.states] == ["outdated"]


def test_drift_missing_and_out_of_order_are_all_reported_together() -> None:
    history = [
        row(1, "1", "V1__a.sql", checksum="edited-since"),
        row(2, "2", "V2__b.sql"),
        row(3, "4", "V4__d.sql"),
    ]
    plan = make_plan(history, files("V1__a.sql", "V3__c.sql", "V4__d.sql"))
    assert len(plan.problems) == 3
    assert "V1__a.sql was edited after it was applied" in plan.problems[0]
    assert "V2__b.sql (version 2) is applied but its file is gone" in plan.problems[1]
    assert "V3__c.sql (version 3) is pending but version 4 is already applied" in plan.problems[2]
    assert [(s.script, s.state) for s in plan.states] == [
        ("V1__a.sql", "checksum-drift"),
        ("V2__b.sql", "missing-file"),
        ("V4__d.sql", "applied"),
        ("V3__c.sql", "out-of-order"),
    ]


def test_out_of_order_can_be_allowed() -> None:
    history = [row(1, "2", "V2__b.sql")]
    plan = make_plan(history, files("V1__a.sql", "V2__b.sql"), allow_out_of_order=True)
    assert scripts(plan) == ["V1__a.sql"]
    assert plan.problems == []


def test_baseline_covers_lower_versions_without_files() -> None:
    history = [HistoryRow(1, "3", "<< baseline >>", BASELINE, "<< baseline >>", None, NOW, True, None)]
    plan = make_plan(history, files("V1__a.sql", "V3__c.sql", "V4__d.sql"))
    assert scripts(plan) == ["V4__d.sql"]
    assert plan.problems == []
    assert plan.current_version == "3"


def test_failed_migration_blocks_until_repaired() -> None:
    history = [row(1, "1", "V1__a.sql"), row(2, "2", "V2__b.sql", success=False)]
    plan = make_plan(history, files("V1__a.sql", "V2__b.sql"))
    assert len(plan.problems) == 1
    assert "V2__b.sql failed on 2026-11-25 12:00:00" in plan.problems[0]
    assert "premigrate repair" in plan.problems[0]
    assert [s.state for s in plan.states] == ["failed", "applied"]


def test_target_stops_at_a_version() -> None:
    plan = make_plan([], files("V1__a.sql", "V2__b.sql", "V3__c.sql"), target=Version.parse("2"))
    assert scripts(plan) == ["V1__a.sql", "V2__b.sql"]
    assert plan.states[-1].state == "beyond-target"
