"""The migration set: Flyway-named SQL files, their versions, checksums and how each must run.

    >>> migration_set = MigrationSet.from_files([("V1__create_users.sql", b"CREATE TABLE users (id int);")])
    >>> migration_set.versioned[0].version.text, migration_set.versioned[0].mode
    ('1', <ExecutionMode.TRANSACTION: 'transaction'>)

``V<version>__<description>.sql`` files apply once, in numeric version order (1.2.10 after 1.2.9);
``R__<description>.sql`` files re-apply after them whenever their checksum changes.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from premigrate.engine.directives import (
    AFTER_ROLLOUT,
    NO_TRANSACTION,
    Allowance,
    Directive,
    Phase,
    directive_problems,
    header_directives,
)
from premigrate.engine.directives import allowances as allowances_in
from premigrate.engine.errors import MigrationSetError, ScriptSyntaxError
from premigrate.engine.statement_kinds import Statement
from premigrate.engine.statements import first_content, line_and_column, split_statements

_VERSIONED_NAME = re.compile(r"V(?P<version>[^_]+(?:_(?!_)[^_]+)*)__(?P<description>.+)\.sql", re.IGNORECASE)
_REPEATABLE_NAME = re.compile(r"R__(?P<description>.+)\.sql", re.IGNORECASE)
_VERSION_TEXT = re.compile(r"\d+(?:[._]\d+)*")
_ADDED_ENUM_LABEL = re.compile(r"\bADD\s+VALUE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<label>'(?:[^']|'')*')", re.IGNORECASE)
NO_TRANSACTION_DIRECTIVE = NO_TRANSACTION


class ExecutionMode(enum.StrEnum):
    TRANSACTION = "transaction"
    """In one transaction with its history row: all or nothing."""
    NO_TRANSACTION = "no-transaction"
    """Statement by statement, each committed on its own; history row written after."""
    OWN_TRANSACTION = "own-transaction"
    """The file has its own BEGIN/COMMIT: run statement by statement as psql would; history row after."""


@dataclass(frozen=True, order=True)
class Version:
    """A numeric version; ``1.0`` and ``1`` are the same version, ``1.2.10`` sorts after ``1.2.9``."""

    key: tuple[int, ...]
    text: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        """Raises ValueError for anything but digits separated by dots (or underscores, as Flyway allows)."""
        if not _VERSION_TEXT.fullmatch(text):
            raise ValueError(f"{text!r} is not a version: use digits separated by dots, like 3 or 1.2.10")
        parts = [int(part) for part in re.split(r"[._]", text)]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return cls(tuple(parts), text.replace("_", "."))

    def __str__(self) -> str:
        return self.text


def checksum(text: str) -> str:
    """SHA-256 of the text with line endings normalised, so a Windows checkout does not look edited."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Migration:
    script: str
    """Path of the file inside the migrations folder, as recorded in the history."""
    version: Version | None
    """None for a repeatable migration."""
    description: str
    text: str = field(repr=False)
    checksum: str = field(repr=False)

    @property
    def is_repeatable(self) -> bool:
        return self.version is None

    @cached_property
    def statements(self) -> list[Statement]:
        try:
            return split_statements(self.text)
        except ScriptSyntaxError as error:
            line, column = line_and_column(self.text, error.offset)
            raise MigrationSetError([f"{self.script}:{line}:{column}: {error}"]) from None

    @property
    def mode(self) -> ExecutionMode:
        """How the file must run; raises MigrationSetError when it cannot run safely as written."""
        return self._mode_and_reason[0]

    @property
    def mode_reason(self) -> str:
        return self._mode_and_reason[1]

    @cached_property
    def directives(self) -> list[Directive]:
        return header_directives(self.text)

    def _has_directive(self, name: str) -> bool:
        return any(directive.name == name for directive in self.directives)

    @property
    def phase(self) -> Phase:
        return Phase.AFTER_ROLLOUT if self._has_directive(AFTER_ROLLOUT) else Phase.BEFORE_ROLLOUT

    @property
    def allowances(self) -> list[Allowance]:
        """The ``premigrate check`` findings this file acknowledges."""
        return allowances_in(self.directives)

    @cached_property
    def _mode_and_reason(self) -> tuple[ExecutionMode, str]:
        if self._has_directive(NO_TRANSACTION_DIRECTIVE):
            return ExecutionMode.NO_TRANSACTION, "directive"
        statements = self.statements
        if any(statement.controls_transaction for statement in statements):
            return ExecutionMode.OWN_TRANSACTION, "detected: the file has its own BEGIN/COMMIT"
        if (label := self._enum_value_used_after_adding()) is not None:
            return ExecutionMode.NO_TRANSACTION, (
                f"detected: ALTER TYPE ... ADD VALUE {label} is used later in the file, which PostgreSQL allows "
                "only after a commit"
            )
        outside = [s for s in statements if not s.runs_in_transaction_block]
        if not outside:
            return ExecutionMode.TRANSACTION, "default"
        if len(outside) == len(statements):
            return ExecutionMode.NO_TRANSACTION, "detected: its statements cannot run in a transaction"
        raise MigrationSetError(
            [
                f"{self._where(outside[0])}: {outside[0].head} cannot run inside a transaction, "
                "but the file also has statements that should. Put the statement in a file of its own, "
                f"or make '-- premigrate:{NO_TRANSACTION_DIRECTIVE}' the first line to run every statement "
                "of this file on its own (a failure then leaves the earlier statements applied)"
            ]
        )

    def _enum_value_used_after_adding(self) -> str | None:
        """The label ('v') of an ALTER TYPE … ADD VALUE that a later statement uses: in one transaction that
        fails (55P04), unless the same file created the type."""
        created: set[tuple[str, ...]] = set()
        for index, statement in enumerate(self.statements):
            words = statement.top_words
            if words[:2] == ("CREATE", "TYPE") and "AS" in words:
                created.add(words[2 : words.index("AS")])
            if words[:2] != ("ALTER", "TYPE") or "ADD" not in words or words[2 : words.index("ADD")] in created:
                continue
            added = _ADDED_ENUM_LABEL.search(statement.text)
            if added and any(added.group("label") in later.text for later in self.statements[index + 1 :]):
                return added.group("label")
        return None

    def _where(self, statement: Statement) -> str:
        line, column = line_and_column(self.text, statement.offset)
        return f"{self.script}:{line}:{column}"

    def check(self) -> list[str]:
        """Problems that stop this file from running, each naming the file and what to do."""
        if problems := directive_problems(self.script, self.directives):
            return problems
        try:
            # A lock release comes first: the advice for the file's mode would not help while it is there.
            if problems := self._unsent_content_problems() + self._lock_release_problems():
                return problems
            return [] if self.mode is ExecutionMode.TRANSACTION else self._unfinished_transaction_problems()
        except MigrationSetError as error:
            return error.problems

    def _unsent_content_problems(self) -> list[str]:
        # Never record as applied a file that has something in it but sends nothing.
        offset = None if self.statements else first_content(self.text)
        if offset is None:
            return []
        line, column = line_and_column(self.text, offset)
        return [
            f"{self.script}:{line}:{column}: the file holds text here, but no statement premigrate could send, "
            "so it would be recorded as applied without running anything; make it SQL or a comment"
        ]

    def _lock_release_problems(self) -> list[str]:
        problems = []
        for statement in self.statements:
            if statement.words[:2] == ("DISCARD", "ALL"):
                what, instead = "DISCARD ALL", "use DISCARD PLANS, DISCARD TEMP, DISCARD SEQUENCES or RESET ALL"
            elif statement.calls_unlock_all:
                what, instead = "pg_advisory_unlock_all()", "release only your own locks with pg_advisory_unlock()"
            else:
                continue
            problems.append(
                f"{self._where(statement)}: {what} would release premigrate's migration lock (a session-level "
                f"advisory lock), so another run could start migrating at the same time; {instead}"
            )
        return problems

    def _unfinished_transaction_problems(self) -> list[str]:
        """Statement by statement, the file must not end inside a transaction block of its own."""
        opened_by: Statement | None = None
        for statement in self.statements:
            effect = statement.transaction_effect
            if (effect == "opens" and opened_by is None) or (effect == "chains" and opened_by is not None):
                opened_by = statement
            elif effect == "closes":
                opened_by = None
        if opened_by is None:
            return []
        line, _ = line_and_column(self.text, opened_by.offset)
        how = f" ({opened_by.head} starts a new one)" if opened_by.transaction_effect == "chains" else ""
        return [
            f"{self.script}:{line}: the file opens a transaction and never ends it{how}, so psql would roll back "
            "what is left open when the file ends; end the file with COMMIT"
        ]


