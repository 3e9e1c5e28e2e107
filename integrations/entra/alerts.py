"""Entra ID Protection risk detections as an alert source, normalised to OCSF 2004."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.entra.client import VENDOR, graph_send, odata_query
from integrations.errors import PermanentError
from integrations.ocsf import (
    DETECTION_FINDING_CLASS_UID,
    FINDINGS_CATEGORY_UID,
    OCSF_VERSION,
    DetectionFinding,
    NormalizationError,
    ObservableType,
    SeverityId,
    finding_from,
    iso_to_millis,
    required_str,
)

ACTIVITY_CREATE = 1

# riskLevel -> severity_id, per ocsf-detection-finding.md section 8. "hidden" means the
# tenant lacks the licence to see the level, so it is as unknown as "none".
SEVERITY: dict[str, SeverityId] = {
    "low": SeverityId.LOW,
    "medium": SeverityId.MEDIUM,
    "high": SeverityId.HIGH,
    "hidden": SeverityId.UNKNOWN,
    "none": SeverityId.UNKNOWN,
}

# riskState -> status_id (1 New, 2 In Progress, 4 Resolved), per the same table;
# confirmedSafe is an admin closing the detection, like dismissed.
STATUS: dict[str, int] = {
    "atRisk": 1,
    "confirmedCompromised": 2,
    "remediated": 4,
    "dismissed": 4,
    "confirmedSafe": 4,
}

# Detection fields with no OCSF home, kept under unmapped.entra.
UNMAPPED_FIELDS = (
    "requestId",
    "correlationId",
    "riskState",
    "riskDetail",
    "source",
    "detectionTimingType",
    "activity",
    "tokenIssuerType",
    "additionalInfo",
)


def _required_str(payload: dict[str, Any], field: str) -> str:
    return required_str(payload, field, vendor=VENDOR)


def _millis(payload: dict[str, Any], field: str, *, required: bool) -> int | None:
    raw = payload.get(field)
    if raw is None and not required:
        return None
    # Graph date-times are UTC even when unsuffixed, as iso_to_millis assumes.
    return iso_to_millis(_required_str(payload, field), vendor=VENDOR, field=field)


def _caption(severity: SeverityId) -> str:
    return severity.name.capitalize()


def normalize_detection(payload: dict[str, Any]) -> DetectionFinding:
    """One Graph ``riskDetection`` as an OCSF Detection Finding.

    ``id``, ``riskEventType`` and ``detectedDateTime`` are required; the user, address
    and location are used when present.

    Raises:
        NormalizationError: a required field is missing or malformed; ``field`` names it.
    """
    if not isinstance(payload, dict):
        raise NormalizationError(VENDOR, "$", "a risk detection must be a JSON object")
    uid = _required_str(payload, "id")
    event_type = _required_str(payload, "riskEventType")
    detected = _millis(payload, "detectedDateTime", required=True)
    assert detected is not None
    activity_time = _millis(payload, "activityDateTime", required=False)
    updated = _millis(payload, "lastUpdatedDateTime", required=False)

    level = payload.get("riskLevel")
    if level is not None and not isinstance(level, str):
        raise NormalizationError(VENDOR, "riskLevel", f"expected a string, got {level!r}")
    severity_id = SEVERITY.get(level, SeverityId.OTHER) if level else SeverityId.UNKNOWN
    severity = level if severity_id is SeverityId.OTHER else _caption(severity_id)

    state = payload.get("riskState")
    status_id = STATUS.get(state, 99) if isinstance(state, str) and state else None

    upn = payload.get("userPrincipalName") or None
    user: dict[str, Any] = {}
    if upn:
        user["name"] = upn
    if payload.get("userId"):
        user["uid"] = payload["userId"]
    if payload.get("userDisplayName"):
        user["full_name"] = payload["userDisplayName"]
    if user:
        user["type_id"] = 1  # riskDetections are about user accounts, never services

    unmapped = {f: payload[f] for f in UNMAPPED_FIELDS if payload.get(f) is not None}
    observables: list[dict[str, Any]] = []
    endpoint: dict[str, Any] = {}
    raw_ip = payload.get("ipAddress")
    if raw_ip:
        try:
            endpoint["ip"] = str(ipaddress.ip_address(str(raw_ip)))
        except ValueError:
            # Kept, but not as an IP: a firewall must never be asked to block it.
            unmapped["ipAddress"] = raw_ip
    location = _location(payload.get("location"))
    if location and endpoint:
        endpoint["location"] = location
    elif location:
        unmapped["location"] = payload["location"]

    evidence: dict[str, Any] = {}
    if user:
        evidence["user"] = user
        if upn:
            observables.append(
                {"name": "actor.user.name", "type_id": ObservableType.USER_NAME, "value": upn}
            )
    if endpoint:
        evidence["src_endpoint"] = endpoint
        observables.append(
            {
                "name": "evidences[0].src_endpoint.ip",
                "type_id": ObservableType.IP_ADDRESS,
                "value": endpoint["ip"],
            }
        )
    country = (location or {}).get("country")
    if country:
        path = "evidences[0].src_endpoint.location.country" if endpoint else "location"
        observables.append({"name": path, "type_id": ObservableType.COUNTRY, "value": country})

    finding_info: dict[str, Any] = {
        "uid": uid,
        "title": event_type,
        "types": [event_type],
        "created_time": detected,
    }
    if activity_time is not None:
        finding_info["first_seen_time"] = activity_time
    if updated is not None:
        finding_info["modified_time"] = updated

    who = upn or payload.get("userId") or "unknown user"
    message = f"Entra ID Protection: {event_type} for {who}"
    if endpoint:
        message += f" from {endpoint['ip']}"

    finding: dict[str, Any] = {
        "class_uid": DETECTION_FINDING_CLASS_UID,
        "category_uid": FINDINGS_CATEGORY_UID,
        "activity_id": ACTIVITY_CREATE,
        "type_uid": DETECTION_FINDING_CLASS_UID * 100 + ACTIVITY_CREATE,
        "severity_id": severity_id,
        "severity": severity,
        "time": detected,
        "message": message,
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "Entra ID Protection",
                "vendor_name": "Microsoft",
                "uid": "entra-id-protection",
            },
            "uid": uid,
            "log_name": "riskDetections",
        },
        "finding_info": finding_info,
        "evidences": [evidence] if evidence else [],
        "observables": observables,
        "unmapped": {"entra": unmapped} if unmapped else None,
        "raw_data": json.dumps(payload, separators=(",", ":")),
    }
    if status_id is not None:
        finding["status_id"] = status_id
        if status_id == 99:
            finding["status"] = state
    if user:
        finding["actor"] = {"user": user}
    return finding_from(VENDOR, finding)


def _location(raw: Any) -> dict[str, Any] | None:
    """Graph's ``location`` as an OCSF location object (city, region, country, lat/long)."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for ours, theirs in (("city", "city"), ("region", "state"), ("country", "countryOrRegion")):
        if isinstance(raw.get(theirs), str) and raw[theirs]:
            out[ours] = raw[theirs]
    coordinates = raw.get("geoCoordinates")
    if isinstance(coordinates, dict):
        for ours, theirs in (("lat", "latitude"), ("long", "longitude")):
            if isinstance(coordinates.get(theirs), int | float):
                out[ours] = coordinates[theirs]
    return out or None


