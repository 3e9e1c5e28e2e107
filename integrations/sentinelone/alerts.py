"""SentinelOne threats, pulled with cursor pagination and normalised to OCSF findings."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx

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
from integrations.sentinelone.client import API, VENDOR, describe, retry_after

PAGE_SIZE = 100
"""Threats per page (S1 allows up to 1,000)."""

SEVERITY: dict[str, SeverityId] = {
    "malicious": SeverityId.HIGH,
    "suspicious": SeverityId.MEDIUM,
}
"""``threatInfo.confidenceLevel`` to OCSF severity (``ocsf-detection-finding.md`` section 8)."""

CONFIDENCE: dict[str, int] = {"malicious": 3, "suspicious": 2}
"""``confidenceLevel`` to OCSF ``confidence_id`` (High, Medium)."""

STATUS: dict[str, int] = {"unresolved": 1, "in_progress": 2, "resolved": 4}
"""``threatInfo.incidentStatus`` to OCSF ``status_id``."""

_OS_TYPE = {"windows": 100, "windows_legacy": 100, "linux": 200, "macos": 300}
_TECHNIQUE = re.compile(r"^T\d{4}(?:\.\d{3})?$")
_PRODUCT = {"name": "Singularity Endpoint", "vendor_name": "SentinelOne", "uid": "sentinelone"}


class SentinelOneAlerts:
    """The alert source on SentinelOne threats.

    Args:
        client: from :func:`integrations.sentinelone.client.connect`.
        page_size: ``limit`` per request.
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient, *, page_size: int = PAGE_SIZE) -> None:
        self._client = client
        self._page_size = page_size

    async def fetch_alerts(self, since: datetime) -> list[DetectionFinding]:
        """Threats created after ``since``, every page, as Detection Findings.

        Vendor API: GET /web/api/v2.1/threats?createdAt__gt=<since>&limit&cursor

        Follows ``pagination.nextCursor`` until it is null (``skip`` stops at 1,000).

        Raises:
            NormalizationError: a threat lacks a field a finding needs.
        """
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)  # naive means UTC
        params = {
            "createdAt__gt": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "limit": str(self._page_size),
            "sortBy": "createdAt",
            "sortOrder": "asc",
        }
        findings: list[DetectionFinding] = []
        seen: set[str] = set()
        while True:
            response = await send(
                self._client,
                "GET",
                f"{API}/threats",
                vendor=VENDOR,
                retry_after=retry_after,
                describe=describe,
                params=params,
            )
            body = response.json()
            page = body.get("data") if isinstance(body, dict) else None
            if not isinstance(page, list):
                raise VendorUnavailable("threats response lacks data[]", vendor=VENDOR)
            findings.extend(normalize_threat(item) for item in page)
            pagination = body.get("pagination") or {}
            cursor = pagination.get("nextCursor") if isinstance(pagination, dict) else None
            if not cursor:
                return findings
            if cursor in seen:
                raise VendorUnavailable(f"cursor {cursor!r} repeated", vendor=VENDOR)
            seen.add(cursor)
            params = {**params, "cursor": str(cursor)}


def _millis(value: object, field: str) -> int:
    return iso_to_millis(value, vendor=VENDOR, field=field)


def _object(payload: dict[str, Any], field: str, *, required: bool) -> dict[str, Any]:
    value = payload.get(field)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise NormalizationError(VENDOR, field, "missing" if value is None else "not an object")
    return value


def _file(info: dict[str, Any]) -> dict[str, Any] | None:
    hashes = [
        {"algorithm_id": algorithm_id, "algorithm": algorithm, "value": info[key]}
        for key, algorithm_id, algorithm in (
            ("sha256", 3, "SHA-256"),
            ("sha1", 2, "SHA-1"),
            ("md5", 1, "MD5"),
        )
        if isinstance(info.get(key), str) and info[key]
    ]
    path = info.get("filePath")
    name = path.replace("\\", "/").rsplit("/", 1)[-1] if isinstance(path, str) else None
    name = name or info.get("threatName")
    if not name and not hashes:
        return None
    file: dict[str, Any] = {"name": name or "unknown", "type_id": 1, "hashes": hashes}
    if isinstance(path, str) and path:
        file["path"] = path
    return file


def _attacks(indicators: object) -> list[dict[str, Any]]:
    attacks: list[dict[str, Any]] = []
    if not isinstance(indicators, list):
        return attacks
    for indicator in indicators:
        tactics = indicator.get("tactics") if isinstance(indicator, dict) else None
        for tactic in tactics or []:
            if not isinstance(tactic, dict):
                continue
            for technique in tactic.get("techniques") or []:
                uid = technique.get("name") if isinstance(technique, dict) else None
                if isinstance(uid, str) and _TECHNIQUE.match(uid):
                    base, _, sub = uid.partition(".")
                    attack: dict[str, Any] = {"technique": {"uid": base}}
                    if sub:
                        attack["sub_technique"] = {"uid": uid}
                    if attack not in attacks:
                        attacks.append(attack)
    return attacks


