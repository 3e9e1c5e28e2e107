"""What threat intel means for an incident: its score, and the lines an analyst reads.

Every string a report carries from a vendor (family names, labels, notes) is attacker-
influenced: the lines made here are plain text, for renderers that escape them.
"""

from __future__ import annotations

from collections.abc import Sequence

from flows.detect import intel_points
from flows.models import Investigation
from integrations.capabilities import IndicatorKind, IntelReport, IntelVerdict
from integrations.phrases import vendor_name

_KIND_WORDS = {
    IndicatorKind.SHA256: "SHA-256",
    IndicatorKind.SHA1: "SHA-1",
    IndicatorKind.MD5: "MD5",
    IndicatorKind.IPV4: "IP",
    IndicatorKind.IPV6: "IP",
    IndicatorKind.DOMAIN: "Domain",
}
_RANK = {
    IntelVerdict.MALICIOUS: 3,
    IntelVerdict.SUSPICIOUS: 2,
    IntelVerdict.HARMLESS: 1,
    IntelVerdict.UNKNOWN: 0,
}


def _verdict_for(score: int) -> str:
    # The same cut-offs as flows.respond.assess, so intel moves an incident the same way
    # severity does.
    return "true_positive" if score >= 70 else "suspicious" if score >= 40 else "benign"


def with_intel(investigation: Investigation, reports: Sequence[IntelReport]) -> Investigation:
    """``investigation`` with the reports kept and the worst verdict counted in its score."""
    points = intel_points(r.verdict.value for r in reports)
    reasons = list(investigation.reasons)
    score = investigation.risk_score
    if points:
        worst = max(reports, key=lambda r: _RANK[r.verdict])
        reasons.append(
            f"threat intel: {worst.indicator} is {worst.verdict.value} per "
            f"{vendor_name(worst.vendor)} (+{points})"
        )
        score = min(100, score + points)
    # Intel raises the verdict, never lowers it: a harmless hash does not clear an alert.
    verdict = investigation.verdict
    if _RANK_VERDICT[_verdict_for(score)] > _RANK_VERDICT[verdict]:
        verdict = _verdict_for(score)  # type: ignore[assignment]
    return investigation.model_copy(
        update={"intel": list(reports), "risk_score": score, "reasons": reasons, "verdict": verdict}
    )


_RANK_VERDICT = {"benign": 0, "suspicious": 1, "true_positive": 2}


def intel_line(report: IntelReport) -> str:
    """``SHA-256 8f2b…: malicious · VirusTotal 83/100 · lockbit, ransomware · first seen …``."""
    parts = [f"{_KIND_WORDS[report.kind]} {report.indicator}: {report.verdict.value}"]
    score = f" {report.score}/100" if report.score is not None else ""
    parts.append(f"{vendor_name(report.vendor)}{score}")
    if report.names:
        parts.append(", ".join(report.names[:5]))
    if report.first_seen is not None:
        parts.append(f"first seen {report.first_seen:%Y-%m-%d}")
    if report.note:
        parts.append(report.note)
    if report.link:
        parts.append(report.link)
    return " · ".join(" ".join(p.split()) for p in parts)


def intel_lines(reports: Sequence[IntelReport]) -> list[str]:
    """One line per report, the worst verdicts first."""
    ordered = sorted(reports, key=lambda r: (-_RANK[r.verdict], r.indicator, r.vendor))
    return [intel_line(r) for r in ordered]
