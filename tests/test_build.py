"""`make build` makes a complete Lambda package (python3.13, arm64) with no Docker and no Python 3.13."""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def make_ca(path: Path) -> bytes:
    """A CA of our own: the real RDS bundle cannot be downloaded here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "premigrate test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return pem


def python313() -> str | None:
    """A Python 3.13 where the Makefile looks for one (PYTHON313, PATH, pyenv), or None."""
    candidates = [os.environ.get("PYTHON313"), shutil.which("python3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")))
    for candidate in filter(None, candidates):
        probe = [candidate, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 13))"]
        if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def make_build(tmp: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    """make build into tmp/build, with a CA of our own; the editable install of premigrate is left alone."""
    make_ca(tmp / "ca.pem")
    command = [
        "make",
        "--no-print-directory",
        "build",
        f"VENV={sys.prefix}",
        f"BUILD_DIR={tmp / 'build'}",
        f"CA_BUNDLE={tmp / 'ca.pem'}",
    ]
    built = subprocess.run(
        command + list(variables), cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return built


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("build")
    return tmp, make_build(tmp)


def test_package_size_is_printed_and_far_below_lambdas_limit(built) -> None:
    _, done = built
    size = re.search(r"Lambda package: (\d+) KiB unzipped, (\d+) KiB zipped", done.stdout.strip().splitlines()[-1])
    assert size is not None, done.stdout
    print(f"\n{size.group(0)}")
    assert int(size.group(2)) < 10 * 1024  # far below Lambda's 50 MB zip limit


def test_package_holds_xray_but_not_what_the_runtime_brings(built) -> None:
    tmp, _ = built
    package = tmp / "build" / "lambda"
    assert (package / "aws_xray_sdk").is_dir() and (package / "wrapt").is_dir()  # Tracing=Active works
    # The runtime's boto3 needs the runtime's botocore; a copy in the package would shadow it.
    for provided in ("boto3", "botocore", "s3transfer", "urllib3"):
        assert not (package / provided).exists(), provided
        assert not list(package.glob(f"{provided}-*.dist-info")), provided


def test_package_ships_bytecode_for_python_313_when_one_is_found(built) -> None:
    tmp, done = built
    package = tmp / "build" / "lambda"
    sources = {p.relative_to(package) for p in package.rglob("*.py")}
    compiled = list(package.rglob("*.pyc"))
    found = python313()
    if found is None:
        assert "warning: no Python 3.13 found" in done.stderr and compiled == []
        pytest.skip("no Python 3.13 here: checked the warning and that no .pyc is shipped")
    assert f"compiling the package with {found}" in done.stdout
    assert compiled and all(p.name.endswith(".cpython-313.pyc") for p in compiled)
    # One for every source file, dependencies included.
    assert {p.parent.parent.relative_to(package) / (p.name.split(".")[0] + ".py") for p in compiled} == sources
    # Unchecked hash-based (a zip's 2-second times cannot make them look stale), named as Lambda's /var/task.
    probe = """
import importlib.util, marshal, sys
data = open(sys.argv[1], "rb").read()
flags = int.from_bytes(data[4:8], "little")
print(data[:4] == importlib.util.MAGIC_NUMBER, flags, marshal.loads(data[16:]).co_filename)
"""
    pyc = package / "premigrate" / "__pycache__" / "lambda_handler.cpython-313.pyc"
    ran = subprocess.run([found, "-c", probe, str(pyc)], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["True", "1", "/var/task/premigrate/lambda_handler.py"]


def test_without_python_313_the_build_warns_and_ships_no_bytecode(tmp_path) -> None:
    done = make_build(tmp_path, f"PYTHON313={tmp_path / 'no-such-python3.13'}")
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning: no Python 3.13 found")]
    assert warning and "cold start" in warning[0]
    assert not list((tmp_path / "build" / "lambda").rglob("*.pyc"))
    assert done.stdout.strip().splitlines()[-1].startswith("Lambda package: ")  # still the last line


def test_package_is_complete_and_runs_in_a_clean_interpreter(built, database_url, server) -> None:
    if server.name != "embedded":
        pytest.skip("one build is enough; it runs against the embedded server")
    tmp, _ = built
    package = tmp / "build" / "lambda"
    assert (package / "premigrate" / "rds-ca-bundle.pem").read_bytes() == (tmp / "ca.pem").read_bytes()
    assert sorted(p.name for p in (package / "migrations").iterdir()) == sorted(
        p.name for p in (REPO / "migrations").iterdir()
    )
    # -S -I: no site-packages, no user site, no PYTHON* variables: only the package and the standard library.
    # Under Python 3.13, Lambda's, when there is one: then the .pyc files shipped are the ones imported.
    probe = """
import json, sys
sys.path.insert(0, sys.argv[1])
from premigrate.lambda_handler import lambda_handler
from premigrate.local_invoke import LocalContext
import aws_lambda_powertools, pg8000
origins = {m.__name__: m.__file__ for m in (sys.modules["premigrate"], aws_lambda_powertools, pg8000)}
result = lambda_handler({"action": "migrate"}, LocalContext(60))
print(json.dumps({"origins": origins, "result": result}))
"""
    env = {
        "PATH": os.environ["PATH"],
        "LAMBDA_TASK_ROOT": str(package),
        "PREMIGRATE_DATABASE_URL": database_url,
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    interpreter = python313() or sys.executable
    ran = subprocess.run(
        [interpreter, "-S", "-I", "-B", "-c", probe, str(package)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    answer = json.loads(ran.stdout.strip().splitlines()[-1])
    assert all(path.startswith(str(package)) for path in answer["origins"].values()), answer["origins"]
    assert answer["result"]["ok"], answer["result"]
    assert answer["result"]["report"]["schema_version_after"] == "4"  # the bundled migrations/
