"""One service behind every front door: the same settings, and the same error gets the same category and
exit code, whether it comes through the command line, a direct invoke, CodePipeline or CloudFormation."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from premigrate.adapters.connection import params_from_url
from premigrate.cli import build_parser, main
from premigrate.engine import ConfigurationError
from premigrate.local_invoke import invoke
from premigrate.service import EXIT_CODES, SPECS, Category, Config, load_config

# A value for every setting, as text (an option or environment variable) and as the value it must become.
SAMPLES: dict[str, tuple[str, object]] = {
    "database_url": ("postgresql://app@db.example.com/app", "postgresql://app@db.example.com/app"),
    "secret_id": ("prod/app/db", "prod/app/db"),
    "sslmode": ("verify-ca", "verify-ca"),
    "ca_bundle": ("/etc/ssl/rds.pem", "/etc/ssl/rds.pem"),
    "iam_auth": ("yes", True),
    "migrations": ("db/migrations", "db/migrations"),
    "schema": ("meta", "meta"),
    "lock_wait_seconds": ("2min", 120.0),
    "lock_timeout_seconds": ("500ms", 0.5),
    "statement_timeout_seconds": ("30s", 30.0),
    "target": ("1.2.10", "1.2.10"),
    "phase": ("after-rollout", "after-rollout"),
    "all_or_nothing": ("yes", True),
    "allow_out_of_order": ("on", True),
    "accept_database_ahead": ("true", True),
    "time_margin_seconds": ("45", 45.0),
    "tracing": ("1", True),
    "embedded_dir": ("/tmp/pg", "/tmp/pg"),
}


def test_every_setting_has_a_sample_here() -> None:
    assert set(SAMPLES) == set(SPECS) == {f.name for f in fields(Config)}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_setting_works_from_every_front_door_that_uses_it(name: str) -> None:
    text, expected = SAMPLES[name]
    spec = SPECS[name]
    command = ["plan", spec.option] if spec.kind.is_flag else ["plan", spec.option, text]
    args = build_parser().parse_args(command)
    from_option = load_config("cli", {}, {n: getattr(args, n) for n in SPECS})
    assert getattr(from_option, name) == expected
    assert getattr(load_config("cli", {spec.env: text}), name) == expected
    if "lambda" in spec.front_doors:
        assert getattr(load_config("lambda", {spec.env: text}), name) == expected
    else:
        with pytest.raises(ConfigurationError, match=f"{spec.env} is a setting of the command line; the Lambda"):
            load_config("lambda", {spec.env: text})


def test_an_option_wins_over_the_environment_which_wins_over_the_default() -> None:
    environ = {"PREMIGRATE_LOCK_WAIT": "10s"}
    assert load_config("cli", {}).lock_wait_seconds == 300.0
    assert load_config("cli", environ).lock_wait_seconds == 10.0
    assert load_config("cli", environ, {"lock_wait_seconds": "20s"}).lock_wait_seconds == 20.0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_yes_no_values_read_one_way_everywhere(text: str, value: bool) -> None:
    for front_door in ("cli", "lambda"):
        config = load_config(front_door, {"PREMIGRATE_OUT_OF_ORDER": text, "PREMIGRATE_IAM_AUTH": text})
        assert (config.allow_out_of_order, config.iam_auth) == (value, value)


@pytest.mark.parametrize("front_door", ["cli", "lambda"])
def test_a_bad_value_is_refused_naming_where_it_came_from(front_door: str) -> None:
    with pytest.raises(ConfigurationError, match=r"PREMIGRATE_OUT_OF_ORDER: 'maybe' is not yes or no; write one of 1"):
        load_config(front_door, {"PREMIGRATE_OUT_OF_ORDER": "maybe"})
    with pytest.raises(ConfigurationError, match=r"PREMIGRATE_SSLMODE: 'verify' is not an sslmode; use one of disable"):
        load_config(front_door, {"PREMIGRATE_SSLMODE": "verify"})


def test_the_engine_gets_every_engine_setting_as_configured() -> None:
    environ = {SPECS[name].env: SAMPLES[name][0] for name in SAMPLES if name != "embedded_dir"}
    settings = load_config("lambda", environ).engine_settings()
    for name in ("schema", "lock_wait_seconds", "lock_timeout_seconds", "statement_timeout_seconds", "target"):
        assert getattr(settings, name) == SAMPLES[name][1]
    assert (settings.allow_out_of_order, settings.accept_database_ahead, settings.time_margin_seconds) == (
        True,
        True,
        45.0,
    )


def test_premigrate_invoke_hands_the_function_the_same_config() -> None:
    environ = {SPECS[name].env: SAMPLES[name][0] for name in SAMPLES if name != "embedded_dir"}
    config = load_config("cli", environ)
    assert load_config("lambda", config.to_environ()) == config


# ---- the same error, the same category and exit code ------------------------------------------


def cli(capsys, *args: str) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def direct(monkeypatch, database_url: str, folder: Path, **event) -> dict:
    monkeypatch.setenv("PREMIGRATE_DATABASE_URL", database_url)
    monkeypatch.setenv("PREMIGRATE_MIGRATIONS", str(folder))
    return invoke({"action": "migrate", **event})


SCENARIOS = {
    # name: (files, expected category)
    "a badly named file": (
        {"V1__users.sql": "CREATE TABLE users ();", "V2_missing_underscore.sql": "SELECT 1;"},
        Category.VALIDATION,
    ),
    "a failing statement": ({"V1__bad.sql": "CREATE TABLE t (id int);\nSELEC 1;"}, Category.MIGRATION),
    "a read-only database": ({"V1__users.sql": "CREATE TABLE users ();"}, Category.CONFIGURATION),
    "a schema premigrate may not write": ({"V1__users.sql": "CREATE TABLE users ();"}, Category.DATABASE),
    "a target that is no version": ({"V1__users.sql": "CREATE TABLE users ();"}, Category.CONFIGURATION),
    "an unreachable database": ({"V1__users.sql": "CREATE TABLE users ();"}, Category.CONFIGURATION),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_same_error_is_the_same_category_and_exit_code_from_every_front_door(
    scenario, capsys, monkeypatch, database_url, db, write_migrations
) -> None:
    files, category = SCENARIOS[scenario]
    folder = write_migrations(files)
    options: dict[str, str] = {}
    if scenario == "a read-only database":  # a read-only endpoint refuses premigrate's own history table
        db.run(f'ALTER DATABASE "{params_from_url(database_url).database}" SET default_transaction_read_only = on')
    if scenario == "a target that is no version":
        options = {"target": "latest"}
    if scenario == "a schema premigrate may not write":  # even a superuser may not create tables there
        options = {"schema": "pg_toast"}
    if scenario == "an unreachable database":
        database_url = "postgresql://app@127.0.0.1:1/app?sslmode=disable"
    cli_options = [text for name, value in options.items() for text in (SPECS[name].option, value)]
    code, body = cli(capsys, "up", "--database-url", database_url, "--migrations", str(folder), *cli_options)
    if "schema" in options:
        monkeypatch.setenv("PREMIGRATE_SCHEMA", options.pop("schema"))
    answer = direct(monkeypatch, database_url, folder, **options)
    assert (body["error_kind"], code) == (category, EXIT_CODES[category])
    assert (answer["ok"], answer["error_kind"]) == (False, category)
    if scenario == "a schema premigrate may not write":  # the Lambda's run ledger is refused first
        assert answer["error"].startswith("the database refused an operation premigrate needs: ERROR 42501")
        assert body["error"].startswith("the database refused an operation premigrate needs: ERROR 42501")
    else:  # the same message, bar the source of a bad value
        assert answer["error"].split(": ", 1)[-1] == body["error"].split(": ", 1)[-1]


def test_the_readme_lists_every_setting_by_its_option_and_variable() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for spec in SPECS.values():
        assert f"| `{spec.option}" in readme and f"| `{spec.env}` |" in readme, spec.env
