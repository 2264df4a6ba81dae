"""Lambda cold start: the handler's imports in the dev virtualenv, then the built package under Python 3.13."""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from harness import REPO, RUNS, Bench, Case, duration, run
from lambda_package import bytecode, lambda_runtime, lambda_tree, make_writable, written

from pgservers import Server

RUNS_313 = max(RUNS, 7)
PYENV_313 = "~/.pyenv/versions/3.13*/bin/python3.13"

# argv: the package, then the runtime's own modules, after it: sys.path as Lambda's runtime sets it.
IMPORT = "import sys; sys.path.insert(0, sys.argv[1]); sys.path.append(sys.argv[2]); import premigrate.lambda_handler"
INVOKE = f"""{IMPORT}
from premigrate.local_invoke import LocalContext
result = premigrate.lambda_handler.lambda_handler({{"action": "status"}}, LocalContext(60))
sys.exit(0 if result.get("ok") else str(result))
"""
# The import as in IMPORT, counting the modules Python compiles from source on the way (stale or missing .pyc).
INSPECT = f"""import json, sys
import importlib._bootstrap_external as bootstrap
compiled, source_to_code = [], bootstrap.SourceLoader.source_to_code
def counting(self, data, path, *args, **kwargs):
    compiled.append(str(path))
    return source_to_code(self, data, path, *args, **kwargs)
bootstrap.SourceLoader.source_to_code = counting
{IMPORT}
def loaded(root):
    return sorted(n for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", "") or "").startswith(root))
print(json.dumps({{"modules": len(loaded(sys.argv[1])), "runtime": loaded(sys.argv[2]),
    "compiled": sum(p.startswith(sys.argv[1]) for p in compiled), "elsewhere": len(compiled)}}))
"""


def cold_start_cases(bench: Bench, server: Server) -> None:
    table = "Handler imports in the dev virtualenv"
    heaviest: dict[str, int] = {}

    def import_time() -> float:
        done = run([sys.executable, "-X", "importtime", "-c", "import premigrate.lambda_handler"])
        rows = [line.split("|") for line in done.stderr.splitlines() if line.startswith("import time:")][1:]
        for row in rows:
            name = row[2].strip()
            if name.count(".") == 0 or name in ("premigrate.lambda_handler",):
                heaviest[name] = max(heaviest.get(name, 0), int(row[1]))
        return sum(int(row[0].split(":")[1]) for row in rows) / 1e6

    bench.measure(table, "python -X importtime: sum of the handler module's imports", import_time)
    with server.database("b") as url:
        probe = (
            "import time, sys; started = time.perf_counter(); "
            "from premigrate.local_invoke import invoke; "
            "result = invoke({'action': 'plan'}); assert result['ok'], result; "
            "print(time.perf_counter() - started, file=sys.stderr)"
        )
        env = {**os.environ, "PREMIGRATE_DATABASE_URL": url, "PREMIGRATE_MIGRATIONS": str(REPO / "migrations")}

        def first_invocation() -> float:
            done = run([sys.executable, "-c", probe], env=env)
            return float(done.stderr.strip().splitlines()[-1])

        bench.measure(
            table,
            "first invocation: import + direct `plan` on a local database",
            first_invocation,
            baseline="python -X importtime: sum of the handler module's imports",
        )
    top = sorted(((v, k) for k, v in heaviest.items() if k != "premigrate.lambda_handler"), reverse=True)[:6]
    bench.note(
        table,
        (
            f"In the dev virtualenv (Python {platform.python_version()}, its .pyc compiled by `make`), not what "
            "Lambda runs: see the next table for that. Heaviest top-level imports (cumulative): "
            + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top)
            + ". boto3 is not imported unless a secret or CodePipeline needs it; X-Ray only with tracing on."
        ),
    )


