"""sam build on a clean clone, the fingerprint that template.yaml carries, and make deploy's two modes.

Each test works in a copy of the repository as a clone of it would be (the files git tracks or would,
as they are now), so nothing here touches the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from premigrate.adapters.folder import load_folder
from test_build import make_ca

REPO = Path(__file__).resolve().parent.parent
SAM = REPO / ".venv-sam" / "bin" / "sam"
MISMATCH = "template.yaml says 532c928349232c3a but migrations/ is "


def clone(destination: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "SAM_CLI_TELEMETRY": "0", **env}
    return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=300, check=False)


def add_migration(repo: Path) -> str:
    (repo / "migrations" / "V5__add_orders.sql").write_text("CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    return load_folder(repo / "migrations").fingerprint


def test_the_committed_template_carries_the_fingerprint_of_migrations() -> None:
    done = run(["make", "--no-print-directory", "check-fingerprint"], REPO)
    assert done.returncode == 0, done.stderr
    template = yaml_parse((REPO / "template.yaml").read_text())
    hash_in_template = template["Resources"]["DatabaseMigration"]["Properties"]["MigrationSetHash"]
    assert hash_in_template == load_folder(REPO / "migrations").fingerprint
    premigrate = [str(Path(sys.prefix) / "bin" / "premigrate"), "fingerprint"]
    environ = {**os.environ, "PREMIGRATE_MIGRATIONS": "migrations"}
    cli = subprocess.run(premigrate, cwd=REPO, env=environ, capture_output=True, text=True, check=True)
    assert cli.stdout.strip() == hash_in_template  # what `premigrate fingerprint` prints


@pytest.mark.slow
def test_build_refuses_a_stale_fingerprint_until_make_fingerprint(tmp_path) -> None:
    repo = clone(tmp_path / "repo")
    fingerprint = add_migration(repo)
    make_ca(tmp_path / "ca.pem")
    build = ["make", "build", f"BUILD_DIR={tmp_path / 'build'}", f"CA_BUNDLE={tmp_path / 'ca.pem'}"]
    refused = run(build, repo)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[0] == f"{MISMATCH}{fingerprint}: run make fingerprint"
    assert not (tmp_path / "build").exists() and not (repo / ".venv").exists()  # refused before anything

    rewritten = run(["make", "--no-print-directory", "fingerprint"], repo)
    assert rewritten.returncode == 0, rewritten.stderr
    assert rewritten.stdout.strip() == f"template.yaml: MigrationSetHash {fingerprint}"
    template = (repo / "template.yaml").read_text()
    assert f'MigrationSetHash: "{fingerprint}"  # premigrate:fingerprint' in template
    assert template.replace(fingerprint, "532c928349232c3a") == (REPO / "template.yaml").read_text()  # only that
    assert run(["make", "check-fingerprint"], repo).returncode == 0


def test_a_broken_migrations_folder_is_a_message_not_a_traceback(tmp_path) -> None:
    repo = clone(tmp_path / "repo")
    (repo / "migrations" / "add orders.sql").write_text("SELECT 1;\n")
    for target in ("check-fingerprint", "fingerprint"):
        done = run(["make", "--no-print-directory", target], repo)
        assert done.returncode == 2
        assert done.stderr.startswith("migrations/ has no fingerprint: ") and "Traceback" not in done.stderr
        assert "add orders.sql" in done.stderr
    assert (repo / "template.yaml").read_text() == (REPO / "template.yaml").read_text()


@pytest.mark.slow
def test_sam_build_on_a_clean_clone_builds_the_package(tmp_path) -> None:
    if not SAM.exists():
        pytest.skip("no AWS SAM CLI: make lint installs it into .venv-sam")
    repo = clone(tmp_path / "repo")
    ca = make_ca(tmp_path / "ca.pem")
    built = run([str(SAM), "build"], repo, CA_BUNDLE=str(tmp_path / "ca.pem"))
    assert built.returncode == 0, built.stdout + built.stderr
    package = repo / ".aws-sam" / "build" / "MigrationFunction"
    assert (package / "premigrate" / "lambda_handler.py").is_file()
    assert (package / "premigrate" / "rds-ca-bundle.pem").read_bytes() == ca
    assert (package / "pg8000").is_dir() and (package / "aws_lambda_powertools").is_dir()
    assert load_folder(package / "migrations").fingerprint == load_folder(REPO / "migrations").fingerprint
    assert not (package / "botocore").exists()
    function = yaml_parse((repo / ".aws-sam" / "build" / "template.yaml").read_text())["Resources"]["MigrationFunction"]
    assert function["Properties"]["CodeUri"] == "MigrationFunction"  # what sam deploy uploads

    fingerprint = add_migration(repo)
    refused = run([str(SAM), "build"], repo, CA_BUNDLE=str(tmp_path / "ca.pem"))
    assert refused.returncode != 0
    assert f"{MISMATCH}{fingerprint}: run make fingerprint" in refused.stdout + refused.stderr


def fake_sam(tmp_path: Path) -> tuple[Path, Path]:
    """A SAM venv whose sam logs its arguments: make deploy's choices, with no AWS."""
    venv, log = tmp_path / "sam-venv", tmp_path / "sam.log"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "sam").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (venv / "bin" / "sam").chmod(0o755)
    (venv / ".installed").touch()
    return venv, log


