"""Routing: the most specific playbook whose trigger fits an incident, and why.

Specificity is, in order: how many trigger criteria the playbook sets, how high its
severity floor is, and how few values its criteria allow; the id breaks a remaining tie.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from flows.models import Incident
from flows.playbook.loader import LoadedPlaybook
from flows.playbook.schema import Trigger
from integrations.ocsf import DetectionFinding, SeverityId


@dataclass(frozen=True)
class Candidate:
    """One playbook weighed for an incident.

    Attributes:
        playbook: the playbook.
        fits: every criterion of its trigger holds.
        reasons: one line per criterion: why it holds or does not.
        specificity: the sort key (higher is more specific).
    """

    playbook: LoadedPlaybook
    fits: bool
    reasons: tuple[str, ...]
    specificity: tuple[int, int, int]


@dataclass(frozen=True)
class Route:
    """The routing decision.

    Attributes:
        chosen: the playbook to run, or ``None`` when no trigger fits.
        candidates: every playbook, chosen first, then by fit and specificity.
    """

    chosen: LoadedPlaybook | None
    candidates: tuple[Candidate, ...]

    def explain(self) -> list[str]:
        """Human lines: the choice, then each candidate with its reasons."""
        lines = [
            f"routed to {self.chosen.id} ({self.chosen.file})"
            if self.chosen
            else "no playbook's trigger fits this incident"
        ]
        for c in self.candidates:
            verdict = "fits" if c.fits else "does not fit"
            criteria, floor, _ = c.specificity
            lines.append(
                f"{c.playbook.id}: {verdict} ({criteria} criteria, severity floor "
                f"{SeverityId(floor).name.lower()})"
            )
            lines.extend(f"  {r}" for r in c.reasons)
        return lines


def alert_sources(alert: DetectionFinding) -> set[str]:
    """The words naming an alert's product (``crowdstrike``, ``entra``, ``okta`` ...)."""
    product = alert.metadata.product
    text = " ".join(v for v in (product.vendor_name, product.name, product.uid) if v)
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _specificity(trigger: Trigger) -> tuple[int, int, int]:
    lists = (trigger.sources, trigger.finding_types, trigger.tactics, trigger.techniques)
    severity_set = (
        trigger.min_severity > SeverityId.INFORMATIONAL or trigger.max_severity < SeverityId.FATAL
    )
    criteria = sum(1 for values in lists if values) + int(severity_set)
    breadth = sum(len(values) for values in lists)
    return criteria, int(trigger.min_severity), -breadth


def trigger_fits(trigger: Trigger, incident: Incident) -> tuple[bool, list[str]]:
    """Whether every criterion of ``trigger`` holds for ``incident``, with one reason each."""
    reasons: list[str] = []
    if trigger.events and _specificity(trigger)[0] == 0:
        return False, [f"answers the events {', '.join(trigger.events)} only, not alerts"]
    ok = True
    severity = incident.severity
    low, high = trigger.min_severity, trigger.max_severity
    within = low <= severity <= high
    ok &= within
    reasons.append(
        f"severity {severity.name.lower()} {'is' if within else 'is not'} within "
        f"{low.name.lower()}..{high.name.lower()}"
    )

    def criterion(name: str, wanted: Sequence[str], have: set[str], match: str | None) -> None:
        nonlocal ok
        if not wanted:
            return
        if match is not None:
            reasons.append(f"{name} {match} matches")
        else:
            ok = False
            seen = ", ".join(sorted(have)) or "none"
            reasons.append(f"no {name} of {', '.join(wanted)} (alerts have: {seen})")

    sources: set[str] = set()
    types: set[str] = set()
    tactics: set[str] = set()
    for alert in incident.alerts:
        sources |= alert_sources(alert)
        types |= {t.lower() for t in alert.finding_info.types}
        tactics |= {a.tactic.uid for a in alert.finding_info.attacks if a.tactic}
    techniques = set(incident.techniques)
    criterion(
        "source", trigger.sources, sources, next((s for s in trigger.sources if s in sources), None)
    )
    criterion(
        "finding type",
        trigger.finding_types,
        types,
        next((t for t in trigger.finding_types if t.lower() in types), None),
    )
    criterion(
        "tactic", trigger.tactics, tactics, next((t for t in trigger.tactics if t in tactics), None)
    )
    # T1566 covers its sub-techniques (T1566.002): a playbook for phishing fits all of them.
    hit = next(
        (t for t in trigger.techniques if any(h == t or h.startswith(f"{t}.") for h in techniques)),
        None,
    )
    criterion("technique", trigger.techniques, techniques, hit)
    return ok, reasons


def route(incident: Incident, playbooks: Sequence[LoadedPlaybook]) -> Route:
    """Choose the most specific playbook whose trigger fits ``incident``.

    Args:
        incident: the incident.
        playbooks: the loaded playbooks.

    Returns:
        The choice (``None`` when nothing fits) and every candidate with its reasons.
    """
    candidates = []
    for playbook in playbooks:
        fits, reasons = trigger_fits(playbook.spec.trigger, incident)
        candidates.append(
            Candidate(playbook, fits, tuple(reasons), _specificity(playbook.spec.trigger))
        )

    def rank(c: Candidate) -> tuple[bool, int, int, int, str]:
        criteria, floor, breadth = c.specificity
        return (not c.fits, -criteria, -floor, -breadth, c.playbook.id)

    ordered = tuple(sorted(candidates, key=rank))
    chosen = ordered[0].playbook if ordered and ordered[0].fits else None
    return Route(chosen, ordered)