def find_python313() -> tuple[str | None, str]:
    """Python 3.13's own executable (not a pyenv shim, whose start would be timed too), or why there is none."""
    override = os.environ.get("PYTHON313")
    found = [override] if override else [shutil.which("python3.13"), *sorted(glob.glob(os.path.expanduser(PYENV_313)))]
    tried = [candidate for candidate in found if candidate]
    for candidate in tried:
        check = "import sys; print(sys.version_info[:2] == (3, 13), sys.executable)"
        try:
            done = subprocess.run(
                [candidate, "-I", "-S", "-c", check], check=False, capture_output=True, text=True, timeout=60
            )
        except OSError:
            continue
        is_313, _, executable = done.stdout.strip().partition(" ")
        if done.returncode == 0 and is_313 == "True":
            return executable, candidate
    return None, f"no working Python 3.13 (tried {', '.join(tried) or 'python3.13 on PATH'}; set PYTHON313=...)"


def child_usage(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds (user + system, from the child's own rusage) and wall seconds of one fresh process."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            raise RuntimeError(f"{command} exited with {child.returncode}: {errors.read().decode()[-3000:]}")
    return usage.ru_utime + usage.ru_stime, wall


def built_package_cases(bench: Bench, server: Server, package: Path, work: Path) -> None:
    table = "Lambda cold start from the built package (Python 3.13)"
    python, found = find_python313()
    if python is None:
        print(f"  skipped {table}: {found}", flush=True)
        bench.note(table, f"Skipped: {found}.")
        return
    trees = {"b": lambda_tree(package, work / "shipped", pycache=True)}
    trees["c"] = lambda_tree(package, work / "no-pycache", pycache=False)
    runtime = lambda_runtime(work / "runtime")
    try:
        with server.database("b") as url:
            env = {
                "PATH": os.environ["PATH"],
                "LAMBDA_TASK_ROOT": str(trees["b"]),
                "AWS_DEFAULT_REGION": "eu-west-1",
                "POWERTOOLS_SERVICE_NAME": "premigrate",
                "POWERTOOLS_METRICS_NAMESPACE": "Premigrate",
                "PREMIGRATE_DATABASE_URL": url,
            }
            start = [python, "-I", "-S", "-B", "-c"]
            commands = {key: [*start, IMPORT, str(tree), str(runtime)] for key, tree in trees.items()}
            commands = {"a": [*start, "pass"], **commands, "d": [*start, INVOKE, str(trees["b"]), str(runtime)]}
            try:
                run(commands["d"], env=env)
            except subprocess.CalledProcessError as error:
                bench.note(table, f"(d) skipped: the first invocation failed: {error.stderr.strip()[-500:]}")
                del commands["d"]
            cases = measure_313(table, commands, env)
            seen = {key: imports_seen(python, tree, runtime, env) for key, tree in trees.items()}
        bench.add(cases)
        notes_313(bench, table, python, trees, seen)
        cost_note(bench, table, shipped_pyc=bool(bytecode(trees["b"])))
        bench.note(table, f"Files the runs wrote into the read-only package: {sum(map(written, trees.values()))}.")
    finally:
        for tree in trees.values():
            make_writable(tree)


CASE_NAMES = {
    "a": ("(a) `python3.13 -I -S -B -c pass` (interpreter start)", None),
    "b": ("(b) import the handler, package as shipped", "a"),
    "c": ("(c) import the handler, every `__pycache__` removed (ratio to b)", "b"),
    "d": ("(d) first invocation: import + direct `status`, as shipped (ratio to b)", "b"),
}


def measure_313(table: str, commands: dict[str, list[str]], env: dict[str, str]) -> list[Case]:
    """Each command in fresh processes, round-robin; CPU and wall time as cases of their own."""
    cases: dict[tuple[str, str], Case] = {}
    for kind in ("CPU", "wall"):
        for key in commands:
            name, baseline = CASE_NAMES[key]
            cases[key, kind] = Case(
                table, f"{name}: {kind}", baseline=baseline and f"{CASE_NAMES[baseline][0]}: {kind}"
            )
    for _ in range(RUNS_313):
        for key, command in commands.items():
            cpu, wall = child_usage(command, env)
            cases[key, "CPU"].seconds.append(cpu)
            cases[key, "wall"].seconds.append(wall)
    return list(cases.values())


class Seen(TypedDict):
    modules: int
    """Modules loaded from the package."""
    compiled: int
    """Of those, the ones compiled from source."""
    elsewhere: int
    """Modules compiled from source outside the package (the standard library's, the runtime's)."""
    runtime: list[str]
    """Modules loaded from the runtime's stand-ins (boto3 and its kin)."""


def imports_seen(python: str, tree: Path, runtime: Path, env: dict[str, str]) -> Seen:
    done = run([python, "-I", "-S", "-B", "-c", INSPECT, str(tree), str(runtime)], env=env)
    seen: Seen = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def notes_313(bench: Bench, table: str, python: str, trees: dict[str, Path], seen: dict[str, Seen]) -> None:
    version = run([python, "-c", "import platform; print(platform.python_version())"]).stdout.strip()
    bench.note(
        table,
        (
            f"The package `make build` made, run by {python} (Python {version}) with `-I -S -B`: no site-packages "
            "and no PYTHON* variables (so nothing from the dev virtualenv), the package first on sys.path as in "
            "Lambda's runtime. Its files are dated 1980-01-01, as Lambda unpacks the zip `sam deploy` uploads, and "
            "read-only, as /var/task is; `-B` because this bench runs as root, whom a read-only mode does not stop. "
            f"{RUNS_313} fresh processes per case, round-robin. CPU is the child's user + system time (os.wait4)."
        ),
    )
    kinds = bytecode(trees["b"])
    sources = sum(1 for _ in trees["c"].rglob("*.py"))
    b, c = seen["b"], seen["c"]
    if kinds:
        shipped = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        text = f"The package ships {kinds.total()} cpython-313 .pyc ({shipped}) for {sources} .py files."
    else:
        text = f"The package ships no .pyc for Python 3.13 ({sources} .py files): (b) compiles every module it "
        text += "imports at each start, as (c) does, so (c)/(b) is about 1."
    text += (
        f" Importing the handler loads {b['modules']} modules from the package; it compiled {b['compiled']} of the "
        f"package's source files on the way as shipped, {c['compiled']} without `__pycache__` (and "
        f"{b['elsewhere'] - b['compiled']} outside the package)."
    )
    if kinds and b["compiled"]:
        text += " Shipped .pyc that do not load are stale: timestamp .pyc cannot survive the zip's 1980 dates."
    bench.note(table, text)
    bench.note(
        table,
        (
            "boto3 and botocore are in Lambda's runtime, not in the package: here the bench's own pure-Python copies "
            "stand in, on sys.path after the package. The handler import loaded from them: "
            + (", ".join(b["runtime"]) or "nothing")
            + "."
        ),
    )


def cost_note(bench: Bench, table: str, *, shipped_pyc: bool) -> None:
    """What compiling at every start costs, from the medians of (a), (b) and (c); and the import's target."""
    median = {
        (key, kind): bench.find(table, f"{name}: {kind}").median
        for key, (name, _) in CASE_NAMES.items()
        for kind in ("CPU", "wall")
        if key in "abc"
    }
    cpu = {key: median[key, "CPU"] for key in "abc"}
    if shipped_pyc:
        text = (
            f"Compiling at every cold start would cost {duration(cpu['c'] - cpu['b'])} of CPU and "
            f"{duration(median['c', 'wall'] - median['b', 'wall'])} of wall time: the shipped .pyc save that."
        )
    else:
        text = "Nothing tells (b) from (c) until the package ships .pyc for Python 3.13."
    imported = median["b", "wall"] - median["a", "wall"]
    text += (
        f" Target: the handler's import under 250 ms: {duration(imported)} of wall time over the interpreter's "
        f"start, as shipped: {'met' if imported <= 0.250 else 'missed'}."
    )
    bench.note(table, text)