def normalize_threat(payload: dict[str, Any]) -> DetectionFinding:
    """One S1 threat (``GET /web/api/v2.1/threats`` item) as an OCSF Detection Finding.

    Raises:
        NormalizationError: a required vendor field (``id``, ``threatInfo``,
            ``threatInfo.createdAt``) is missing or malformed; ``field`` names it.
    """
    if not isinstance(payload, dict):
        raise NormalizationError(VENDOR, "$", "threat is not a JSON object")
    uid = payload.get("id")
    if not isinstance(uid, str) or not uid:
        raise NormalizationError(VENDOR, "id", "missing" if uid is None else "not a string")
    info = _object(payload, "threatInfo", required=True)
    created = _millis(info.get("createdAt"), "threatInfo.createdAt")
    confidence = info.get("confidenceLevel")
    if confidence is not None and not isinstance(confidence, str):
        raise NormalizationError(VENDOR, "threatInfo.confidenceLevel", "not a string")
    severity_id = (
        SeverityId.UNKNOWN
        if confidence in (None, "", "n/a")
        else SEVERITY.get(str(confidence), SeverityId.OTHER)
    )
    incident = info.get("incidentStatus")
    status_id = STATUS.get(incident, 99) if isinstance(incident, str) else 0
    activity_id = 3 if incident == "resolved" else 1
    realtime = _object(payload, "agentRealtimeInfo", required=False)
    detection = _object(payload, "agentDetectionInfo", required=False)

    title = info.get("threatName")
    finding_info: dict[str, Any] = {
        "uid": uid,
        "title": title,
        "attacks": _attacks(payload.get("indicators")),
        "created_time": created,
    }
    if info.get("classification"):
        finding_info["types"] = [info["classification"]]
    if info.get("updatedAt"):
        finding_info["modified_time"] = _millis(info["updatedAt"], "threatInfo.updatedAt")
    if info.get("identifiedAt"):
        finding_info["first_seen_time"] = _millis(info["identifiedAt"], "threatInfo.identifiedAt")

    device: dict[str, Any] | None = None
    hostname, agent_id = realtime.get("agentComputerName"), realtime.get("agentId")
    if hostname or agent_id:
        device = {"type_id": 0}
        if agent_id:
            device["uid"] = str(agent_id)
        if hostname:
            device["hostname"] = device["name"] = hostname
        os_type = realtime.get("agentOsType")
        if isinstance(os_type, str):
            device["os"] = {
                "name": realtime.get("agentOsName") or os_type,
                "type_id": _OS_TYPE.get(os_type, 99),
            }
        if detection.get("agentIpV4"):
            device["ip"] = detection["agentIpV4"]

    evidences: list[dict[str, Any]] = []
    file = _file(info)
    if file is not None:
        process_user = info.get("processUser")
        originator = info.get("originatorProcess")
        if isinstance(originator, str) and originator:
            process: dict[str, Any] = {"name": originator, "file": file}
            if info.get("maliciousProcessArguments"):
                process["cmd_line"] = info["maliciousProcessArguments"]
            if process_user:
                process["user"] = {"name": process_user}
            evidences.append({"process": process})
        else:
            evidence: dict[str, Any] = {"file": file}
            if process_user:
                evidence["user"] = {"name": process_user}
            evidences.append(evidence)
    external_ip = detection.get("externalIp")
    if external_ip:
        evidences.append({"src_endpoint": {"ip": external_ip}})

    observables = []
    if hostname:
        observables.append(
            {"name": "device.hostname", "type_id": ObservableType.HOSTNAME, "value": hostname}
        )
    # Hashes stay on evidences[].file only: observed(HASH) reads SHA-256 from there, and a
    # SHA-1 observable would reach EDRs whose block_hash takes SHA-256 only.

    unmapped = {
        key: info[key]
        for key in (
            "threatId",
            "classification",
            "mitigationStatus",
            "analystVerdict",
            "detectionType",
            "initiatedBy",
            "storyline",
            "engines",
        )
        if info.get(key) is not None
    }

    event: dict[str, Any] = {
        "class_uid": DETECTION_FINDING_CLASS_UID,
        "category_uid": FINDINGS_CATEGORY_UID,
        "activity_id": activity_id,
        "type_uid": DETECTION_FINDING_CLASS_UID * 100 + activity_id,
        "severity_id": severity_id,
        "severity": severity_id.name.title() if severity_id != SeverityId.OTHER else confidence,
        "confidence_id": CONFIDENCE.get(str(confidence), 0),
        "status_id": status_id,
        "status": STATUS_CAPTIONS.get(status_id, "Other"),
        "time": created,
        "is_alert": True,
        "message": title,
        "metadata": {
            "version": OCSF_VERSION,
            "product": _PRODUCT,
            "profiles": ["host"],
            "uid": uid,
            "log_name": "threats",
            **({"tenant_uid": realtime["accountId"]} if realtime.get("accountId") else {}),
        },
        "finding_info": finding_info,
        "device": device,
        "evidences": evidences,
        "observables": observables,
        "unmapped": {"sentinelone": unmapped} if unmapped else None,
        "raw_data": json.dumps(payload, separators=(",", ":")),
    }
    return finding_from(VENDOR, event)
