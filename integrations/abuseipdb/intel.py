"""AbuseIPDB as :class:`~integrations.capabilities.ThreatIntel`: address reputation.

Only addresses: the ``check`` endpoint takes nothing else. The verdict is read from
``abuseConfidenceScore`` (0-100): malicious from :data:`MALICIOUS_SCORE`, suspicious from
:data:`SUSPICIOUS_SCORE`; an address nobody reported is unknown, a whitelisted one harmless.
AbuseIPDB publishes no cut-offs; these are stanch's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from integrations.abuseipdb.client import VENDOR, check
from integrations.capabilities import IndicatorKind, IntelReport, IntelVerdict, indicator_kind
from integrations.errors import RejectedError, VendorUnavailable

MALICIOUS_SCORE = 75
SUSPICIOUS_SCORE = 25
PAGE = "https://www.abuseipdb.com/check"


def verdict_of(data: dict[str, Any]) -> IntelVerdict:
    """The verdict a ``check`` answer's ``data`` means."""
    score = data.get("abuseConfidenceScore")
    if data.get("isWhitelisted") is True:
        return IntelVerdict.HARMLESS
    if not isinstance(score, int):
        return IntelVerdict.UNKNOWN
    if score >= MALICIOUS_SCORE:
        return IntelVerdict.MALICIOUS
    if score >= SUSPICIOUS_SCORE:
        return IntelVerdict.SUSPICIOUS
    if not data.get("totalReports"):
        return IntelVerdict.UNKNOWN
    return IntelVerdict.HARMLESS


class AbuseIPDBIntel:
    """Looks addresses up in AbuseIPDB.

    Args:
        client: from :func:`integrations.abuseipdb.client.connect`.
    """

    vendor = VENDOR
    kinds = frozenset({IndicatorKind.IPV4, IndicatorKind.IPV6})

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def lookup(self, indicator: str) -> IntelReport:
        """What AbuseIPDB's reporters say of the address ``indicator``.

        Raises:
            RejectedError: not an IP address (nothing is sent), or AbuseIPDB's 422.
            RateLimited: the daily limit is spent.
        """
        parsed = indicator_kind(indicator)
        if parsed is None or not parsed[0].is_ip:
            raise RejectedError(f"AbuseIPDB checks IP addresses only: {indicator!r}", vendor=VENDOR)
        kind, ip = parsed
        response = await check(self._client, ip)
        try:
            data = response.json()["data"]
            if not isinstance(data, dict):
                raise TypeError("data is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise VendorUnavailable(
                "check answered without data", vendor=VENDOR, status_code=200
            ) from exc
        verdict = verdict_of(data)
        score = data.get("abuseConfidenceScore")
        reports = data.get("totalReports")
        words = [f"{reports} report(s)" if isinstance(reports, int) else None]
        if data.get("isTor") is True:
            words.append("Tor exit node")
        usage = data.get("usageType")
        if isinstance(usage, str) and usage:
            words.append(usage)
        isp = data.get("isp")
        if isinstance(isp, str) and isp:
            words.append(isp)
        return IntelReport(
            indicator=ip,
            kind=kind,
            vendor=VENDOR,
            verdict=verdict,
            score=score if isinstance(score, int) and 0 <= score <= 100 else None,
            link=f"{PAGE}/{quote(ip, safe='')}",
            note=", ".join(w for w in words if w) or None,
        )
