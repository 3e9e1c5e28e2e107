"""Defender for Endpoint alerts, pulled and normalised to OCSF Detection Findings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.defender.client import VENDOR, describe, retry_after
from integrations.errors import VendorUnavailable
from integrations.http import send
from integrations.ocsf import (
    DETECTION_FINDING_CLASS_UID,
    FINDINGS_CATEGORY_UID,
    OCSF_VERSION,
    STATUS_CAPTIONS,
    DetectionFinding,
    NormalizationError,
    ObservableType,
    SeverityId,
    finding_from,
    iso_to_millis,
)

PAGE_SIZE = 1000
"""Alerts per page; MDE allows up to 10,000."""

SEVERITY: dict[str, SeverityId] = {
    "UnSpecified": SeverityId.UNKNOWN,
    "Informational": SeverityId.INFORMATIONAL,
    "Low": SeverityId.LOW,
    "Medium": SeverityId.MEDIUM,
    "High": SeverityId.HIGH,
}
"""MDE alert ``severity`` to OCSF (``ocsf-detection-finding.md`` section 8)."""

STATUS: dict[str, int] = {"Unknown": 0, "New": 1, "InProgress": 2, "Resolved": 4}
"""MDE alert ``status`` to OCSF ``status_id``."""

_PRODUCT = {
    "name": "Microsoft Defender for Endpoint",
    "vendor_name": "Microsoft",
    "uid": "defender-for-endpoint",
}


class DefenderAlerts:
    """The alert source on Microsoft Defender for Endpoint.

    Args:
        client: from :func:`integrations.defender.client.connect`.
        page_size: ``$top`` per request.
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient, *, page_size: int = PAGE_SIZE) -> None:
        self._client = client
        self._page_size = page_size

    async def fetch_alerts(self, since: datetime) -> list[DetectionFinding]:
        """Alerts created at or after ``since``, every page, as Detection Findings.

        Vendor API: GET /api/alerts?$filter=alertCreationTime ge <since>&$top&$skip
        &$expand=evidence

        Pages with ``$skip`` until a short page; an ``@odata.nextLink``, when the API
        sends one, is followed instead.

        Raises:
            NormalizationError: an alert lacks a field a finding needs.
        """
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)  # naive means UTC
        literal = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {
            "$filter": f"alertCreationTime ge {literal}",
            "$top": str(self._page_size),
            "$expand": "evidence",
        }
        findings: list[DetectionFinding] = []
        skip = 0
        url: str = "/api/alerts"
        next_params: dict[str, str] | None = {**params, "$skip": "0"}
        while True:
            response = await send(
                self._client,
                "GET",
                url,
                vendor=VENDOR,
                retry_after=retry_after,
                describe=describe,
                params=next_params,
            )
            body = response.json()
            page = body.get("value") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise VendorUnavailable("alerts response lacks value[]", vendor=VENDOR)
            findings.extend(normalize_alert(item) for item in page)
            next_link = body.get("@odata.nextLink")
            if isinstance(next_link, str) and next_link:
                # The link carries its own query (filter and position).
                url, next_params = next_link, None
                continue
            if next_params is None or len(page) < self._page_size:
                # A linked sequence ends at the page without a link.
                return findings
            skip += self._page_size
            next_params = {**params, "$skip": str(skip)}


def _need(payload: dict[str, Any], field: str) -> Any:
    value = payload.get(field)
    if value is None or value == "":
        raise NormalizationError(VENDOR, field, "missing")
    return value


def _millis(value: object, field: str) -> int:
    return iso_to_millis(value, vendor=VENDOR, field=field)


def _optional_millis(payload: dict[str, Any], field: str) -> int | None:
    value = payload.get(field)
    return None if value is None else _millis(value, field)


def _hashes(item: dict[str, Any]) -> list[dict[str, Any]]:
    hashes = []
    for key, algorithm_id, algorithm in (("sha256", 3, "SHA-256"), ("sha1", 2, "SHA-1")):
        value = item.get(key)
        if isinstance(value, str) and value:
            hashes.append({"algorithm_id": algorithm_id, "algorithm": algorithm, "value": value})
    return hashes


def _evidence(item: dict[str, Any], index: int) -> dict[str, Any] | None:
    """One MDE ``evidence[]`` entity as an OCSF evidence, or ``None`` if it names nothing."""
    kind = item.get("entityType")
    file = None
    if item.get("fileName"):
        file = {"name": item["fileName"], "type_id": 1, "hashes": _hashes(item)}
        if item.get("filePath"):
            file["path"] = item["filePath"]
    user = None
    if item.get("accountName") or item.get("userPrincipalName") or item.get("userSid"):
        user = {
            k: v
            for k, v in (
                ("name", item.get("accountName")),
                ("uid", item.get("userSid") or item.get("aadUserId")),
                ("email_addr", item.get("userPrincipalName")),
            )
            if v
        }
    if kind == "Process" and item.get("processId") is not None:
        process: dict[str, Any] = {"pid": item["processId"]}
        if item.get("processCommandLine"):
            process["cmd_line"] = item["processCommandLine"]
        if file:
            process["file"] = file
            process["name"] = file["name"]
        if user:
            process["user"] = user
        return {"process": process}
    if kind == "File" and file:
        return {"file": file}
    if kind == "User" and user:
        return {"user": user}
    if kind == "Ip" and item.get("ipAddress"):
        return {"dst_endpoint": {"ip": item["ipAddress"]}}
    if kind == "Url" and item.get("url"):
        return {"url": {"url_string": item["url"]}}
    if file:
        return {"file": file}
    if user:
        return {"user": user}
    if not isinstance(kind, str):
        raise NormalizationError(VENDOR, f"evidence[{index}].entityType", "missing")
    return None


