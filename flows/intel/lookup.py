"""Look an incident's indicators up in every configured reputation service, cache first.

A cached answer is used while it is fresh; otherwise the vendor is asked once (no
retries: each request spends quota). Whatever goes wrong -- a spent quota (429), a
timeout, a refusal -- the indicator's verdict from that vendor is ``unknown`` with a note
saying why, and the incident goes on: intelligence informs a decision, it never blocks
one. After a 429 the vendor is not asked again for the rest of the incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.record import IntelRecords
from integrations.capabilities import IndicatorKind, IntelReport, IntelVerdict, ThreatIntel
from integrations.errors import IntegrationError, RateLimited
from integrations.phrases import vendor_name


@dataclass
class Finding:
    """One vendor's answer about one indicator, and whether it came from the cache."""

    report: IntelReport
    cached: bool = False


@dataclass
class _Budget:
    """Vendors whose quota ran out during this incident's lookups."""

    spent: dict[str, str] = field(default_factory=dict)


def _quota_note(vendor: str, error: RateLimited) -> str:
    name = vendor_name(vendor)
    code = f" ({error.vendor_code})" if error.vendor_code else ""
    wait = (
        f"; it asks to wait {round(error.retry_after)} s" if error.retry_after is not None else ""
    )
    reset = "; VirusTotal's daily quotas reset at 00:00 UTC" if vendor == "virustotal" else ""
    return f"not looked up: {name} quota exhausted{code}{wait}{reset}"


def _unknown(kind: IndicatorKind, value: str, vendor: str, note: str) -> IntelReport:
    return IntelReport(
        indicator=value, kind=kind, vendor=vendor, verdict=IntelVerdict.UNKNOWN, note=note
    )


async def _ask(
    service: ThreatIntel, kind: IndicatorKind, value: str, budget: _Budget
) -> tuple[IntelReport, bool]:
    """``(report, answered)``: the vendor's report, or an unknown one saying why not."""
    vendor = service.vendor
    if vendor in budget.spent:
        return _unknown(kind, value, vendor, budget.spent[vendor]), False
    try:
        return await service.lookup(value), True
    except RateLimited as exc:
        budget.spent[vendor] = _quota_note(vendor, exc)
        return _unknown(kind, value, vendor, budget.spent[vendor]), False
    except IntegrationError as exc:
        # A timeout, a 5xx, a refused key: the analyst is told, the incident goes on.
        return _unknown(kind, value, vendor, f"not looked up: {exc}"), False


def _run_name() -> str:
    from prefect.runtime import task_run

    parameters = task_run.parameters
    vendors = ", ".join(s.vendor for s in parameters["services"])
    return f"[investigate] intel.lookup {len(parameters['indicators'])} indicator(s) · {vendors}"


@task(name="intel.lookup", task_run_name=_run_name, cache_policy=NO_CACHE)
async def look_up(
    services: Sequence[ThreatIntel],
    indicators: Sequence[tuple[IndicatorKind, str]],
    records: IntelRecords,
    *,
    tenant: str,
    ttl_seconds: int,
) -> list[Finding]:
    """Every service's answer about every indicator of a kind it takes, cache first.

    Answers the vendor gave (a 404 "no record" included) are cached for ``ttl_seconds``;
    the ``unknown`` stand-ins for lookups that failed are not, so the next incident asks.
    """
    findings: list[Finding] = []
    budget = _Budget()
    ttl = timedelta(seconds=ttl_seconds)
    for kind, value in indicators:
        for service in services:
            if kind not in service.kinds:
                continue
            cached = await records.cached(tenant, service.vendor, value)
            if cached is not None:
                findings.append(Finding(cached, cached=True))
                continue
            report, answered = await _ask(service, kind, value, budget)
            if answered and ttl_seconds > 0:
                await records.remember(tenant, report, ttl)
            findings.append(Finding(report))
    return findings
