"""Why an approval is asked: what was seen, where and when, and what investigation found.

Kept with the request (and in the store), so the Slack message, ``stanch approvals show``
and the Prefect pause form all show the same evidence. Every string here may come from an
alert, so every renderer treats it as data.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from flows.intel import intel_lines
from flows.models import Incident, Investigation
from integrations.ocsf import ObservableType

MAX_ALERT_LINES = 10


class ApprovalContext(BaseModel):
    """The evidence behind an approval request.

    Attributes:
        severity: the incident's severity word (``critical``).
        verdict: the investigation's verdict (``true_positive``).
        risk_score: its score out of 100.
        evidence: what was seen, one line each: each alert (when, which product, how
            severe, what), then the hosts, users, addresses and files named.
        techniques: ATT&CK techniques, ``T1486 Data Encrypted for Impact``.
        assessment: how the score was reached.
        vendors: which vendor carries out each capability (``edr`` → ``crowdstrike``).
        hunt: the "Hunt" section: per indicator, on how many hosts of the fleet it was
            seen and which (names capped, the rest counted).
        intel: what threat-intelligence services said of the incident's indicators, one
            line each, worst first (vendor data: attacker-influenced, shown as data).
    """

    model_config = ConfigDict(frozen=True)

    severity: str = ""
    verdict: str = ""
    risk_score: int | None = None
    evidence: list[str] = Field(default_factory=list)
    techniques: list[str] = Field(default_factory=list)
    assessment: list[str] = Field(default_factory=list)
    vendors: dict[str, str] = Field(default_factory=dict)
    hunt: list[str] = Field(default_factory=list)
    intel: list[str] = Field(default_factory=list)


def _alert_line(incident: Incident, index: int) -> str:
    alert = incident.alerts[index]
    where = [*alert.observed(ObservableType.HOSTNAME), *alert.observed(ObservableType.USER_NAME)]
    on = f" ({', '.join(where[:3])})" if where else ""
    return (
        f"{alert.occurred_at:%Y-%m-%d %H:%M:%S} UTC · {alert.vendor} · "
        f"{alert.severity_id.name.lower()} · {alert.title}{on}"
    )


def _techniques(incident: Incident) -> list[str]:
    named: dict[str, str] = {}
    for alert in incident.alerts:
        for attack in alert.finding_info.attacks:
            for technique in (attack.technique, attack.sub_technique):
                if technique is not None:
                    label = f"{technique.uid} {technique.name or ''}".strip()
                    named.setdefault(technique.uid, label)
    return list(named.values())


def approval_context(
    incident: Incident, investigation: Investigation, vendors: Mapping[str, str]
) -> ApprovalContext:
    """The evidence an approver needs, from the incident and what investigation found."""
    order = sorted(range(len(incident.alerts)), key=lambda i: incident.alerts[i].occurred_at)
    lines = [_alert_line(incident, i) for i in order[:MAX_ALERT_LINES]]
    if len(order) > MAX_ALERT_LINES:
        lines.append(f"and {len(order) - MAX_ALERT_LINES} more alert(s)")
    for label, values in (
        ("Hosts", incident.hostnames),
        ("Users", incident.users),
        ("Internet addresses", incident.external_ips),
        ("SHA-256", incident.sha256s),
    ):
        if values:
            lines.append(f"{label}: {', '.join(values[:5])}" + (" …" if len(values) > 5 else ""))
    return ApprovalContext(
        severity=incident.severity.name.lower(),
        verdict=investigation.verdict,
        risk_score=investigation.risk_score,
        evidence=lines,
        techniques=_techniques(incident),
        assessment=list(investigation.reasons),
        vendors=dict(vendors),
        hunt=[h.line() for h in investigation.hunts],
        intel=intel_lines(investigation.intel),
    )
