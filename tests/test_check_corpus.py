"""``premigrate check`` on SQL nobody here wrote: the whole Lemmy corpus (247 files), each file measured
against the schema the files before it made (as if each were deployed alone), without a crash; what it
finds is counted in RELIABILITY.md."""

from __future__ import annotations

from collections import Counter

import pytest

from pgservers import CORPORA, Server
from premigrate.service.checking import CheckOptions, check
from premigrate.service.settings import Config

LEMMY = CORPORA / "lemmy"

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def test_every_lemmy_file_is_measured_and_its_findings_counted(server: Server, reliability) -> None:
    if not LEMMY.is_dir():
        pytest.skip(f"the shared corpus is not beside this clone ({LEMMY}); it is only in the team's workspace")
    if missing := [name for name in ("ltree", "pg_trgm", "pgcrypto") if not server.has_extension(name)]:
        pytest.skip(f"the {server.name} server lacks the extensions Lemmy needs: {', '.join(missing)}")
    options = CheckOptions(scratch_url=server.admin_url, since="1", existing_per_migration=True)
    result = check(Config(migrations=str(LEMMY)), options)
    assert result.report is not None, result.error
    report = result.report
    assert len(report.checked) == 247 and result.exit_code == 4
    found = {(f.script, f.rule) for f in report.findings}
    # Findings a reader can check against the files themselves:
    assert ("V070__apub_columns.sql", "table-rewrite") in found  # ADD COLUMN ... DEFAULT generate_unique_changeme()
    assert ("V044__remove_mat_views.sql", "drop-view") in found
    assert ("V029__create_materialized_views.sql", "backfill-under-lock") in found  # views locked while it reads
    # A file that only creates things is measured and gives nothing to report:
    assert not [f for f in report.findings if f.script == "V002__create_user.sql"]
    by_level = Counter(str(f.level) for f in report.findings)
    by_rule = Counter(f.rule for f in report.findings)
    top = ", ".join(f"{rule} {count}" for rule, count in by_rule.most_common(6))
    reliability(
        "premigrate check: the Lemmy corpus, each file against the schema before it",
        len(report.checked),
        "every file measured on a scratch database without a crash (no target: sizes unknown)",
        f"{by_level['error']} errors, {by_level['warning']} warnings, {by_level['info']} info ({top}) "
        f"in {report.total_ms / 1000:.1f} s",
    )
