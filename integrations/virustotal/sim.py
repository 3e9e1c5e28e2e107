"""A VirusTotal API v3 imitation: file, IP address and domain objects, errors and quotas.

Serves only the routes in ``tests/vendor_specs/virustotal.operations.json``. Objects are
shaped as VirusTotal documents them (``data.attributes`` with ``last_analysis_stats``,
``popular_threat_classification``, ``first_submission_date``, ``reputation``). Where the
documentation is silent, the choice is the strictest reading and is marked [U].
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Simulator

LAB_API_KEY = "stanch-lab-virustotal-key"
"""The key the simulator accepts (and ``PLUGIN.lab_settings`` uses); not a secret."""

DEMO_RANSOMWARE_SHA256 = "8f2b7c1e5a9d4f3b6c0e1a2d7f8b9c4e5d6a3f2e1b0c9d8e7f6a5b4c3d2e1f0a"
"""The demo's ransomware sample (``stanch demo``), known here as malicious."""
DEMO_C2_IP = "203.0.113.66"
"""The demo's command-and-control address, known here as malicious."""

PUBLIC_DAILY_QUOTA = 500
"""The public API's documented daily lookups (4 a minute, 500 a day, 15.5 K a month)."""

_HASH = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64})$")
_DOMAIN = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$")
_ENGINES = 70


def stats(malicious: int, suspicious: int = 0, harmless: int = 0) -> dict[str, int]:
    """``last_analysis_stats`` for ``_ENGINES`` engines, the rest ``undetected``."""
    undetected = max(0, _ENGINES - malicious - suspicious - harmless)
    return {
        "malicious": malicious,
        "suspicious": suspicious,
        "harmless": harmless,
        "undetected": undetected,
        "timeout": 0,
    }


@dataclass
class Record:
    """One object VirusTotal knows: its type, ids and attributes."""

    type: str
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


