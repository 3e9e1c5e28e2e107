"""Triage: how urgent an incident is, scored from its severity, assets, prevalence and intel."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from integrations.ocsf import SeverityId

INTEL_POINTS: dict[str, int] = {"malicious": 25, "suspicious": 10}
"""What the worst threat-intel verdict among an incident's indicators adds to its score."""


def intel_points(verdicts: Iterable[str]) -> int:
    """The points the worst of ``verdicts`` (``malicious`` … ``unknown``) is worth."""
    return max((INTEL_POINTS.get(v, 0) for v in verdicts), default=0)


_SEVERITY_POINTS: dict[int, int] = {
    SeverityId.UNKNOWN: 20,
    SeverityId.INFORMATIONAL: 5,
    SeverityId.LOW: 20,
    SeverityId.MEDIUM: 40,
    SeverityId.HIGH: 60,
    SeverityId.CRITICAL: 80,
    SeverityId.FATAL: 90,
}


class TriagePolicy(BaseModel):
    """A tenant's triage settings.

    The score (0-100) is severity points (informational 5, low 20, medium 40, high 60,
    critical 80, fatal 90) plus the criticality of the most critical host the incident
    names plus prevalence: 2 per corroborating alert and 5 per extra host, at most 20,
    plus threat intel once known: 25 when an indicator is malicious, 10 when suspicious.

    Attributes:
        threshold: incidents scoring below it are recorded but their flow is not started.
        asset_criticality: case-insensitive hostname glob (``dc-*``) to extra points.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: int = Field(default=40, ge=0, le=100)
    asset_criticality: dict[str, int] = Field(default_factory=dict)

    def score(
        self,
        *,
        severity: int,
        hosts: Iterable[str],
        alert_count: int,
        intel_verdicts: Iterable[str] = (),
    ) -> int:
        """The triage score of an incident with these facts (intel verdicts, when known)."""
        hosts = list(hosts)
        criticality = max(
            (
                weight
                for host in hosts
                for pattern, weight in self.asset_criticality.items()
                if fnmatch.fnmatchcase(host, pattern.lower())
            ),
            default=0,
        )
        prevalence = min(20, 2 * max(alert_count - 1, 0) + 5 * max(len(hosts) - 1, 0))
        points = _SEVERITY_POINTS.get(severity, _SEVERITY_POINTS[SeverityId.UNKNOWN])
        intel = intel_points(intel_verdicts)
        return max(0, min(100, points + criticality + prevalence + intel))
