"""VirusTotal as :class:`~integrations.capabilities.ThreatIntel`: file, address and domain reports.

The verdict is read from ``last_analysis_stats``: any engine saying malicious makes it
malicious once at least :data:`MALICIOUS_ENGINES` agree, suspicious below that or when
only ``suspicious`` votes exist; harmless when engines answered and none flagged it.
Family names come from ``popular_threat_classification``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from integrations.capabilities import IndicatorKind, IntelReport, IntelVerdict, indicator_kind
from integrations.errors import RejectedError, VendorUnavailable
from integrations.virustotal.client import VENDOR, get_object

MALICIOUS_ENGINES = 3
"""Engines that must say malicious for the verdict to be malicious (one may be a false hit)."""
GUI = "https://www.virustotal.com/gui"

_PATHS = {
    IndicatorKind.SHA256: ("files", "file"),
    IndicatorKind.SHA1: ("files", "file"),
    IndicatorKind.MD5: ("files", "file"),
    IndicatorKind.IPV4: ("ip_addresses", "ip-address"),
    IndicatorKind.IPV6: ("ip_addresses", "ip-address"),
    IndicatorKind.DOMAIN: ("domains", "domain"),
}


def verdict_of(stats: dict[str, Any]) -> tuple[IntelVerdict, int | None]:
    """Verdict and 0-100 score from ``last_analysis_stats``."""
    counts = {k: v for k, v in stats.items() if isinstance(v, int) and v >= 0}
    malicious, suspicious = counts.get("malicious", 0), counts.get("suspicious", 0)
    answered = sum(counts.get(k, 0) for k in ("malicious", "suspicious", "harmless", "undetected"))
    if answered == 0:
        return IntelVerdict.UNKNOWN, None
    score = round(100 * malicious / answered)
    if malicious >= MALICIOUS_ENGINES:
        return IntelVerdict.MALICIOUS, score
    if malicious or suspicious:
        return IntelVerdict.SUSPICIOUS, score
    return IntelVerdict.HARMLESS, score


def _names(attributes: dict[str, Any]) -> tuple[str, ...]:
    """Threat label, families and categories, first-said first, no duplicates."""
    classification = attributes.get("popular_threat_classification")
    if not isinstance(classification, dict):
        return ()
    found: dict[str, None] = {}
    label = classification.get("suggested_threat_label")
    if isinstance(label, str) and label:
        found[label] = None
    for key in ("popular_threat_name", "popular_threat_category"):
        for entry in classification.get(key) or []:
            value = entry.get("value") if isinstance(entry, dict) else None
            if isinstance(value, str) and value:
                found.setdefault(value, None)
    return tuple(found)[:10]


def _epoch(value: object) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and value > 0 else None


class VirusTotalIntel:
    """Looks file hashes, addresses and domains up in VirusTotal.

    Args:
        client: from :func:`integrations.virustotal.client.connect`.
    """

    vendor = VENDOR
    kinds = frozenset(_PATHS)

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def lookup(self, indicator: str) -> IntelReport:
        """What VirusTotal knows of ``indicator``; verdict ``unknown`` if it has no record.

        Raises:
            RejectedError: not a hash, address or domain (nothing is sent).
            RateLimited: a quota is spent (``vendor_code`` ``QuotaExceededError``).
        """
        parsed = indicator_kind(indicator)
        if parsed is None:
            raise RejectedError(f"not a hash, IP address or domain: {indicator!r}", vendor=VENDOR)
        kind, value = parsed
        collection, page = _PATHS[kind]
        link = f"{GUI}/{page}/{quote(value, safe='')}"
        response = await get_object(self._client, f"/api/v3/{collection}/{quote(value, safe='')}")
        if response.status_code == 404:
            return IntelReport(
                indicator=value,
                kind=kind,
                vendor=VENDOR,
                verdict=IntelVerdict.UNKNOWN,
                link=link,
                note="VirusTotal has no record of it",
            )
        try:
            attributes = response.json()["data"]["attributes"]
            if not isinstance(attributes, dict):
                raise TypeError("attributes is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise VendorUnavailable(
                f"{collection} answered without data.attributes", vendor=VENDOR, status_code=200
            ) from exc
        stats = attributes.get("last_analysis_stats")
        verdict, score = verdict_of(stats if isinstance(stats, dict) else {})
        reputation = attributes.get("reputation")
        note = f"community reputation {reputation}" if isinstance(reputation, int) else None
        return IntelReport(
            indicator=value,
            kind=kind,
            vendor=VENDOR,
            verdict=verdict,
            score=score,
            names=_names(attributes),
            first_seen=_epoch(attributes.get("first_submission_date")),
            link=link,
            note=note,
        )