def _attacks(techniques: object) -> list[dict[str, Any]]:
    if techniques is None:
        return []
    if not isinstance(techniques, list):
        raise NormalizationError(VENDOR, "mitreTechniques", "expected a list")
    attacks = []
    for uid in techniques:
        if not isinstance(uid, str) or not uid:
            continue
        base, _, sub = uid.partition(".")
        attack: dict[str, Any] = {"technique": {"uid": base}}
        if sub:
            attack["sub_technique"] = {"uid": uid}
        attacks.append(attack)
    return attacks


def normalize_alert(payload: dict[str, Any]) -> DetectionFinding:
    """One MDE alert (``GET /api/alerts`` item) as an OCSF Detection Finding.

    Raises:
        NormalizationError: a required vendor field (``id``, ``alertCreationTime``,
            ``severity``) is missing or malformed; ``field`` names it.
    """
    if not isinstance(payload, dict):
        raise NormalizationError(VENDOR, "$", "alert is not a JSON object")
    uid = _need(payload, "id")
    if not isinstance(uid, str):
        raise NormalizationError(VENDOR, "id", f"expected a string, got {uid!r}")
    created = _millis(_need(payload, "alertCreationTime"), "alertCreationTime")
    severity = _need(payload, "severity")
    if not isinstance(severity, str):
        raise NormalizationError(VENDOR, "severity", f"expected a string, got {severity!r}")
    severity_id = SEVERITY.get(severity, SeverityId.OTHER)
    status = payload.get("status")
    status_id = STATUS.get(status, 99) if isinstance(status, str) else 0
    activity_id = 3 if status == "Resolved" else 1

    finding_info: dict[str, Any] = {
        "uid": uid,
        "title": payload.get("title") or payload.get("threatName") or payload.get("description"),
        "desc": payload.get("description"),
        "attacks": _attacks(payload.get("mitreTechniques")),
        "created_time": created,
    }
    category = payload.get("category")
    if isinstance(category, str) and category and category != "null":
        finding_info["types"] = [category]
    for field, target in (
        ("firstEventTime", "first_seen_time"),
        ("lastEventTime", "last_seen_time"),
        ("lastUpdateTime", "modified_time"),
    ):
        stamp = _optional_millis(payload, field)
        if stamp is not None:
            finding_info[target] = stamp
    if payload.get("detectorId") or payload.get("detectionSource"):
        finding_info["analytic"] = {
            "type_id": 0,
            **({"uid": payload["detectorId"]} if payload.get("detectorId") else {}),
            **({"name": payload["detectionSource"]} if payload.get("detectionSource") else {}),
        }

    device: dict[str, Any] | None = None
    hostname, machine_id = payload.get("computerDnsName"), payload.get("machineId")
    if hostname or machine_id:
        device = {"type_id": 0}
        if machine_id:
            device["uid"] = machine_id
        if hostname:
            device["hostname"] = device["name"] = hostname

    evidence = payload.get("evidence") or []
    if not isinstance(evidence, list):
        raise NormalizationError(VENDOR, "evidence", "expected a list")
    evidences = []
    for index, item in enumerate(evidence):
        if not isinstance(item, dict):
            raise NormalizationError(VENDOR, f"evidence[{index}]", "expected an object")
        mapped = _evidence(item, index)
        if mapped is not None:
            evidences.append(mapped)

    actor = None
    related = payload.get("relatedUser")
    if isinstance(related, dict) and related.get("userName"):
        actor = {"user": {"name": related["userName"]}}
        if related.get("domainName"):
            actor["user"]["domain"] = related["domainName"]

    observables = []
    if hostname:
        observables.append(
            {"name": "device.hostname", "type_id": ObservableType.HOSTNAME, "value": hostname}
        )

    unmapped = {
        key: payload[key]
        for key in (
            "incidentId",
            "investigationId",
            "investigationState",
            "assignedTo",
            "classification",
            "determination",
            "detectionSource",
            "threatFamilyName",
            "rbacGroupName",
        )
        if payload.get(key) is not None
    }

    event: dict[str, Any] = {
        "class_uid": DETECTION_FINDING_CLASS_UID,
        "category_uid": FINDINGS_CATEGORY_UID,
        "activity_id": activity_id,
        "type_uid": DETECTION_FINDING_CLASS_UID * 100 + activity_id,
        "severity_id": severity_id,
        "severity": severity_id.name.title() if severity_id != SeverityId.OTHER else severity,
        "status_id": status_id,
        "status": STATUS_CAPTIONS.get(status_id, "Other"),
        "time": created,
        "is_alert": True,
        "message": finding_info["title"],
        "metadata": {
            "version": OCSF_VERSION,
            "product": _PRODUCT,
            "profiles": ["host"],
            "uid": uid,
            "log_name": "alerts",
            **({"tenant_uid": payload["aadTenantId"]} if payload.get("aadTenantId") else {}),
        },
        "finding_info": finding_info,
        "device": device,
        "actor": actor,
        "evidences": evidences,
        "observables": observables,
        "unmapped": {"defender": unmapped} if unmapped else None,
        "raw_data": json.dumps(payload, separators=(",", ":")),
    }
    return finding_from(VENDOR, event)
