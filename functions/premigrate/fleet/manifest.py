"""The fleet's targets: one JSON object per line (JSON Lines), checked whole before any database is touched.

    {"name": "tenant-a", "secret_id": "prod/tenants/a", "wave": 0}
    {"name": "tenant-b", "secret_id": "prod/tenants/b", "server": "db-1"}
    {"name": "local", "database_url": "postgresql://app@127.0.0.1/app"}

``wave`` 0 is the canary (no failure tolerated), the default wave is 1; databases that share a server name
share its ``--per-server`` limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from premigrate.engine import ConfigurationError

_KEYS = ("name", "secret_id", "database_url", "wave", "server")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_TARGETS = 10_000


class ManifestError(ConfigurationError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "\n".join(f"  - {problem}" for problem in problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"the targets manifest cannot be used (no database was touched):\n{shown}{more}")


@dataclass(frozen=True)
class Target:
    name: str
    secret_id: str | None = None
    database_url: str | None = None
    wave: int = 1
    server: str | None = None
    line: int = 0

    @property
    def server_key(self) -> str:
        """What the per-server limit counts by: the named server, else the database alone."""
        return self.server or f"database:{self.name}"

    def to_dict(self) -> dict[str, object]:
        """As a Step Functions item: never the URL (a credential in the execution's history)."""
        return {"name": self.name, "secret_id": self.secret_id, "wave": self.wave, "server": self.server_key}


def parse_manifest(text: str, *, allow_urls: bool = True) -> list[Target]:
    """Every target, or ManifestError naming each bad line. ``allow_urls``: False where a URL (with its
    password) must not be accepted, as in a manifest the Lambda function reads."""
    problems: list[str] = []
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        target, line_problems = _target(line, number, allow_urls)
        problems += line_problems
        if target is None:
            continue
        if target.name in seen:
            problems.append(f"line {number}: name {target.name!r} is already used on line {seen[target.name]}")
        seen.setdefault(target.name, number)
        targets.append(target)
    if not targets and not problems:
        problems.append('no targets: write one JSON object per line, like {"name": "a", "secret_id": "..."}')
    if len(targets) > MAX_TARGETS:
        problems.append(f"{len(targets)} targets: at most {MAX_TARGETS} in one manifest")
    if problems:
        raise ManifestError(problems)
    return targets


def _target(line: str, number: int, allow_urls: bool) -> tuple[Target | None, list[str]]:
    where = f"line {number}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        return None, [f"{where}: not JSON ({error.msg} at character {error.pos + 1})"]
    if not isinstance(item, dict):
        return None, [f'{where}: a target is a JSON object, like {{"name": "a", "secret_id": "..."}}']
    problems = [f"{where}: unknown key {key!r}; the keys are {', '.join(_KEYS)}" for key in item if key not in _KEYS]
    name, secret_id, url = item.get("name"), item.get("secret_id"), item.get("database_url")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problems.append(f"{where}: name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if (secret_id is None) == (url is None):
        problems.append(f"{where}: give the database's secret_id (or, for local runs, database_url), one of them")
    elif url is not None and not allow_urls:
        problems.append(f"{where}: database_url is for local runs only; give the database's secret_id")
    for key, value in (("secret_id", secret_id), ("database_url", url), ("server", item.get("server"))):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{where}: {key} must be non-empty text")
    wave = item.get("wave", 1)
    if isinstance(wave, bool) or not isinstance(wave, int) or not 0 <= wave <= 99:
        problems.append(f"{where}: wave must be a whole number from 0 (the canary) to 99")
    if problems:
        return None, problems
    return Target(str(name), secret_id, url, int(wave), item.get("server"), number), []
