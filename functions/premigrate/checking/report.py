"""What ``premigrate check`` found: the findings, readable or as JSON, and whether any error stands."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from premigrate.checking.judging import Finding
from premigrate.checking.rules import Level


@dataclass
class CheckReport:
    checked: list[str]
    """The pending migrations measured, in the order they ran."""
    replayed: int
    """Applied migrations replayed into the scratch database first."""
    scratch: str
    """The scratch server, as ``PostgreSQL 18.6``."""
    target: str | None
    """Where history and sizes came from (never a password); None: no target database."""
    sized: bool
    """Table sizes came from the target's statistics."""
    max_locked_rows: int
    findings: list[Finding] = field(default_factory=list)
    total_ms: float = 0.0

    @property
    def blocking(self) -> list[Finding]:
        """Error-level findings no allow directive acknowledges: what makes the check fail (exit 4)."""
        return [finding for finding in self.findings if finding.blocking]

    def counts(self) -> dict[str, int]:
        counted = Counter(str(finding.level) for finding in self.findings)
        return {
            "error": counted[Level.ERROR],
            "error_allowed": sum(1 for f in self.findings if f.level is Level.ERROR and f.allowed),
            "warning": counted[Level.WARNING],
            "info": counted[Level.INFO],
        }

    def by_rule(self) -> dict[str, dict[str, int]]:
        rules: dict[str, Counter[str]] = {}
        for finding in self.findings:
            rules.setdefault(finding.rule, Counter())[str(finding.level)] += 1
        return {rule: dict(levels) for rule, levels in sorted(rules.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "replayed": self.replayed,
            "scratch": self.scratch,
            "target": self.target,
            "sized_by_target": self.sized,
            "max_locked_rows": self.max_locked_rows,
            "total_ms": round(self.total_ms, 1),
            "counts": self.counts(),
            "by_rule": self.by_rule(),
            "findings": [
                {
                    "file": f.script,
                    "line": f.line,
                    "rule": f.rule,
                    "level": str(f.level),
                    "statement": f.statement,
                    "measured": f.measured,
                    "safe_way": f.advice,
                    "anchors": f.anchors,
                    "allowed": f.allowed,
                }
                for f in self.findings
            ],
        }

    def text(self) -> str:
        if not self.checked:
            return "nothing pending: nothing to check"
        replayed = f", after replaying {self.replayed} applied one(s)" if self.replayed else ""
        sized = f"tables sized by {self.target}" if self.sized else "table sizes unknown (no --database-url)"
        lines = [
            f"checked {len(self.checked)} pending migration(s) on a scratch database ({self.scratch}){replayed}",
            f"{sized}; --max-locked-rows {self.max_locked_rows}",
        ]
        for finding in self.findings:
            allowed = f"  (allowed: {finding.allowed})" if finding.allowed else ""
            lines += ["", f"{finding.script}:{finding.line}  {finding.level}  {finding.rule}{allowed}"]
            if finding.statement:
                lines.append(f"  {finding.statement}")
            lines += [f"  measured:  {finding.measured}", f"  safe way:  {finding.advice}"]
            lines.append(f"  from:      {finding.anchors}")
        counts = self.counts()
        allowed = f" ({counts['error_allowed']} allowed)" if counts["error_allowed"] else ""
        lines += [
            "",
            f"{counts['error']} error(s){allowed}, {counts['warning']} warning(s), {counts['info']} info "
            f"in {self.total_ms / 1000:.2f} s",
        ]
        return "\n".join(lines)
