"""The Prefect events stanch emits, for automations a SOC hangs on incidents.

Every event's resource is the incident, ``stanch.incident.<id>``, labelled with its tenant,
severity and playbook (``stanch.tenant``, ``stanch.severity``, ``stanch.playbook``), so a
Prefect automation can match ``stanch.approval.requested`` for one tenant only. Inside a
flow run Prefect relates the event to the run, its flow and its deployment by itself.

Payloads carry ids, names, counts, plan hashes and statuses: never a secret, never an
alert's raw payload. A target label or title is text from an alert; it is data here, and
an automation's template must treat it so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from prefect.events import emit_event

from flows.models import ActionResult, ActionStatus, Incident
from integrations.ocsf import SeverityId

log = logging.getLogger("stanch.events")

EVENTS: tuple[str, ...] = (
    "stanch.incident.opened",
    "stanch.incident.joined",
    "stanch.approval.requested",
    "stanch.approval.decided",
    "stanch.action.executed",
    "stanch.action.refused",
    "stanch.action.failed",
    "stanch.incident.closed",
    "stanch.sla.breached",
)
"""Every event name stanch emits (documented in the README's events section)."""

_ACTION_EVENTS: Mapping[ActionStatus, str] = {
    ActionStatus.EXECUTED: "stanch.action.executed",
    ActionStatus.ALREADY_DONE: "stanch.action.executed",
    ActionStatus.FORBIDDEN: "stanch.action.refused",
    ActionStatus.DENIED: "stanch.action.refused",
    ActionStatus.FAILED: "stanch.action.failed",
}


def resource_of(
    incident_id: str, tenant: str, severity: int, playbook: str | None = None
) -> dict[str, str]:
    """An incident as a Prefect event resource, with the labels automations match on."""
    resource = {
        "prefect.resource.id": f"stanch.incident.{incident_id}",
        "prefect.resource.name": incident_id,
        "stanch.tenant": tenant,
        "stanch.severity": SeverityId(severity).name.lower(),
    }
    if playbook is not None:
        resource["stanch.playbook"] = playbook
    return resource


def incident_resource(incident: Incident, playbook: str | None = None) -> dict[str, str]:
    """The incident as a Prefect event resource (see :func:`resource_of`)."""
    return resource_of(incident.id, incident.tenant, int(incident.severity), playbook)


def _send(name: str, resource: dict[str, str], payload: Mapping[str, Any]) -> None:
    # Events are a convenience for automations: one that cannot be sent never fails the
    # incident (Prefect's own worker logs what it could not deliver).
    try:
        emit_event(name, resource=resource, payload=dict(payload))
    except Exception:  # emitting must never fail the response
        log.warning("could not emit %s for %s", name, resource["prefect.resource.id"])


def _emit(name: str, incident: Incident, playbook: str | None, payload: Mapping[str, Any]) -> None:
    _send(name, incident_resource(incident, playbook), payload)


def incident_opened(incident: Incident, playbook: str | None) -> None:
    """The incident's flow began: its alerts, hosts and users are known."""
    _emit(
        "stanch.incident.opened",
        incident,
        playbook,
        {
            "title": incident.title,
            "alerts": len(incident.alerts),
            "hosts": len(incident.hostnames),
            "users": len(incident.users),
            "techniques": list(incident.techniques),
        },
    )


def incident_joined(incident: Incident, playbook: str | None, joined: int) -> None:
    """Alerts joined the incident while its flow ran."""
    _emit(
        "stanch.incident.joined",
        incident,
        playbook,
        {"joined": joined, "alerts": len(incident.alerts)},
    )


def approval_requested(
    incident: Incident,
    playbook: str | None,
    *,
    approval_id: str,
    stage: str,
    sha256s: Sequence[str],
    actions: Sequence[str],
    deadline: str,
) -> None:
    """A person's decision is needed before the plans named may run."""
    _emit(
        "stanch.approval.requested",
        incident,
        playbook,
        {
            "approval_id": approval_id,
            "stage": stage,
            "plan_sha256s": list(sha256s),
            "actions": list(actions),
            "deadline": deadline,
        },
    )


def approval_decided(
    incident: Incident,
    playbook: str | None,
    *,
    approval_id: str,
    status: str,
    approved: Sequence[str],
    approvers: Sequence[str],
    channel: str | None,
) -> None:
    """The request was decided (approved, partly, denied, expired or rejected)."""
    _emit(
        "stanch.approval.decided",
        incident,
        playbook,
        {
            "approval_id": approval_id,
            "status": status,
            "approved_sha256s": list(approved),
            "approvers": list(approvers),
            "channel": channel,
        },
    )


def action_finished(incident: Incident, playbook: str | None, result: ActionResult) -> None:
    """An action ran (``executed``), was refused (forbidden, denied) or failed."""
    name = _ACTION_EVENTS.get(result.status)
    if name is None:
        return
    plan = result.plan
    _emit(
        name,
        incident,
        playbook,
        {
            "action": plan.action,
            "stage": plan.stage.value,
            "target": plan.target,
            "target_label": plan.target_label,
            "plan_sha256": result.plan_sha256,
            "status": result.status.value,
            "verdict": result.verdict.value,
            "approved_by": list(result.approved_by),
            "vendor": result.vendor,
            "error": result.error,
        },
    )


def incident_closed(
    *,
    incident_id: str,
    tenant: str,
    severity: int,
    playbook: str | None,
    disposition: str,
    actor: str,
    duplicate_of: str | None = None,
) -> None:
    """A person (or the policy's auto-close) closed the case with a disposition."""
    _send(
        "stanch.incident.closed",
        resource_of(incident_id, tenant, severity, playbook),
        {"disposition": disposition, "closed_by": actor, "duplicate_of": duplicate_of},
    )


def sla_breached(
    *,
    incident_id: str,
    tenant: str,
    severity: int,
    playbook: str | None,
    clock: str,
    deadline: str,
) -> None:
    """A clock of the tenant's SLA ran past its target (recorded once per clock)."""
    _send(
        "stanch.sla.breached",
        resource_of(incident_id, tenant, severity, playbook),
        {"clock": clock, "deadline": deadline},
    )
