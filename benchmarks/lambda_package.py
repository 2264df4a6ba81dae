"""`make build` as the user runs it, and its package as Lambda gets it: unzipped into a read-only folder."""

from __future__ import annotations

import collections
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from harness import REPO, Bench, run

from test_build import make_ca

SAM_ZIP_TIME = time.mktime((1980, 1, 1, 0, 0, 0, 0, 0, -1))
"""`sam deploy` zips CodeUri's folder with entries that carry no date: Lambda unpacks every file as 1980-01-01."""

LAMBDA_RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
"""What Lambda's python3.13 runtime has on sys.path after the function's code."""


def package_cases(bench: Bench, work: Path) -> Path:
    """Builds the package with `make build`, notes its size, returns its folder (what CodeUri points at)."""
    table = "Lambda package (make build)"
    make_ca(work / "ca.pem")
    out = work / "build"
    done = run(["make", "build", f"VENV={sys.prefix}", f"BUILD_DIR={out}", f"CA_BUNDLE={work / 'ca.pem'}"], cwd=REPO)
    keep_editable_install()
    unzipped = sum(p.stat().st_size for p in (out / "lambda").rglob("*") if p.is_file())
    zipped = (out / "premigrate-lambda.zip").stat().st_size
    # Its last word, not make's own "Leaving directory" when `make bench` runs it.
    said = [line for line in done.stdout.splitlines() if line.startswith("Lambda package:")]
    bench.note(
        table,
        (
            f"{zipped / 1e6:.2f} MB zipped, {unzipped / 1e6:.2f} MB unzipped (the RDS CA bundle, about 0.16 MB, "
            "not included here: it cannot be downloaded on this machine, a throwaway CA stands in). Lambda allows "
            f"50 MB zipped, 250 MB unzipped. make build said: {(said or done.stdout.strip().splitlines())[-1]}"
        ),
    )
    return out / "lambda"


def keep_editable_install() -> None:
    """`make build VENV=...` may re-install premigrate into the venv: point it back at this checkout."""
    probe = [sys.executable, "-c", "import premigrate; print(premigrate.__file__)"]
    where = run(probe, cwd=tempfile.gettempdir()).stdout.strip()
    if not where.startswith(str(REPO / "functions")):
        print(f"  make build left premigrate at {where}: re-installing it editable from {REPO}", flush=True)
        run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "."], cwd=REPO)


def lambda_tree(built: Path, dest: Path, *, pycache: bool) -> Path:
    """A copy of the package as Lambda's /var/task holds it: files dated as in SAM's zip, read-only.

    Without ``pycache``, every __pycache__ is left out: each start must compile, and cannot keep the result."""
    shutil.copytree(built, dest, symlinks=True, ignore=None if pycache else shutil.ignore_patterns("__pycache__"))
    # Children before their parents, so that a folder is closed only once its content is done.
    for path in [*sorted(dest.rglob("*"), reverse=True), dest]:
        if path.is_symlink():
            continue
        os.utime(path, (SAM_ZIP_TIME, SAM_ZIP_TIME))
        path.chmod(0o555 if path.is_dir() else 0o444)
    return dest


def make_writable(tree: Path) -> None:
    """So that the work folder can be removed afterwards (by anyone but root, too)."""
    if not tree.exists():
        return
    tree.chmod(0o755)
    for path in tree.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def lambda_runtime(dest: Path) -> Path:
    """Stand-ins for the modules Lambda's runtime puts after the function's code (boto3 and its kin): links to
    the bench's own pure-Python copies."""
    dest.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for name in LAMBDA_RUNTIME_MODULES:
        if (purelib / name).exists():
            (dest / name).symlink_to(purelib / name)
    return dest


def bytecode(tree: Path) -> collections.Counter[str]:
    """The cpython-313 .pyc files in a tree, by how Python checks them against their source (PEP 552)."""
    kinds: collections.Counter[str] = collections.Counter()
    for pyc in tree.rglob("*.cpython-313.pyc"):
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        kinds[("unchecked-hash", "checked-hash")[flags >> 1 & 1] if flags & 1 else "timestamp"] += 1
    return kinds


def written(tree: Path) -> int:
    """Files dated after the copy was made: what a run wrote into the read-only package."""
    return sum(1 for p in tree.rglob("*") if p.is_file() and p.stat().st_mtime > SAM_ZIP_TIME + 1)
