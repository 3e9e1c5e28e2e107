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
    plus fleet prevalence (:func:`fleet_prevalence`): 5 per other host a hunt found the
    incident's indicators on, at most 20, plus threat intel once known
    (:func:`intel_points`): 25 when an indicator is malicious, 10 when suspicious.

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
        fleet_hosts: int = 0,
        intel_verdicts: Iterable[str] = (),
    ) -> int:
        """The triage score of an incident with these facts.

        ``fleet_hosts``: how many hosts beyond the incident's own the hunt found its
        indicators on (0 until it has been hunted); ``intel_verdicts``: what threat
        intelligence said of its indicators, when known.
        """
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
        fleet = fleet_prevalence(fleet_hosts)
        intel = intel_points(intel_verdicts)
        return max(0, min(100, points + criticality + prevalence + fleet + intel))


def fleet_prevalence(other_hosts: int) -> int:
    """Points for an indicator seen on ``other_hosts`` hosts the alerts do not name.

    5 per host, at most 20: a payload on four more machines is an outbreak, not a case.
    """
    return min(20, 5 * max(other_hosts, 0))