class VirusTotalSimulator(Simulator):
    """Stateful VirusTotal v3 object lookups.

    Args:
        api_key: the key it accepts.
        daily_quota: lookups a day before every request gets 429 ``QuotaExceededError``.
        per_minute: lookups a minute (the public API's is 4); ``None``, no minute quota
            (premium keys are sized per contract).
        clock: epoch-seconds time source, so a test can move past midnight UTC.
        seed_lab: know the demo's ransomware hash and C2 address as malicious.
    """

    vendor = "virustotal"
    base_url = "https://virustotal.lab.invalid"

    def __init__(
        self,
        *,
        api_key: str = LAB_API_KEY,
        daily_quota: int = PUBLIC_DAILY_QUOTA,
        per_minute: int | None = None,
        clock: Callable[[], float] = time.time,
        seed_lab: bool = True,
    ) -> None:
        self.api_key = api_key
        self.daily_quota = daily_quota
        self.per_minute = per_minute
        self.clock = clock
        self.records: dict[tuple[str, str], Record] = {}
        self._day: str = ""
        self._used_today = 0
        self._minute: list[float] = []
        super().__init__()
        if seed_lab:
            self.add_file(
                DEMO_RANSOMWARE_SHA256,
                malicious=58,
                label="ransomware.lockbit/encoder",
                families=("lockbit",),
                categories=("ransomware", "trojan"),
                first_seen=1_700_000_000,
                reputation=-85,
            )
            self.add_ip(DEMO_C2_IP, malicious=14, reputation=-40)

    # State ----------------------------------------------------------------------------
    def add_file(
        self,
        sha256: str,
        *,
        malicious: int = 0,
        suspicious: int = 0,
        harmless: int = 0,
        label: str | None = None,
        families: tuple[str, ...] = (),
        categories: tuple[str, ...] = (),
        first_seen: int | None = None,
        reputation: int = 0,
        md5: str | None = None,
        sha1: str | None = None,
    ) -> None:
        """Make a file known, found by its SHA-256 (and MD5/SHA-1 when given)."""
        attributes: dict[str, Any] = {
            "sha256": sha256,
            "last_analysis_stats": stats(malicious, suspicious, harmless),
            "reputation": reputation,
        }
        if md5:
            attributes["md5"] = md5
        if sha1:
            attributes["sha1"] = sha1
        if first_seen is not None:
            attributes["first_submission_date"] = first_seen
        if label or families or categories:
            attributes["popular_threat_classification"] = {
                "suggested_threat_label": label or "",
                "popular_threat_name": [{"count": 10, "value": f} for f in families],
                "popular_threat_category": [{"count": 10, "value": c} for c in categories],
            }
        aliases = tuple(h for h in (md5, sha1) if h)
        record = Record("file", sha256, attributes, aliases)
        for key in (sha256, *aliases):
            self.records[("files", key.lower())] = record

    def add_ip(
        self, ip: str, *, malicious: int = 0, harmless: int = 0, reputation: int = 0
    ) -> None:
        """Make an address known."""
        attributes = {
            "last_analysis_stats": stats(malicious, harmless=harmless),
            "reputation": reputation,
            "as_owner": "EXAMPLE-AS",
            "country": "ZZ",
        }
        self.records[("ip_addresses", ip)] = Record("ip_address", ip, attributes)

    def add_domain(
        self, domain: str, *, malicious: int = 0, harmless: int = 0, reputation: int = 0
    ) -> None:
        """Make a domain known."""
        attributes = {
            "last_analysis_stats": stats(malicious, harmless=harmless),
            "reputation": reputation,
        }
        self.records[("domains", domain.lower())] = Record("domain", domain.lower(), attributes)

    def throttle_headers(self, wait: float) -> dict[str, str]:
        """[U] VirusTotal documents no header saying when to retry: none is sent."""
        return {}

    def throttle_next(self, count: int = 1, *, wait: float = 2.0, path_prefix: str = "") -> None:
        """Answer the next ``count`` requests 429 ``QuotaExceededError``, as a spent quota."""
        self.fail_next(count, status=429, body=_quota_body(), path_prefix=path_prefix)

    def routes(self) -> list[BaseRoute]:
        """The documented object lookups."""
        return [
            Route("/api/v3/files/{id}", self._file, methods=["GET"]),
            Route("/api/v3/ip_addresses/{ip}", self._ip, methods=["GET"]),
            Route("/api/v3/domains/{domain}", self._domain, methods=["GET"]),
        ]

    # Envelope -------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    def _gate(self, request: Request) -> Response | None:
        """None if the request may proceed; else the 401 or 429 to answer with."""
        key = request.headers.get("x-apikey")
        if not key:
            return self._error(401, "AuthenticationRequiredError", "X-Apikey header is missing")
        if key != self.api_key:
            return self._error(401, "WrongCredentialsError", "Wrong API key")
        now = self.clock()
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        if day != self._day:  # daily quotas reset at 00:00 UTC (documented)
            self._day, self._used_today = day, 0
        self._minute = [t for t in self._minute if now - t < 60]
        # [U] a request refused 429 does not count against the quota.
        if self._used_today >= self.daily_quota or (
            self.per_minute is not None and len(self._minute) >= self.per_minute
        ):
            return JSONResponse(_quota_json(), status_code=429)
        self._used_today += 1
        self._minute.append(now)
        return None

    def _object(self, request: Request, collection: str, key: str) -> Response:
        record = self.records.get((collection, key))
        if record is None:
            return self._error(404, "NotFoundError", f'{record_word(collection)} "{key}" not found')
        body = {
            "data": {
                "id": record.id,
                "type": record.type,
                "links": {"self": f"{self.base_url}/api/v3/{collection}/{record.id}"},
                "attributes": record.attributes,
            }
        }
        return JSONResponse(body)

    # Handlers -------------------------------------------------------------------------
    async def _file(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        digest = request.path_params["id"].lower()
        if not _HASH.match(digest):
            # [U] the documented code for a malformed argument; VirusTotal's exact answer
            # to a file id that is no hash is not documented.
            return self._error(400, "InvalidArgumentError", f"Invalid file id: {digest!r}")
        return self._object(request, "files", digest)

    async def _ip(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        try:
            ip = str(ipaddress.ip_address(request.path_params["ip"]))
        except ValueError:
            return self._error(400, "InvalidArgumentError", "Invalid IP address")  # [U]
        return self._object(request, "ip_addresses", ip)

    async def _domain(self, request: Request) -> Response:
        if (denied := self._gate(request)) is not None:
            return denied
        domain = request.path_params["domain"].lower()
        if not _DOMAIN.match(domain):
            return self._error(400, "InvalidArgumentError", "Invalid domain")  # [U]
        return self._object(request, "domains", domain)


def record_word(collection: str) -> str:
    """``File``, ``IP address`` or ``Domain``, as VirusTotal's not-found messages say."""
    return {"files": "File", "ip_addresses": "IP address", "domains": "Domain"}[collection]


def _quota_json() -> dict[str, Any]:
    return {
        "error": {
            "code": "QuotaExceededError",
            "message": (
                "You have exceeded one of your quotas (minute, daily or monthly). "
                "Daily quotas are reset every day at 00:00 UTC."
            ),
        }
    }


def _quota_body() -> bytes:
    return json.dumps(_quota_json()).encode()
