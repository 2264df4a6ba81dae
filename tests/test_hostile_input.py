"""Random, malformed and hostile input for every entry point: always a specific error, never a traceback,
and every CloudFormation or CodePipeline caller gets exactly one answer."""

from __future__ import annotations

import collections
import http.server
import io
import json
import threading
import uuid
import zipfile
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aws_fakes
from premigrate.adapters import artifact
from premigrate.adapters.artifact import migrations_from_zip
from premigrate.adapters.connection import params_from_secret
from premigrate.engine import ConfigurationError, MigrationSet, MigrationSetError
from premigrate.engine.errors import ScriptSyntaxError
from premigrate.engine.statements import split_statements
from premigrate.local_invoke import invoke
from premigrate.triggers import codepipeline
from premigrate.triggers.codepipeline import UserParametersError, parse_user_parameters

pytestmark = pytest.mark.reliability
EXAMPLES = 150
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
SQLISH = st.text(alphabet=st.sampled_from(list("abc ;'\"$-/*\\\nEe()xBEGIN")), max_size=200)


# ---- pure parts: any input, only our own errors ----------------------------------------------------------


@HYPOTHESIS
@given(SQLISH)
def test_statement_splitter_never_fails_unexpectedly(text: str) -> None:
    try:
        statements = split_statements(text)
    except ScriptSyntaxError as error:
        assert 0 <= error.offset <= len(text)
        return
    assert all(s.text.strip() and text[s.offset :].startswith(s.text) for s in statements)


@HYPOTHESIS
@given(
    st.lists(
        st.tuples(
            st.text(max_size=30).map(lambda n: n + ".sql")
            | st.sampled_from(["V1__a.sql", "V1.0__b.sql", "R__v.sql", "V2_x.sql", "V__.sql", "V1.2.3__c.sql"]),
            st.binary(max_size=200),
        ),
        max_size=6,
    )
)
def test_migration_set_accepts_or_refuses_with_a_list(files: list[tuple[str, bytes]]) -> None:
    try:
        migration_set = MigrationSet.from_files(files)
    except MigrationSetError as error:
        assert error.problems and all(isinstance(problem, str) for problem in error.problems)
        return
    for migration in (*migration_set.versioned, *migration_set.repeatable):
        assert all(problem.startswith(migration.script) for problem in migration.check())


@HYPOTHESIS
@given(st.one_of(st.text(max_size=60), JSON.map(json.dumps)))
def test_user_parameters_accepted_or_refused_clearly(text: str) -> None:
    try:
        parameters = parse_user_parameters(text)
    except UserParametersError as error:
        assert str(error).startswith("UserParameters")
        return
    assert set(parameters) <= {"dry_run", "migrations_path", "target", "lock_wait_seconds"}


@HYPOTHESIS
@given(JSON)
def test_malformed_secrets_are_refused_clearly(secret: Any) -> None:
    try:
        params = params_from_secret(secret)
    except ConfigurationError as error:
        assert "secret" in str(error)
        return
    assert params.user and params.password is not None


def test_huge_migration_file_is_split_in_reasonable_time() -> None:
    text = "".join(f"INSERT INTO t VALUES ({n}, 'row; {n}', $${n};$$);\n" for n in range(300_000))
    assert len(text) > 10_000_000
    migration_set = MigrationSet.from_files([("V1__huge.sql", text.encode())])
    assert len(migration_set.versioned[0].statements) == 300_000


# ---- artifacts -----------------------------------------------------------------------------------------