class EntraRiskDetections:
    """Pull Identity Protection risk detections as Detection Findings.

    Args:
        client: from :func:`integrations.entra.client.connect`.
        page_size: ``$top`` per page (Graph allows at most 500).
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient, *, page_size: int = 500) -> None:
        if not 1 <= page_size <= 500:
            raise ValueError("page_size must be between 1 and 500")
        self._client = client
        self._page_size = page_size

    async def fetch_alerts(self, since: datetime) -> list[DetectionFinding]:
        """Risk detections detected at or after ``since``, following every page.

        Vendor API: ``GET /identityProtection/riskDetections?$filter=detectedDateTime ge
        {since}&$top={n}``, then each ``@odata.nextLink``. Identity Protection allows one
        request per second per tenant and its 429s carry no Retry-After, so a throttled
        page raises :class:`~integrations.errors.RateLimited` with ``retry_after=None``.

        Args:
            since: an aware datetime (naive values are taken as UTC).

        Raises:
            NormalizationError: a detection lacks a required field; nothing is dropped
                silently.
        """
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        # Whole seconds, rounded down: "ge" then returns a superset, never misses one.
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = odata_query({"$filter": f"detectedDateTime ge {stamp}", "$top": self._page_size})
        url: str | None = f"/identityProtection/riskDetections?{query}"
        findings: list[DetectionFinding] = []
        while url is not None:
            response = await graph_send(self._client, "GET", url)
            body = response.json()
            findings.extend(normalize_detection(item) for item in body.get("value") or [])
            url = self._next(body.get("@odata.nextLink"))
        return findings

    def _next(self, link: Any) -> str | None:
        if not link:
            return None
        base = self._client.base_url
        target = httpx.URL(str(link))
        # The bearer token must only ever travel to the Graph host it was issued for.
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise PermanentError(
                f"@odata.nextLink points outside {base.scheme}://{base.host}", vendor=VENDOR
            )
        return str(link)
