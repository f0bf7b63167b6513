"""What a check finds: ok, a problem with its fix, or skipped with the reason; and the report."""

from __future__ import annotations

from dataclasses import dataclass

OK, PROBLEM, SKIPPED = "ok", "problem", "skipped"

DASHBOARD_KEYS = "Stripe Dashboard > Developers > API keys"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    message: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def ok(check: str, message: str) -> Finding:
    return Finding(check, OK, message)


def problem(check: str, message: str, fix: str) -> Finding:
    return Finding(check, PROBLEM, message, fix)


def skipped(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, SKIPPED, message, fix)


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.status.upper():8} {finding.check}: {finding.message}")
        if finding.fix:
            lines.append(f"{'':8} fix: {finding.fix}")
    problems = sum(f.status == PROBLEM for f in findings)
    lines.append("")
    lines.append(f"{problems} problem(s)" if problems else "no problems found")
    return "\n".join(lines)