def make_zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("entries", "symlink", "problem"),
    [
        ({"migrations/../../../tmp/evil.sql": b"x"}, None, "path leaves the artifact (..)"),
        ({"/migrations/V1__a.sql": b"x"}, None, "absolute path"),
        ({"C:/migrations/V1__a.sql": b"x"}, None, "absolute path"),
        ({"migrations/V1__a.sql": b"SELECT 1"}, "migrations/V2__link.sql", "symbolic link"),
    ],
)
def test_unsafe_artifacts_are_refused_before_reading(entries, symlink, problem, reliability) -> None:
    with pytest.raises(MigrationSetError) as caught:
        migrations_from_zip(make_zip(entries, symlink))
    assert caught.value.problems[0] == "the input artifact was refused, nothing was read from it:"
    assert problem in caught.value.problems[1]
    reliability(f"artifact zip with {problem}", 1, "refused whole before any entry is read", problem)


def test_too_many_entries_and_zip_bombs_are_refused(monkeypatch, reliability) -> None:
    monkeypatch.setattr(artifact, "MAX_ENTRIES", 50)
    many = make_zip({f"migrations/V{n}__m.sql": b"SELECT 1" for n in range(1, 60)})
    with pytest.raises(MigrationSetError, match="holds 59 entries, more than the 50 allowed"):
        migrations_from_zip(many)

    monkeypatch.setattr(artifact, "MAX_SQL_BYTES", 1024 * 1024)
    bomb = make_zip({"migrations/V1__bomb.sql": b"\0" * (8 * 1024 * 1024)})
    assert len(bomb) < 20_000
    with pytest.raises(MigrationSetError, match="unpacks to 8388608 bytes"):
        migrations_from_zip(bomb)

    # Sizes inside the limit as declared, over it as read: the byte cap still holds.
    under = make_zip({f"migrations/V{n}__m.sql": b"-- " + b"x" * 400_000 for n in range(1, 4)})
    with pytest.raises(MigrationSetError, match="exceed 1048576 bytes"):
        migrations_from_zip(under)
    reliability(
        f"artifact zip with too many entries; a zip bomb (8 MiB of zeros in {len(bomb) // 1024} KiB)",
        3,
        "refused by entry count, declared size and a hard read cap",
        "all three refused",
    )


# ---- the Lambda's callers with random events -------------------------------------------------------------


class Recorder(http.server.ThreadingHTTPServer):
    """Stands in for CloudFormation's ResponseURL: counts the answers per path."""

    def __init__(self) -> None:
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.guard = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with recorder.guard:
                    recorder.answers.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{uuid.uuid4()}"


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture
def examples() -> collections.Counter[str]:
    """Counts what a property-based test's examples did (one fixture for all of its examples)."""
    return collections.Counter()


class JobResults:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.guard = threading.Lock()

    def put_job_success_result(self, **params: Any) -> None:
        with self.guard:
            self.calls.append(("success", params))

    def put_job_failure_result(self, **params: Any) -> None:
        with self.guard:
            self.calls.append(("failure", params))


