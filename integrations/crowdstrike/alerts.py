"""CrowdStrike Falcon alerts (Alerts API v2), normalised to OCSF Detection Findings."""

from __future__ import annotations

import json
import posixpath
from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.crowdstrike.client import VENDOR, call, fql_string, raise_body_errors, resources
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
)

ALERT_QUERY = "/alerts/queries/alerts/v2"
ALERT_ENTITIES = "/alerts/entities/alerts/v2"

# The query endpoint pages by offset and stops at 10,000 results.
_MAX_OFFSET = 10_000

_ACTIVITY_CREATE = 1

# ocsf-detection-finding.md §8.
_SEVERITY: dict[str, SeverityId] = {
    "informational": SeverityId.INFORMATIONAL,
    "low": SeverityId.LOW,
    "medium": SeverityId.MEDIUM,
    "high": SeverityId.HIGH,
    "critical": SeverityId.CRITICAL,
}
_STATUS: dict[str, tuple[int, str]] = {
    "new": (1, "New"),
    "in_progress": (2, "In Progress"),
    "reopened": (2, "In Progress"),
    "closed": (4, "Resolved"),
}
_OS_TYPE = {"windows": 100, "linux": 200, "mac": 300}
_DEVICE_TYPE = {"workstation": 2, "server": 1, "domain controller": 1}

# Alert fields that have an OCSF home below; every other field goes to `unmapped`.
_MAPPED = frozenset(
    {
        "composite_id",
        "cid",
        "timestamp",
        "created_timestamp",
        "updated_timestamp",
        "first_timestamp",
        "last_timestamp",
        "severity_name",
        "status",
        "display_name",
        "name",
        "description",
        "type",
        "falcon_host_link",
        "pattern_id",
        "mitre_attack",
        "tactic",
        "tactic_id",
        "technique",
        "technique_id",
        "device",
        "user_name",
        "user_id",
        "user_principal",
        "network_accesses",
        "filename",
        "filepath",
        "cmdline",
        "sha256",
        "md5",
        "local_process_id",
        "process_id",
        "parent_details",
        "source_ip_address",
        "source_ips",
        "confidence",
        "product",
        "source_products",
    }
)


