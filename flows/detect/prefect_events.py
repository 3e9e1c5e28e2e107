"""Incidents from Prefect events: another system (or a schedule) asks a playbook to run.

A playbook whose trigger names ``events`` runs when a Prefect automation passes it a
matching event (``prefect.yaml``'s ``playbook-on-event`` deployment, or ``stanch serve``).
The event becomes an incident of one OCSF Detection Finding: the tenant from the
resource's ``stanch.tenant`` label, the severity from ``stanch.severity``, the title and
the entities (``hostnames``, ``users``, ``ips``, ``sha256s``) from the payload. Anyone with
Prefect API access can emit an event, so every field is checked and nothing else is read.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flows.detect.intake import TENANT_PATTERN
from flows.errors import AlertRejected
from flows.models import Incident
from integrations.ocsf import DetectionFinding, ObservableType, SeverityId

MAX_ENTITIES = 50
"""At most this many values of each entity kind are taken from one event."""

_TENANT = re.compile(TENANT_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@\\-]{0,252}$")  # a host name or a login
_ENTITIES: Mapping[str, ObservableType] = {
    "hostnames": ObservableType.HOSTNAME,
    "users": ObservableType.USER_NAME,
    "ips": ObservableType.IP_ADDRESS,
    "sha256s": ObservableType.HASH,
}


def _reject(field: str, reason: str) -> AlertRejected:
    return AlertRejected(field, reason, source="prefect-event")


def _entity(kind: str, index: int, value: Any) -> str:
    where = f"payload.{kind}[{index}]"
    if not isinstance(value, str):
        raise _reject(where, f"{type(value).__name__}, not a string")
    if kind == "ips":
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError as exc:
            raise _reject(where, f"{value[:80]!r} is not an IP address") from exc
    if kind == "sha256s":
        if not _SHA256.match(value.lower()):
            raise _reject(where, "not a SHA-256 (64 hex digits)")
        return value.lower()
    if not _NAME.match(value):
        raise _reject(where, f"{value[:80]!r} is not a host name or login")
    return value


def finding_from_event(event: Mapping[str, Any]) -> tuple[str, DetectionFinding]:
    """The tenant and the OCSF finding an event stands for.

    Args:
        event: the event as a Prefect automation renders ``{{ event }}`` (``id``,
            ``event``, ``occurred``, ``resource``, ``payload``).

    Raises:
        AlertRejected: a field is missing or not what it must be; ``field`` names it.
    """
    if not isinstance(event, Mapping):
        raise _reject("(root)", "the event is not an object")
    resource = event.get("resource")
    if not isinstance(resource, Mapping):
        raise _reject("resource", "missing")
    tenant = resource.get("stanch.tenant")
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise _reject("resource.stanch.tenant", "a tenant id is required")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise _reject("event", "the event name is missing")
    severity_name = resource.get("stanch.severity", "medium")
    try:
        severity = SeverityId[str(severity_name).upper()]
    except KeyError as exc:
        raise _reject("resource.stanch.severity", f"{severity_name!r} is not a severity") from exc
    payload = event.get("payload") or {}
    if not isinstance(payload, Mapping):
        raise _reject("payload", "not an object")
    title = payload.get("title", name)
    if not isinstance(title, str):
        raise _reject("payload.title", "not a string")
    occurred = event.get("occurred")
    try:
        at = datetime.fromisoformat(str(occurred)) if occurred else None
    except ValueError as exc:
        raise _reject("occurred", "not an ISO 8601 time") from exc
    if at is None:
        raise _reject("occurred", "missing")
    observables: list[dict[str, Any]] = []
    for kind, type_id in _ENTITIES.items():
        values = payload.get(kind) or []
        if not isinstance(values, list):
            raise _reject(f"payload.{kind}", "not a list")
        for index, value in enumerate(values[:MAX_ENTITIES]):
            observables.append(
                {"type_id": int(type_id), "name": kind, "value": _entity(kind, index, value)}
            )
    event_id = str(event.get("id") or "")
    finding = DetectionFinding.model_validate(
        {
            "class_uid": 2004,
            "category_uid": 2,
            "activity_id": 1,
            "type_uid": 200401,
            "severity_id": int(severity),
            "time": int(at.astimezone(UTC).timestamp() * 1000),
            "metadata": {
                "version": "1.8.0",
                "product": {"name": name, "vendor_name": "Prefect event", "uid": "prefect"},
                "tenant_uid": tenant,
            },
            "finding_info": {"uid": event_id or name, "title": title[:200], "types": [name]},
            "observables": observables,
        }
    )
    return tenant, finding


def incident_from_event(incident_id: str, event: Mapping[str, Any]) -> Incident:
    """The incident an event stands for, with the id the store allocated.

    Raises:
        AlertRejected: the event is not one stanch can act on (see
            :func:`finding_from_event`).
    """
    tenant, finding = finding_from_event(event)
    return Incident(
        id=incident_id,
        tenant=tenant,
        title=finding.finding_info.title or finding.uid,
        alerts=[finding],
    )
