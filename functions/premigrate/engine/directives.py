"""Directives: lines in a migration file's header (the comment lines before its first statement) that
tell premigrate how to run it.

    -- premigrate:no-transaction        run statement by statement, each committed on its own
    -- premigrate:after-rollout         run only once the rollout is over (the old code is gone)
    -- premigrate:allow <rule>: <why>   acknowledge a finding of ``premigrate check`` (still reported)
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

NO_TRANSACTION = "no-transaction"
AFTER_ROLLOUT = "after-rollout"
ALLOW = "allow"
KNOWN = (NO_TRANSACTION, AFTER_ROLLOUT, ALLOW)

_DIRECTIVE = re.compile(r"--\s*premigrate:\s*(?P<name>\S*)\s*(?P<argument>.*)")
_ALLOWANCE = re.compile(r"(?P<rule>[a-z0-9-]+)\s*:\s*(?P<reason>\S.*)")


class Phase(enum.StrEnum):
    """When a migration runs relative to the rollout of the application code that needs it."""

    BEFORE_ROLLOUT = "before-rollout"
    """Expand: everything the new code needs, safe for the old code still running."""
    AFTER_ROLLOUT = "after-rollout"
    """Contract: what only the old code needed goes, once no instance runs it."""


RUN_PHASES = ("all", Phase.BEFORE_ROLLOUT.value, Phase.AFTER_ROLLOUT.value)
"""What one run applies: every pending migration in version order, or only one phase's."""


@dataclass(frozen=True)
class Directive:
    name: str
    argument: str
    line: int


@dataclass(frozen=True)
class Allowance:
    """``-- premigrate:allow <rule>: <reason>``: a finding the file's author accepts, and why."""

    rule: str
    reason: str
    line: int


def header_directives(text: str) -> list[Directive]:
    """The directives among the file's leading comment and blank lines."""
    found = []
    for number, line in enumerate(re.split(r"\r\n?|\n", text), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        if match := _DIRECTIVE.match(stripped):
            found.append(Directive(match.group("name"), match.group("argument").strip(), number))
    return found


def directive_problems(script: str, directives: list[Directive]) -> list[str]:
    problems = []
    for directive in directives:
        if directive.name not in KNOWN:
            known = ", ".join(f"'-- premigrate:{name}'" for name in KNOWN)
            where = f"{script}:{directive.line}"
            problems.append(f"{where}: unknown directive 'premigrate:{directive.name}'; the directives are {known}")
        elif directive.name == ALLOW and not _ALLOWANCE.fullmatch(directive.argument):
            problems.append(
                f"{script}:{directive.line}: write '-- premigrate:allow <rule>: <reason>', like "
                "'-- premigrate:allow table-rewrite: orders has 200 rows'; the reason is what reviewers read"
            )
        elif directive.name != ALLOW and directive.argument:
            problems.append(f"{script}:{directive.line}: '-- premigrate:{directive.name}' takes nothing after it")
    return problems


def allowances(directives: list[Directive]) -> list[Allowance]:
    found = []
    for directive in directives:
        if directive.name == ALLOW and (match := _ALLOWANCE.fullmatch(directive.argument)):
            found.append(Allowance(match.group("rule"), match.group("reason").strip(), directive.line))
    return found