class CrowdStrikeAlerts:
    """The AlertSource capability over the Falcon Alerts API v2.

    Args:
        client: from :func:`integrations.crowdstrike.client.connect`.
        page_size: composite ids asked for per query page (the vendor allows 10,000).
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient, *, page_size: int = 500) -> None:
        self._client = client
        self._page_size = page_size

    async def fetch_alerts(self, since: datetime) -> list[DetectionFinding]:
        """Alerts created at or after ``since``, oldest first, as Detection Findings.

        Pages through the query endpoint by offset (at most 10,000 alerts per call;
        poll again from the newest finding's time for more) and fetches each page's
        alerts by composite id. A naive ``since`` is taken as UTC.

        Vendor API: GET /alerts/queries/alerts/v2?filter=created_timestamp:>='<iso>'
        &sort=created_timestamp|asc&limit=<n>&offset=<k>, then
        POST /alerts/entities/alerts/v2 {"composite_ids": [...]}

        Raises:
            IntegrationError: a vendor call failed.
            NormalizationError: an alert lacks a field a finding needs (failing loudly
                rather than dropping an alert the poller would never see again).
        """
        when = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        findings: list[DetectionFinding] = []
        offset = 0
        while offset < _MAX_OFFSET:
            limit = min(self._page_size, _MAX_OFFSET - offset)
            response, body = await call(
                self._client,
                "GET",
                ALERT_QUERY,
                params={
                    "filter": f"created_timestamp:>={fql_string(stamp)}",
                    # Alerts sort with a pipe, unlike devices (`field.asc`).
                    "sort": "created_timestamp|asc",
                    "limit": limit,
                    "offset": offset,
                },
            )
            raise_body_errors(response, body)
            ids = [i for i in resources(body) if isinstance(i, str)]
            if not ids:
                break
            findings.extend(await self._details(ids))
            offset += len(ids)
            total = _total(body)
            if total is None or offset >= total:
                break
        return findings

    async def _details(self, composite_ids: list[str]) -> list[DetectionFinding]:
        """Vendor API: POST /alerts/entities/alerts/v2 {"composite_ids": [...]}."""
        response, body = await call(
            self._client, "POST", ALERT_ENTITIES, json={"composite_ids": composite_ids}
        )
        # An alert deleted between query and fetch is a per-id 404: nothing to report.
        raise_body_errors(response, body, ignore=(404,))
        by_id = {a.get("composite_id"): a for a in resources(body) if isinstance(a, dict)}
        return [normalize_alert(by_id[i]) for i in composite_ids if i in by_id]


def _total(body: dict[str, Any]) -> int | None:
    meta = body.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    total = pagination.get("total") if isinstance(pagination, dict) else None
    return total if isinstance(total, int) else None


def normalize_alert(payload: dict[str, Any]) -> DetectionFinding:
    """One Alerts API v2 entity as an OCSF 1.8.0 Detection Finding (class 2004).

    The mapping follows ``ocsf-detection-finding.md`` §8: ``severity_name`` gives
    ``severity_id``, ``status`` gives ``status_id``, ``composite_id`` is
    ``finding_info.uid``. The original JSON is kept in ``raw_data`` and the fields
    without an OCSF home under ``unmapped["crowdstrike"]``.

    Raises:
        NormalizationError: a required field (``composite_id``, ``timestamp``) is
            missing or malformed, or a mapped field has the wrong type; ``field``
            names it.
    """
    if not isinstance(payload, dict):
        raise NormalizationError(VENDOR, "<alert>", "alert is not a JSON object")
    uid = _text(payload, "composite_id", required=True)
    assert uid is not None
    stamp_field = "timestamp" if payload.get("timestamp") is not None else "created_timestamp"
    if payload.get(stamp_field) is None:
        raise NormalizationError(VENDOR, "timestamp", "missing (and no created_timestamp)")
    event_time = _millis(payload, stamp_field)
    assert event_time is not None

    title = _text(payload, "display_name") or _text(payload, "name")
    description = _text(payload, "description")
    severity_id, severity = _severity(payload)

    finding_info: dict[str, Any] = {"uid": uid}
    _put(finding_info, "title", title)
    _put(finding_info, "desc", description)
    _put(finding_info, "src_url", _text(payload, "falcon_host_link"))
    alert_type = _text(payload, "type")
    if alert_type:
        finding_info["types"] = [alert_type]
    attacks = _attacks(payload)
    if attacks:
        finding_info["attacks"] = attacks
    for ocsf_name, field in (
        ("created_time", "created_timestamp"),
        ("modified_time", "updated_timestamp"),
        ("first_seen_time", "first_timestamp"),
        ("last_seen_time", "last_timestamp"),
    ):
        _put(finding_info, ocsf_name, _millis(payload, field))
    pattern_id = payload.get("pattern_id")
    if title or pattern_id is not None:
        analytic: dict[str, Any] = {"type_id": 1, "type": "Rule"}
        _put(analytic, "name", _text(payload, "name") or title)
        _put(analytic, "uid", None if pattern_id is None else str(pattern_id))
        finding_info["analytic"] = analytic

    event: dict[str, Any] = {
        "activity_id": _ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": FINDINGS_CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": DETECTION_FINDING_CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": DETECTION_FINDING_CLASS_UID * 100 + _ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity,
        "time": event_time,
        "is_alert": True,
        "metadata": _metadata(payload, uid),
        "finding_info": finding_info,
    }
    _put(event, "message", description or title)
    status = _text(payload, "status")
    if status:
        status_id, caption = _STATUS.get(status.lower(), (99, status))
        event.update(status_id=status_id, status=caption, status_code=status)
    confidence = payload.get("confidence")
    if isinstance(confidence, int) and not isinstance(confidence, bool):
        event["confidence_score"] = confidence

    device = _device(payload)
    if device is not None:
        event["device"] = device
    user = _actor(payload)
    if user is not None:
        event["actor"] = {"user": user}
    evidences = _evidences(payload)
    if evidences:
        event["evidences"] = evidences
    event["observables"] = _observables(device, user, evidences)

    extras = {k: v for k, v in payload.items() if k not in _MAPPED}
    if extras:
        event["unmapped"] = {"crowdstrike": extras}
    event["raw_data"] = json.dumps(payload, separators=(",", ":"), default=str)

    return finding_from(VENDOR, event)


# Pieces ---------------------------------------------------------------------------------
def _text(
    payload: dict[str, Any], field: str, *, required: bool = False, prefix: str = ""
) -> str | None:
    value = payload.get(field)
    if value is None or value == "":
        if required:
            raise NormalizationError(VENDOR, prefix + field, "missing")
        return None
    if not isinstance(value, str):
        raise NormalizationError(
            VENDOR, prefix + field, f"expected a string, got {type(value).__name__}"
        )
    return value


def _millis(payload: dict[str, Any], field: str) -> int | None:
    raw = payload.get(field)
    if raw is None or raw == "":
        return None
    return iso_to_millis(raw, vendor=VENDOR, field=field)


def _put(target: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        target[key] = value


def _severity(payload: dict[str, Any]) -> tuple[int, str]:
    name = _text(payload, "severity_name")
    if name is None:
        return SeverityId.UNKNOWN, "Unknown"
    known = _SEVERITY.get(name.lower())
    if known is None:
        # OCSF convention: 99 Other, with the source's own word in the caption.
        return SeverityId.OTHER, name
    return known, known.name.capitalize()


def _metadata(payload: dict[str, Any], uid: str) -> dict[str, Any]:
    products = payload.get("source_products")
    name = products[0] if isinstance(products, list) and products else "Falcon"
    product: dict[str, Any] = {"name": str(name), "vendor_name": "CrowdStrike"}
    _put(product, "uid", _text(payload, "product"))
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": product,
        "profiles": ["host", "security_control"],
        "uid": uid,
        "log_name": "alerts",
    }
    _put(metadata, "tenant_uid", _text(payload, "cid"))
    _put(metadata, "original_time", _text(payload, "timestamp"))
    return metadata


def _technique(uid: str | None, name: str | None) -> dict[str, Any] | None:
    if not uid:
        return None
    found: dict[str, Any] = {"uid": uid}
    _put(found, "name", name)
    return found


def _attacks(payload: dict[str, Any]) -> list[dict[str, Any]]:
    entries = payload.get("mitre_attack")
    rows: list[dict[str, Any]] = (
        [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    )
    if not rows:
        rows = [payload]
    attacks: list[dict[str, Any]] = []
    for row in rows:
        tactic = _technique(_str(row.get("tactic_id")), _str(row.get("tactic")))
        technique_id = _str(row.get("technique_id"))
        technique_name = _str(row.get("technique"))
        attack: dict[str, Any] = {}
        _put(attack, "tactic", tactic)
        if technique_id and "." in technique_id:
            # "T1562.007" is a sub-technique; Falcon names it "Parent: Sub".
            parent_id = technique_id.split(".", 1)[0]
            parent_name, _, sub_name = (technique_name or "").partition(": ")
            _put(attack, "technique", _technique(parent_id, parent_name or None))
            _put(attack, "sub_technique", _technique(technique_id, sub_name or technique_name))
        else:
            _put(attack, "technique", _technique(technique_id, technique_name))
        if attack and attack not in attacks:
            attacks.append(attack)
    return attacks


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _device(payload: dict[str, Any]) -> dict[str, Any] | None:
    raw = payload.get("device")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise NormalizationError(VENDOR, "device", "expected an object")
    device: dict[str, Any] = {}
    _put(device, "uid", _text(raw, "device_id", prefix="device."))
    _put(device, "hostname", _text(raw, "hostname", prefix="device."))
    _put(device, "ip", _text(raw, "local_ip", prefix="device."))
    if not device:
        # A cloud alert's "device" names an account, not a host (kept in raw_data).
        return None
    kind = (_str(raw.get("product_type_desc")) or "").lower()
    device["type_id"] = _DEVICE_TYPE.get(kind, 0)
    platform = _str(raw.get("platform_name"))
    os_name = _str(raw.get("os_version")) or platform
    if os_name:
        device["os"] = {"name": os_name, "type_id": _OS_TYPE.get((platform or "").lower(), 0)}
    return device


def _actor(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The user behind the alert: the identity-provider login when Falcon knows it.

    ``user_principal`` is the UPN the user signs in with (what an identity provider
    looks users up by); ``user_name`` is the account on the host, which stays on the
    process.
    """
    user = _user(payload, "")
    principal = _text(payload, "user_principal")
    if principal:
        user = {**(user or {}), "name": principal}
    return user


def _user(source: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    user: dict[str, Any] = {}
    _put(user, "name", _text(source, "user_name", prefix=prefix))
    _put(user, "uid", _text(source, "user_id", prefix=prefix))
    return user or None


def _file(source: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    name = _text(source, "filename", prefix=prefix)
    path = _text(source, "filepath", prefix=prefix)
    hashes = []
    for field, algorithm_id, algorithm in (("sha256", 3, "SHA-256"), ("md5", 1, "MD5")):
        value = _text(source, field, prefix=prefix)
        if value:
            hashes.append({"algorithm_id": algorithm_id, "algorithm": algorithm, "value": value})
    if not (name or path or hashes):
        return None
    if not name and path:
        # OCSF requires a file name; Falcon paths may use either separator.
        name = posixpath.basename(path.replace("\\", "/"))
    # Last resort for a hash-only alert: the hash names the file.
    file: dict[str, Any] = {
        "name": name or (hashes[0]["value"] if hashes else path),
        "type_id": 1,
    }
    _put(file, "path", path)
    if hashes:
        file["hashes"] = hashes
    return file


def _process(source: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    process: dict[str, Any] = {}
    pid = source.get("local_process_id")
    if isinstance(pid, int) and not isinstance(pid, bool):
        process["pid"] = pid
    elif isinstance(pid, str) and pid.isdigit():
        process["pid"] = int(pid)
    _put(process, "uid", _text(source, "process_id", prefix=prefix))
    _put(process, "name", _text(source, "filename", prefix=prefix))
    _put(process, "cmd_line", _text(source, "cmdline", prefix=prefix))
    _put(process, "file", _file(source, prefix))
    if not process:
        # A user alone (a cloud alert's API caller) is the actor, not a process.
        return None
    _put(process, "user", _user(source, prefix))
    return process


def _evidences(payload: dict[str, Any]) -> list[dict[str, Any]]:
    evidences: list[dict[str, Any]] = []
    process = _process(payload, "")
    if process is not None:
        parent = payload.get("parent_details")
        if isinstance(parent, dict):
            _put(process, "parent_process", _process(parent, "parent_details."))
        evidences.append({"process": process})
    source_ips: list[str] = []
    single = _text(payload, "source_ip_address")
    if single:
        source_ips.append(single)
    many = payload.get("source_ips")
    if isinstance(many, list):
        source_ips.extend(ip for ip in many if isinstance(ip, str) and ip not in source_ips)
    evidences.extend({"src_endpoint": {"ip": ip}} for ip in source_ips)
    evidences.extend(_connections(payload))
    return evidences


def _connections(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """``network_accesses[]`` as connection evidences: who talked to whom, which way.

    An outbound connection's remote address is where the host called out to (a C2
    server: what a firewall should block); an inbound one's is who came in.

    Raises:
        NormalizationError: ``network_accesses`` is not a list of objects.
    """
    accesses = payload.get("network_accesses")
    if accesses is None:
        return []
    if not isinstance(accesses, list) or not all(isinstance(a, dict) for a in accesses):
        raise NormalizationError(VENDOR, "network_accesses", "must be a list of objects")
    found: list[dict[str, Any]] = []
    for n, access in enumerate(accesses):
        at = f"network_accesses[{n}]."
        local = _endpoint(access, "local", at)
        remote = _endpoint(access, "remote", at)
        if local is None and remote is None:
            continue
        direction = _text(access, "connection_direction", prefix=at)
        inbound = (direction or "").lower() == "inbound"
        evidence: dict[str, Any] = {}
        _put(evidence, "src_endpoint", remote if inbound else local)
        _put(evidence, "dst_endpoint", local if inbound else remote)
        info: dict[str, Any] = {}
        if direction:
            # OCSF network_connection_info direction_id: 1 inbound, 2 outbound.
            info = {"direction": direction, "direction_id": 1 if inbound else 2}
        _put(info, "protocol_name", _text(access, "protocol", prefix=at))
        if info:
            evidence["connection_info"] = info
        found.append(evidence)
    return found


def _endpoint(access: dict[str, Any], side: str, prefix: str) -> dict[str, Any] | None:
    endpoint: dict[str, Any] = {}
    _put(endpoint, "ip", _text(access, f"{side}_address", prefix=prefix))
    port = access.get(f"{side}_port")
    if isinstance(port, int) and not isinstance(port, bool):
        endpoint["port"] = port
    elif isinstance(port, str) and port.isdigit():
        endpoint["port"] = int(port)
    return endpoint or None


def _observables(
    device: dict[str, Any] | None,
    user: dict[str, Any] | None,
    evidences: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(kind: ObservableType, name: str, value: object) -> None:
        if isinstance(value, str) and value:
            found.append(
                {"type_id": int(kind), "type": _caption(kind), "name": name, "value": value}
            )

    if device is not None:
        add(ObservableType.HOSTNAME, "device.hostname", device.get("hostname"))
        add(ObservableType.IP_ADDRESS, "device.ip", device.get("ip"))
    if user is not None:
        add(ObservableType.USER_NAME, "actor.user.name", user.get("name"))
    for n, evidence in enumerate(evidences):
        at = f"evidences[{n}]"
        process = evidence.get("process")
        if isinstance(process, dict):
            add(ObservableType.COMMAND_LINE, f"{at}.process.cmd_line", process.get("cmd_line"))
            file = process.get("file")
            if isinstance(file, dict):
                add(ObservableType.FILE_NAME, f"{at}.process.file.name", file.get("name"))
                for h, digest in enumerate(file.get("hashes", [])):
                    # Playbooks block what observed(HASH) lists; only SHA-256 is blockable.
                    if digest.get("algorithm_id") != 3:
                        continue
                    add(
                        ObservableType.HASH,
                        f"{at}.process.file.hashes[{h}].value",
                        digest.get("value"),
                    )
        for side in ("src_endpoint", "dst_endpoint"):
            endpoint = evidence.get(side)
            if isinstance(endpoint, dict):
                add(ObservableType.IP_ADDRESS, f"{at}.{side}.ip", endpoint.get("ip"))
    return found


def _caption(kind: ObservableType) -> str:
    return {
        ObservableType.HOSTNAME: "Hostname",
        ObservableType.IP_ADDRESS: "IP Address",
        ObservableType.USER_NAME: "User Name",
        ObservableType.FILE_NAME: "File Name",
        ObservableType.HASH: "Hash",
        ObservableType.COMMAND_LINE: "Command Line",
    }.get(kind, kind.name.replace("_", " ").title())