SAVED = """[default.deploy.parameters]
stack_name = "premigrate"
region = "eu-west-1"
parameter_overrides = "DatabaseSecretArn=\\"arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbC123\\""
"""


def deploy(repo: Path, venv: Path, terminal: bool, *variables: str) -> subprocess.CompletedProcess[str]:
    # premigrate from this test's own virtualenv; the check uses an embedded database inside the copy.
    command = ["make", "--no-print-directory", "deploy", f"SAM_VENV={venv}", f"VENV={sys.prefix}", *variables]
    if not terminal:
        return subprocess.run(
            command, cwd=repo, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
        )
    controller, terminal_end = os.openpty()
    try:
        return subprocess.run(
            command, cwd=repo, stdin=terminal_end, capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        os.close(controller)
        os.close(terminal_end)


def test_make_deploy_asks_only_the_first_time(tmp_path) -> None:
    repo = clone(tmp_path / "repo")
    venv, log = fake_sam(tmp_path)
    first = deploy(repo, venv, terminal=True)
    assert first.returncode == 0, first.stderr
    assert log.read_text().splitlines() == ["build --config-env default", "deploy --config-env default --guided"]

    log.unlink()
    config = repo / "samconfig.toml"  # what the first, guided, deploy saves
    config.write_text(config.read_text().replace("[default.deploy.parameters]\n", SAVED))
    for terminal in (True, False):  # CI has no terminal and needs none now
        later = deploy(repo, venv, terminal)
        assert later.returncode == 0, later.stderr
    assert log.read_text().splitlines() == ["build --config-env default", "deploy --config-env default"] * 2

    log.unlink()
    again = deploy(repo, venv, True, "GUIDED=1")
    assert again.returncode == 0, again.stderr
    assert log.read_text().splitlines()[-1] == "deploy --config-env default --guided"


def test_make_deploy_without_a_saved_deployment_or_a_terminal_refuses(tmp_path) -> None:
    repo = clone(tmp_path / "repo")
    venv, log = fake_sam(tmp_path)
    refused = deploy(repo, venv, terminal=False)
    assert refused.returncode == 2
    assert "samconfig.toml has no saved deployment for 'default'" in refused.stderr
    assert not log.exists()  # no sam was run, none waits for an answer that cannot come

    (repo / "samconfig.toml").write_text("version = [")
    broken = deploy(repo, venv, terminal=True)
    assert broken.returncode == 2 and broken.stderr.startswith("samconfig.toml cannot be read: ")
    assert not log.exists()


def test_make_deploy_refuses_an_unsafe_migration_before_sam(tmp_path) -> None:
    repo = clone(tmp_path / "repo")
    venv, log = fake_sam(tmp_path)
    # The embedded database has the committed migrations (make run): V5 is what this deploy brings.
    premigrate = str(Path(sys.prefix) / "bin" / "premigrate")
    assert run([premigrate, "up", "--migrations", "migrations"], repo).returncode == 0
    (repo / "migrations" / "V5__drop_login.sql").write_text("ALTER TABLE users DROP COLUMN last_login_at;\n")
    assert run(["make", "--no-print-directory", "fingerprint"], repo).returncode == 0
    refused = deploy(repo, venv, terminal=True)
    assert refused.returncode == 2  # make's own code for a failed recipe: premigrate check exited 4
    assert "V5__drop_login.sql:1  error  drop-column" in refused.stdout
    assert "check-migrations] Error 4" in refused.stderr  # exit 4: an error-level finding stands
    assert not log.exists()  # nothing was built or deployed


def test_make_deploy_refuses_a_stale_fingerprint_before_sam(tmp_path) -> None:
    repo = clone(tmp_path / "repo")
    venv, log = fake_sam(tmp_path)
    fingerprint = add_migration(repo)
    refused = deploy(repo, venv, terminal=True)
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[0] == f"{MISMATCH}{fingerprint}: run make fingerprint"
    assert not log.exists()
