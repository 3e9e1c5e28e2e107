"""Okta's System Log as an :class:`~integrations.capabilities.AlertSource` of OCSF findings.

The System Log records every event in the org; :func:`is_security_relevant` keeps the few
that are detections, and :func:`normalize_event` turns each into a Detection Finding.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.errors import VendorUnavailable
from integrations.ocsf import (
    DETECTION_FINDING_CLASS_UID,
    FINDINGS_CATEGORY_UID,
    OCSF_VERSION,
    DetectionFinding,
    NormalizationError,
    ObservableType,
    SeverityId,
    finding_from,
    required_str,
)
from integrations.okta.client import VENDOR, okta_send

log = logging.getLogger(__name__)

SECURITY_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "security.threat.detected",  # ThreatInsight: request from a malicious IP
        "security.attack.start",  # ThreatInsight: password spray / credential stuffing
        "security.request.blocked",  # request from a blocklisted network zone
        "security.breached_credential.detected",
        "security.session.detect_client_roaming",  # ITP: session hijack indicator
        "user.account.lock",  # too many failed sign-ins
        "user.account.report_suspicious_activity_by_enduser",
        "user.mfa.attempt_bypass",
        "user.risk.detect",
        "user.risk.change",
        "user.session.impersonation.initiate",
    }
)
"""Okta event types that are security detections whatever their risk or severity."""

ALERT_RISK_LEVELS: frozenset[str] = frozenset({"MEDIUM", "HIGH"})
"""Risk levels at which any event (a sign-in, an MFA challenge) becomes an alert."""

_RISK_SEVERITY = {"LOW": SeverityId.LOW, "MEDIUM": SeverityId.MEDIUM, "HIGH": SeverityId.HIGH}
_LOG_SEVERITY = {
    "DEBUG": SeverityId.INFORMATIONAL,
    "INFO": SeverityId.INFORMATIONAL,
    "WARN": SeverityId.MEDIUM,
    "ERROR": SeverityId.HIGH,
}
_RISK_LEVEL_ID = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}  # OCSF risk_level_id: 1 Low, 2 Medium, 3 High
_SEVERITY_CAPTION = {
    SeverityId.UNKNOWN: "Unknown",
    SeverityId.INFORMATIONAL: "Informational",
    SeverityId.LOW: "Low",
    SeverityId.MEDIUM: "Medium",
    SeverityId.HIGH: "High",
}
# debugData.risk is a flattened string such as "{reasons=New Device, New IP, level=HIGH}".
_DEBUG_RISK_LEVEL = re.compile(r"\blevel=([A-Za-z]+)")


def _get(payload: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def risk_level(event: dict[str, Any]) -> str | None:
    """The event's risk level (LOW, MEDIUM, HIGH), the higher of its two sources.

    Okta puts risk in ``securityContext.risk.level`` (Identity Threat Protection) and in
    ``debugContext.debugData.risk`` (adaptive MFA / risk-based sign-on), the latter a
    string like ``{reasons=..., level=HIGH}``.
    """
    levels: list[str] = []
    structured = _get(event, "securityContext", "risk", "level")
    if isinstance(structured, str):
        levels.append(structured.upper())
    debug = _get(event, "debugContext", "debugData", "risk")
    if isinstance(debug, dict) and isinstance(debug.get("level"), str):
        levels.append(debug["level"].upper())
    elif isinstance(debug, str):
        match = _DEBUG_RISK_LEVEL.search(debug)
        if match:
            levels.append(match.group(1).upper())
    known = [level for level in levels if level in _RISK_SEVERITY]
    return max(known, key=lambda level: _RISK_SEVERITY[level]) if known else None


def is_security_relevant(event: dict[str, Any]) -> bool:
    """Whether a System Log event is an alert, not routine audit.

    An event is kept when either:

    * its risk level (:func:`risk_level`) is MEDIUM or HIGH — risky sign-ins, whether Okta
      let them through or not; or
    * its ``eventType`` is in :data:`SECURITY_EVENT_TYPES` (threat detections, account
      lockouts, MFA bypass attempts, user-reported suspicious activity, impersonation).

    Okta ``severity`` alone does not qualify: it marks every mistyped password as WARN.
    """
    if risk_level(event) in ALERT_RISK_LEVELS:
        return True
    return event.get("eventType") in SECURITY_EVENT_TYPES


def _required_str(payload: dict[str, Any], field: str) -> str:
    return required_str(payload, field, vendor=VENDOR)


def _published_ms(payload: dict[str, Any]) -> int:
    raw = _required_str(payload, "published")
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise NormalizationError(VENDOR, "published", f"not an ISO 8601 time: {raw!r}") from exc
    if when.tzinfo is None:
        raise NormalizationError(VENDOR, "published", "has no time zone")
    return int(when.timestamp() * 1000)


def _severity(event: dict[str, Any], risk: str | None) -> SeverityId:
    candidates = [SeverityId.UNKNOWN]
    if risk is not None:
        candidates.append(_RISK_SEVERITY[risk])
    severity = event.get("severity")
    if isinstance(severity, str) and severity.upper() in _LOG_SEVERITY:
        candidates.append(_LOG_SEVERITY[severity.upper()])
    # A HIGH-risk sign-in is logged with severity INFO: the stronger signal wins.
    return max(candidates)


def _src_endpoint(client: Any) -> dict[str, Any] | None:
    if not isinstance(client, dict):
        return None
    ip = client.get("ipAddress")
    if ip in (None, "", "null"):
        return None
    try:
        ipaddress.ip_address(str(ip))
    except ValueError as exc:
        raise NormalizationError(VENDOR, "client.ipAddress", f"not an IP address: {ip!r}") from exc
    endpoint: dict[str, Any] = {"ip": str(ip)}
    geo = client.get("geographicalContext")
    if isinstance(geo, dict):
        location = {
            "city": geo.get("city"),
            "region": geo.get("state"),
            # Okta gives the country's name; OCSF's location.country wants an ISO code,
            # so the name goes to desc (and to a Country observable).
            "desc": geo.get("country"),
            "postal_code": str(geo["postalCode"]) if geo.get("postalCode") else None,
            "lat": _get(geo, "geolocation", "lat"),
            "long": _get(geo, "geolocation", "lon"),
        }
        location = {k: v for k, v in location.items() if v not in (None, "")}
        if location:
            endpoint["location"] = location
    return endpoint


def normalize_event(payload: dict[str, Any]) -> DetectionFinding:
    """One Okta System Log event (LogEvent) as an OCSF Detection Finding.

    Mapping: ``uuid`` → ``finding_info.uid`` and ``metadata.uid``; ``published`` → ``time``;
    ``displayMessage`` (else ``eventType``) → title; severity per the OCSF reference §8
    (risk LOW 2 / MEDIUM 3 / HIGH 4, log severity DEBUG/INFO 1 / WARN 3 / ERROR 4, the
    higher wins); a ``User`` actor's ``alternateId`` → ``actor.user.name``; the client IP
    and its geolocation → an evidence ``src_endpoint`` and IP/country observables; the
    event as given → ``raw_data``.

    Raises:
        NormalizationError: a required field (``uuid``, ``published``, ``eventType``) is
            missing or malformed, or ``client.ipAddress`` is not an IP address.
    """
    if not isinstance(payload, dict):
        raise NormalizationError(VENDOR, "<event>", "not a JSON object")
    uid = _required_str(payload, "uuid")
    event_type = _required_str(payload, "eventType")
    time_ms = _published_ms(payload)
    display = payload.get("displayMessage")
    title = display if isinstance(display, str) and display.strip() else event_type
    risk = risk_level(payload)
    severity = _severity(payload, risk)

    finding_info: dict[str, Any] = {
        "uid": uid,
        "title": title,
        "types": [event_type],
        "created_time": time_ms,
    }
    detection = _get(payload, "securityContext", "risk", "detectionName")
    reasons = _get(payload, "securityContext", "risk", "reasons")
    if isinstance(detection, str) and detection:
        finding_info["analytic"] = {"type_id": 2, "type": "Behavioral", "name": detection}
    desc = "; ".join(
        part
        for part in (
            detection if isinstance(detection, str) else None,
            ", ".join(str(r) for r in reasons) if isinstance(reasons, list) else None,
            _get(payload, "outcome", "reason"),
        )
        if isinstance(part, str) and part
    )
    if desc:
        finding_info["desc"] = desc

    finding: dict[str, Any] = {
        "class_uid": DETECTION_FINDING_CLASS_UID,
        "category_uid": FINDINGS_CATEGORY_UID,
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": DETECTION_FINDING_CLASS_UID * 100 + 1,
        "severity_id": severity,
        "severity": _SEVERITY_CAPTION.get(severity, "Other"),
        "time": time_ms,
        "message": title,
        "is_alert": True,
        "status_id": 1,
        "status": "New",
        "metadata": {
            "version": OCSF_VERSION,
            # OCSF defines the top-level actor attribute in the host profile.
            "profiles": ["host"],
            "product": {"name": "Okta System Log", "vendor_name": "Okta", "uid": "okta"},
            "uid": uid,
            "log_name": "System Log",
            "original_time": payload["published"],
        },
        "finding_info": finding_info,
        "raw_data": json.dumps(payload, separators=(",", ":")),
    }
    if risk is not None:
        finding["risk_level_id"] = _RISK_LEVEL_ID[risk]
        finding["risk_level"] = risk.capitalize()

    observables: list[dict[str, Any]] = []
    evidence: dict[str, Any] = {}
    actor = payload.get("actor")
    actor_name = actor.get("alternateId") if isinstance(actor, dict) else None
    # Only human users become actor.user: playbooks act on user names, and a system
    # principal or an OAuth client is not an account one can suspend.
    if (
        isinstance(actor, dict)
        and str(actor.get("type", "")).lower() == "user"
        and isinstance(actor_name, str)
        and actor_name
        and actor_name != "unknown"
    ):
        user: dict[str, Any] = {"name": actor_name, "type_id": 1, "type": "User"}
        if actor.get("id"):
            user["uid"] = str(actor["id"])
        if actor.get("displayName"):
            user["display_name"] = actor["displayName"]
        finding["actor"] = {"user": user}
        evidence["user"] = dict(user)
        observables.append(
            {
                "name": "actor.user.name",
                "type_id": ObservableType.USER_NAME,
                "type": "User Name",
                "value": actor_name,
            }
        )
    endpoint = _src_endpoint(payload.get("client"))
    if endpoint is not None:
        evidence["src_endpoint"] = endpoint
        observables.append(
            {
                "name": "evidences[0].src_endpoint.ip",
                "type_id": ObservableType.IP_ADDRESS,
                "type": "IP Address",
                "value": endpoint["ip"],
            }
        )
        country = _get(endpoint, "location", "desc")
        if isinstance(country, str):
            observables.append(
                {
                    "name": "evidences[0].src_endpoint.location.desc",
                    "type_id": ObservableType.COUNTRY,
                    "type": "Country",
                    "value": country,
                }
            )
    if evidence:
        finding["evidences"] = [evidence]
    finding["observables"] = observables
    finding["unmapped"] = {
        "okta": {
            key: payload[key]
            for key in ("eventType", "legacyEventType", "severity", "outcome", "target")
            if payload.get(key) is not None
        }
        | (
            {"userBehaviors": payload["securityContext"]["userBehaviors"]}
            if _get(payload, "securityContext", "userBehaviors")
            else {}
        )
    }
    return finding_from(VENDOR, finding)


def _since_param(since: datetime) -> str:
    # Naive datetimes are taken as UTC: the System Log speaks UTC only.
    aware = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OktaSystemLog:
    """Pull security-relevant Okta System Log events as Detection Findings.

    Args:
        client: from :func:`integrations.okta.client.connect` (scope ``okta.logs.read``).
        page_size: events per page (Okta allows up to 1000).
        max_pages: pages read per :meth:`fetch_alerts`; the next poll continues from the
            last event's time, so a burst is read over several polls instead of forever.

    Attributes:
        rejected: events of the last fetch that were security-relevant but could not be
            normalised, each with the error naming the failing field, kept for inspection.
    """

    vendor = VENDOR

    def __init__(
        self, client: httpx.AsyncClient, *, page_size: int = 1000, max_pages: int = 20
    ) -> None:
        self._client = client
        self._page_size = page_size
        self._max_pages = max_pages
        self.rejected: list[tuple[dict[str, Any], NormalizationError]] = []

    async def fetch_alerts(self, since: datetime) -> list[DetectionFinding]:
        """Findings for security-relevant events published at or after ``since``.

        Vendor API: GET /api/v1/logs?since=...&limit=...&sortOrder=ASCENDING, then each
        ``Link: <...>; rel="next"`` until a page comes back empty (a polling query, one
        without ``until``, always has a next link).
        """
        self.rejected = []
        findings: dict[str, DetectionFinding] = {}
        url: str | None = "/api/v1/logs"
        params: dict[str, str] | None = {
            "since": _since_param(since),
            "limit": str(self._page_size),
            "sortOrder": "ASCENDING",
        }
        for _ in range(self._max_pages):
            if url is None:
                break
            response = await okta_send(self._client, "GET", url, params=params, ok=(200,))
            events = response.json()
            if not isinstance(events, list):
                raise VendorUnavailable("System Log did not return a list", vendor=VENDOR)
            for event in events:
                if not isinstance(event, dict) or not is_security_relevant(event):
                    continue
                try:
                    finding = normalize_event(event)
                except NormalizationError as exc:
                    log.warning("okta System Log event %s rejected: %s", event.get("uuid"), exc)
                    self.rejected.append((event, exc))
                    continue
                findings.setdefault(finding.uid, finding)
            if not events:
                break
            url, params = _next_link(response), None
        return list(findings.values())


def _next_link(response: httpx.Response) -> str | None:
    """The path and query of the ``rel="next"`` link, or ``None``.

    Only the path and query are kept: the request goes to the client's own org, so a
    forged or proxied link can never send our credentials to another host.
    """
    link = response.links.get("next")
    if not link or not link.get("url"):
        return None
    target = httpx.URL(link["url"])
    path = target.raw_path.decode("ascii")
    return path if path.startswith("/api/v1/logs") else None
