"""The investigate stage's hunt: every host the incident's indicators were seen on.

Each SHA-256 and internet IPv4 address the alerts name is hunted across the tenant's EDR
(:meth:`integrations.capabilities.EDR.hunt`). A hunt that fails or does not finish is kept
as an incomplete summary with its reason; the incident goes on either way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from flows.models import HUNT_HOST_CAP, HuntSummary, Incident
from integrations.capabilities import EDR
from integrations.errors import IntegrationError
from integrations.hunting import HuntResult, Indicator, IndicatorError

HUNT_SINCE_DAYS = 30
"""How far back the investigate stage hunts (the ransomware playbook's window too)."""


def indicators_of(incident: Incident) -> list[Indicator]:
    """The incident's huntable indicators: its SHA-256s and internet IPv4 addresses."""
    found: list[Indicator] = []
    for kind, values in (("sha256", incident.sha256s), ("ipv4", incident.external_ips)):
        for value in values:
            if kind == "ipv4" and not isinstance(
                ipaddress.ip_address(value), ipaddress.IPv4Address
            ):
                continue
            try:
                found.append(Indicator.of(kind, value))
            except IndicatorError:
                continue  # not of its form: nothing an EDR query may carry
    return list(dict.fromkeys(found))


async def hunt_one(edr: EDR, indicator: Indicator, since: datetime) -> HuntResult:
    """The EDR's answer, or an incomplete result saying why there is none."""
    try:
        return await edr.hunt(indicator, since=since)
    except IntegrationError as exc:
        return HuntResult(
            indicator=indicator,
            vendor=edr.vendor,
            since=since,
            complete=False,
            note=f"hunt failed: {str(exc)[:200]}",
        )


async def hunt_incident(
    edr: EDR, incident: Incident, *, since_days: int = HUNT_SINCE_DAYS
) -> list[HuntResult]:
    """Hunt each of the incident's indicators, one after the other (vendors rate-limit)."""
    since = datetime.now(UTC) - timedelta(days=since_days)
    return [await hunt_one(edr, i, since) for i in indicators_of(incident)]


def summarise_hunt(result: HuntResult, incident_hosts: Sequence[str]) -> HuntSummary:
    """What is kept of a hunt: counts, the first host names, how many are new to the case."""
    names = [h.hostname or h.host_id for h in result.hosts]
    named = {h.lower() for h in incident_hosts}
    return HuntSummary(
        kind=result.indicator.kind.value,
        value=result.indicator.value,
        vendor=result.vendor,
        host_count=len(names),
        hosts=names[:HUNT_HOST_CAP],
        more=max(0, len(names) - HUNT_HOST_CAP),
        other_hosts=sum(1 for n in names if n.lower() not in named),
        complete=result.complete,
        note=result.note,
    )


def fleet_hosts(summaries: Sequence[HuntSummary]) -> int:
    """How many hosts beyond the alerts' own the indicators reached (the widest hunt)."""
    return max((s.other_hosts for s in summaries), default=0)