def cfn_event(url: str) -> dict[str, Any]:
    """A Create from moto's stack (its status is read over HTTP) for the function's migration set."""
    return aws_fakes.cfn_event("Create", SimpleNamespace(url=url))  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    changes=st.dictionaries(
        st.sampled_from(
            ["RequestType", "StackId", "RequestId", "LogicalResourceId", "PhysicalResourceId", "ResourceProperties"]
        ),
        st.none() | JSON,
        max_size=4,
    )
)
def test_random_cloudformation_events_get_exactly_one_answer(
    changes, recorder, function_env, aws, reliability, examples
) -> None:
    url = recorder.url()
    event = cfn_event(url)
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    result = invoke(event)
    path = "/" + url.rsplit("/", 1)[1]
    assert len(recorder.answers[path]) == 1
    answer = recorder.answers[path][0]
    assert answer["Status"] in ("SUCCESS", "FAILED") and answer == result
    if answer["Status"] == "FAILED":
        assert answer["Reason"].startswith(("malformed", "unknown RequestType", "premigrate"))
    examples["cloudformation"] += 1
    examples["cloudformation failed"] += answer["Status"] == "FAILED"
    reliability(
        "random and malformed CloudFormation events (hypothesis)",
        examples["cloudformation"],
        "exactly one answer each, FAILED with a specific reason when malformed",
        f"{examples['cloudformation failed']} FAILED, the rest SUCCESS; never two answers",
    )


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    user_parameters=st.none() | st.text(max_size=40) | JSON.map(json.dumps),
    continuation=st.none() | st.text(max_size=20),
    extra=JSON,
)
def test_random_codepipeline_jobs_get_exactly_one_result(
    user_parameters, continuation, extra, function_env, monkeypatch, reliability, examples
) -> None:
    results = JobResults()
    monkeypatch.setattr(codepipeline, "codepipeline_client", lambda: results)
    configuration: dict[str, Any] = {"FunctionName": "premigrate"}
    if user_parameters is not None:
        configuration["UserParameters"] = user_parameters
    data: dict[str, Any] = {
        "actionConfiguration": {"configuration": configuration},
        "inputArtifacts": [],
        "artifactCredentials": {},
        "extra": extra,
    }
    if continuation is not None:
        data["continuationToken"] = continuation
    invoke({"CodePipeline.job": {"id": str(uuid.uuid4()), "data": data}})
    assert len(results.calls) == 1
    kind, params = results.calls[0]
    if kind == "failure":
        assert params["failureDetails"]["message"].startswith("premigrate ")
    examples["codepipeline"] += 1
    examples["codepipeline failed"] += kind == "failure"
    reliability(
        "random CodePipeline jobs: UserParameters, continuation tokens, extra data (hypothesis)",
        examples["codepipeline"],
        "exactly one job result each; failures carry a specific message",
        f"{examples['codepipeline failed']} refused, the rest succeeded",
    )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    event=JSON
    | st.dictionaries(
        st.sampled_from(["action", "target", "lock_wait_seconds", "request_id", "sql"]),
        JSON | st.sampled_from(["plan", "status", "validate", "migrate"]),
        max_size=3,
    )
)
def test_random_direct_events_get_a_clear_answer(event, function_env, reliability, examples) -> None:
    result = invoke(event)
    assert isinstance(result["ok"], bool)
    if not result["ok"]:
        assert result["error"] and result["error_kind"] in ("configuration", "validation", "migration", "lock")
    examples["direct"] += 1
    examples["direct refused"] += not result["ok"]
    reliability(
        "random direct events (hypothesis)",
        examples["direct"],
        "an answer each: the report, or a specific error; never a traceback",
        f"{examples['direct refused']} refused, the rest answered with a report",
    )


def test_concurrent_invocations_each_get_exactly_one_answer(
    recorder, function_env, aws, monkeypatch, reliability
) -> None:
    results = JobResults()
    monkeypatch.setattr(codepipeline, "codepipeline_client", lambda: results)
    urls = [recorder.url() for _ in range(8)]
    jobs = [str(uuid.uuid4()) for _ in range(8)]
    threads = [threading.Thread(target=invoke, args=(cfn_event(url),)) for url in urls]
    threads += [
        threading.Thread(
            target=invoke,
            args=(
                {
                    "CodePipeline.job": {
                        "id": job,
                        "data": {
                            "actionConfiguration": {"configuration": {}},
                            "inputArtifacts": [],
                            "artifactCredentials": {},
                        },
                    }
                },
            ),
        )
        for job in jobs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    answers = [recorder.answers.get("/" + url.rsplit("/", 1)[1], []) for url in urls]
    assert [len(a) for a in answers] == [1] * 8
    assert {a[0]["Status"] for a in answers} == {"SUCCESS"}
    assert sorted(params["jobId"] for _, params in results.calls) == sorted(jobs)
    assert {kind for kind, _ in results.calls} == {"success"}
    reliability(
        "8 CloudFormation and 8 CodePipeline invocations at once (threads, one process)",
        16,
        "each caller exactly one answer; all succeed; migrations applied once",
        "16 answers, 16 SUCCESS",
    )
