"""`make build` makes a complete Lambda package (python3.13, arm64) with no Docker and no Python 3.13."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from premigrate.adapters.folder import load_folder

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


def test_package_is_complete_and_runs_in_a_clean_interpreter(tmp_path, database_url, server) -> None:
    if server.name != "embedded":
        pytest.skip("one build is enough; it runs against the embedded server")
    ca = make_ca(tmp_path / "ca.pem")
    build_dir = tmp_path / "build"
    built = subprocess.run(
        ["make", "build", f"VENV={sys.prefix}", f"BUILD_DIR={build_dir}", f"CA_BUNDLE={tmp_path / 'ca.pem'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    size = re.search(r"Lambda package: (\d+) KiB unzipped, (\d+) KiB zipped", built.stdout)
    assert size is not None, built.stdout
    print(f"\n{size.group(0)}")
    assert int(size.group(2)) < 10 * 1024  # far below Lambda's 50 MB zip limit

    package = build_dir / "lambda"
    assert (package / "premigrate" / "rds-ca-bundle.pem").read_bytes() == ca
    assert sorted(p.name for p in (package / "migrations").iterdir()) == sorted(
        p.name for p in (REPO / "migrations").iterdir()
    )
    fingerprint = load_folder(REPO / "migrations").fingerprint
    assert f"Default: {fingerprint}" in (build_dir / "template.yaml").read_text()
    assert "CodeUri: lambda/" in (build_dir / "template.yaml").read_text()

    # -S -I: no site-packages, no user site, no PYTHON* variables: only the package and the standard library.
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
    ran = subprocess.run(
        [sys.executable, "-S", "-I", "-c", probe, str(package)],
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
