"""The case table (tests/check_cases.py), end to end on real PostgreSQL: SQL from the anchors' documented
rules, measured by ``premigrate check``, must give exactly the expected findings."""

from __future__ import annotations

from collections import defaultdict

import pytest

from check_cases import CASES, COMMON, Case
from premigrate.engine.statements import split_statements
from premigrate.service.checking import CheckOptions, check
from premigrate.service.settings import Config

pytestmark = pytest.mark.reliability


def _pending_file(schema: str, text: str) -> str:
    """The case's SQL in its own schema: a SET search_path after the header's directives. A file whose
    statements all run outside a transaction says so, or the SET would make it a mixed file."""
    text = text.replace("{schema}", schema)
    lines = text.splitlines(keepends=True)
    cut = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    header, body = "".join(lines[:cut]), "".join(lines[cut:])
    if all(not s.runs_in_transaction_block for s in split_statements(body)) and "no-transaction" not in header:
        header += "-- premigrate:no-transaction\n"
    return f"{header}SET search_path TO {schema};\n{body}"


def case_files(cases: list[Case]) -> tuple[dict[str, str], dict[str, str]]:
    """The migrations folder (every case's tables in V1, its pending files after) and file -> case name."""
    setup, files, owner = [], {}, {}
    for number, case in enumerate(cases):
        schema = f"c{number:02d}"
        setup.append(f"CREATE SCHEMA {schema};\nSET search_path TO {schema};\n{COMMON}\n{case.setup}\n")
        for index, text in enumerate(case.files):
            name = f"V{100 + number * 10 + index}__{case.name.replace('-', '_')}.sql"
            files[name], owner[name] = _pending_file(schema, text), case.name
    files["V1__setup.sql"] = "\n".join(setup) + "RESET search_path;\n"
    return files, owner


def test_the_case_table_gives_the_expected_findings(server, write_migrations, reliability) -> None:
    files, owner = case_files(CASES)
    folder = write_migrations(files)
    result = check(Config(migrations=str(folder)), CheckOptions(scratch_url=server.admin_url, since="2"))
    assert result.report is not None, result.error
    found: dict[str, set[str]] = defaultdict(set)
    for finding in result.report.findings:
        found[owner[finding.script]].add(finding.rule)
    wrong = {
        case.name: {"measured": sorted(found[case.name]), "expected": sorted(case.expected)}
        for case in CASES
        if found[case.name] != case.expected
    }
    assert not wrong, wrong
    assert len(CASES) >= 40 and len({case.name for case in CASES}) == len(CASES)
    assert result.report.replayed == 1 and len(result.report.checked) == len(owner)
    reliability(
        "premigrate check: the case table (squawk, strong_migrations, Atlas, PostgreSQL lock docs)",
        len(CASES),
        "exactly the expected rules per case, measured on a scratch database",
        f"{len(result.report.findings)} findings in {result.report.total_ms / 1000:.2f} s",
    )
