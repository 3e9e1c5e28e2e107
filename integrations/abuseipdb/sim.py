"""An AbuseIPDB API v2 imitation: the ``check`` endpoint, its errors and its daily limit.

Serves only the route in ``tests/vendor_specs/abuseipdb.operations.json``. Answers carry
the documented rate-limit headers; past the daily limit every check is refused 429 with
``Retry-After`` and ``X-RateLimit-Reset``. Where the documentation is silent, the choice
is the strictest reading and is marked [U].
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from integrations.simkit import Simulator

LAB_API_KEY = "stanch-lab-abuseipdb-key"
"""The key the simulator accepts (and ``PLUGIN.lab_settings`` uses); not a secret."""

DEMO_C2_IP = "203.0.113.66"
"""The demo's command-and-control address, reported here as abusive."""

FREE_DAILY_CHECKS = 1000
"""The free plan's documented daily ``check`` limit."""


@dataclass
class Reputation:
    """What reporters said of one address."""

    score: int
    reports: int
    distinct_users: int = 0
    whitelisted: bool = False
    tor: bool = False
    usage: str = "Data Center/Web Hosting/Transit"
    isp: str = "Example Hosting"
    last_reported: datetime | None = None


class AbuseIPDBSimulator(Simulator):
    """Stateful AbuseIPDB ``check``.

    Args:
        api_key: the key it accepts.
        daily_limit: checks a day (UTC) before every request gets 429.
        clock: epoch-seconds time source.
        seed_lab: report the demo's C2 address as abusive.
    """

    vendor = "abuseipdb"
    base_url = "https://abuseipdb.lab.invalid"

    def __init__(
        self,
        *,
        api_key: str = LAB_API_KEY,
        daily_limit: int = FREE_DAILY_CHECKS,
        clock: Callable[[], float] = time.time,
        seed_lab: bool = True,
    ) -> None:
        self.api_key = api_key
        self.daily_limit = daily_limit
        self.clock = clock
        self.reputations: dict[str, Reputation] = {}
        self._day = ""
        self._used = 0
        super().__init__()
        if seed_lab:
            self.report(DEMO_C2_IP, score=100, reports=212, distinct_users=57)

    def report(self, ip: str, *, score: int, reports: int, **more: Any) -> None:
        """Give an address a reputation."""
        self.reputations[str(ipaddress.ip_address(ip))] = Reputation(
            score, reports, last_reported=datetime.fromtimestamp(self.clock(), UTC), **more
        )

    # Rate limit -----------------------------------------------------------------------
    def _reset_at(self) -> int:
        """When the daily limit resets: [U] midnight UTC (the docs say "daily")."""
        today = datetime.fromtimestamp(self.clock(), UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return int((today + timedelta(days=1)).timestamp())

    def _limit_headers(self, remaining: int) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.daily_limit), "X-RateLimit-Remaining": str(remaining)}

    def throttle_headers(self, wait: float) -> dict[str, str]:
        """A spent daily limit: ``Retry-After`` seconds and the reset epoch, remaining 0."""
        return {
            "Retry-After": str(max(1, round(wait))),
            "X-RateLimit-Reset": str(int(self.clock() + wait)),
            **self._limit_headers(0),
        }

    def throttle_next(self, count: int = 1, *, wait: float = 2.0, path_prefix: str = "") -> None:
        """Answer the next ``count`` requests 429 as a spent daily limit."""
        body = json.dumps(_errors(429, _limit_detail(self.daily_limit))).encode()
        self.fail_next(
            count,
            status=429,
            headers=self.throttle_headers(wait),
            body=body,
            path_prefix=path_prefix,
        )

    def routes(self) -> list[BaseRoute]:
        """The documented ``check`` endpoint."""
        return [Route("/api/v2/check", self._check, methods=["GET"])]

    # Handlers -------------------------------------------------------------------------
    async def _check(self, request: Request) -> Response:
        if request.headers.get("key") != self.api_key:
            detail = (
                "Authentication failed. Your API key is either missing, incorrect, or revoked. "
                "Note: The APIv2 key differs from the APIv1 key."
            )
            return JSONResponse(_errors(401, detail), status_code=401)
        day = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")
        if day != self._day:
            self._day, self._used = day, 0
        if self._used >= self.daily_limit:
            wait = self._reset_at() - self.clock()
            return JSONResponse(
                _errors(429, _limit_detail(self.daily_limit)),
                status_code=429,
                headers=self.throttle_headers(wait),
            )
        query = request.query_params
        try:
            ip = str(ipaddress.ip_address(query.get("ipAddress", "")))
        except ValueError:
            # [U] an invalid request is assumed not to count against the limit.
            return JSONResponse(
                _errors(
                    422,
                    "The ip address must be a valid IPv4 or IPv6 address (e.g. "
                    "8.8.8.8 or 2001:4860:4860::8888).",
                    "ipAddress",
                ),
                status_code=422,
            )
        max_age = query.get("maxAgeInDays", "30")
        if not max_age.isdigit() or not 1 <= int(max_age) <= 365:
            return JSONResponse(
                _errors(422, "The max age in days must be between 1 and 365.", "maxAgeInDays"),
                status_code=422,
            )
        self._used += 1
        address = ipaddress.ip_address(ip)
        found = self.reputations.get(ip)
        # [U] RFC 5737/3849 documentation ranges count as public here, as the lab uses them.
        public = address.is_global or any(
            address in ipaddress.ip_network(n)
            for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
            if ipaddress.ip_network(n).version == address.version
        )
        data: dict[str, Any] = {
            "ipAddress": ip,
            "isPublic": public,
            "ipVersion": address.version,
            "isWhitelisted": found.whitelisted if found else False,
            "abuseConfidenceScore": found.score if found else 0,
            "countryCode": "ZZ" if public else None,
            "usageType": found.usage if found else None,
            "isp": found.isp if found else None,
            "domain": None,
            "hostnames": [],
            "isTor": found.tor if found else False,
            "totalReports": found.reports if found else 0,
            "numDistinctUsers": found.distinct_users if found else 0,
            "lastReportedAt": (
                found.last_reported.isoformat() if found and found.last_reported else None
            ),
        }
        headers = self._limit_headers(self.daily_limit - self._used)
        return JSONResponse({"data": data}, headers=headers)


def _limit_detail(limit: int) -> str:
    return (
        f"Daily rate limit of {limit} requests exceeded for this endpoint. "
        "See headers for additional details."
    )


def _errors(status: int, detail: str, parameter: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"detail": detail, "status": status}
    if parameter is not None:
        error["source"] = {"parameter": parameter}
    return {"errors": [error]}