@dataclass(frozen=True)
class MigrationSet:
    versioned: list[Migration]
    """In version order."""
    repeatable: list[Migration]
    """In description order."""

    @classmethod
    def from_files(cls, files: Iterable[tuple[str, bytes]]) -> MigrationSet:
        """Build the set from (relative path, content) pairs; files not ending in .sql are skipped.

        Raises MigrationSetError listing every bad name, duplicate version and undecodable file.
        """
        problems: list[str] = []
        by_version: dict[Version, Migration] = {}
        by_description: dict[str, Migration] = {}
        for script, content in sorted(files):
            if not script.lower().endswith(".sql"):
                continue
            try:
                migration = _parse(script, content)
            except ValueError as error:
                problems.append(str(error))
                continue
            if migration.version is None:
                earlier = by_description.setdefault(migration.description, migration)
            else:
                earlier = by_version.setdefault(migration.version, migration)
            if earlier is not migration:
                what = f"version {migration.version}" if migration.version else "description"
                problems.append(
                    f"{migration.script}: {what} is already used by {earlier.script}; "
                    "every migration needs its own version (repeatables their own description): rename one"
                )
        if problems:
            raise MigrationSetError(problems)
        return cls(
            versioned=[by_version[v] for v in sorted(by_version)],
            repeatable=[by_description[d] for d in sorted(by_description)],
        )

    @property
    def fingerprint(self) -> str:
        """Changes exactly when a file is added, removed, renamed or edited: what tells a deploy to migrate."""
        digest = hashlib.sha256()
        for migration in (*self.versioned, *self.repeatable):
            digest.update(f"{migration.script}\0{migration.checksum}\n".encode())
        return digest.hexdigest()[:16]


def _parse(script: str, content: bytes) -> Migration:
    file_name = script.rsplit("/", 1)[-1]
    name_fix = (
        "name versioned migrations V<version>__<description>.sql (like V3__add_sessions.sql) and "
        "repeatable ones R__<description>.sql, or move the file out of the migrations folder"
    )
    if (versioned := _VERSIONED_NAME.fullmatch(file_name)) is not None:
        try:
            version: Version | None = Version.parse(versioned.group("version"))
        except ValueError as error:
            raise ValueError(f"{script}: {error}; {name_fix}") from None
        description = versioned.group("description")
    elif (repeatable := _REPEATABLE_NAME.fullmatch(file_name)) is not None:
        version, description = None, repeatable.group("description")
    else:
        raise ValueError(f"{script}: the name does not match; {name_fix}")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{script}:{line}: not valid UTF-8 (byte {error.start}); save the file as UTF-8") from None
    text = text.removeprefix("\ufeff")
    return Migration(script, version, description.replace("_", " "), text, checksum(text))
