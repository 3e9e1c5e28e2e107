"""Vendor-neutral models of the lifecycle: incident, action plan, action result, stages.

An :class:`ActionPlan` is the unit of authority: its canonical JSON is what an approver
approves and its SHA-256 is what the executor checks before acting.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from integrations.capabilities import ActionReceipt, Capability, IntelReport
from integrations.ocsf import DetectionFinding, ObservableType, SeverityId


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


class Stage(StrEnum):
    """The MDR lifecycle stages, in order."""

    DETECT = "detect"
    INVESTIGATE = "investigate"
    CONTAIN = "contain"
    REMEDIATE = "remediate"
    REPORT = "report"


class CaseStatus(StrEnum):
    """Where an incident stands as a case.

    The flow moves a case forward along ``new → investigating → contained → remediated →
    awaiting-closure`` (skipping what did not happen); a person, or the tenant's policy,
    closes it; a person reopens it.
    """

    NEW = "new"
    INVESTIGATING = "investigating"
    CONTAINED = "contained"
    REMEDIATED = "remediated"
    AWAITING_CLOSURE = "awaiting-closure"
    CLOSED = "closed"
    REOPENED = "reopened"


class Disposition(StrEnum):
    """What the analyst concluded when closing a case."""

    TRUE_POSITIVE = "true-positive"
    BENIGN_TRUE_POSITIVE = "benign-true-positive"
    FALSE_POSITIVE = "false-positive"
    DUPLICATE = "duplicate"


class Incident(BaseModel):
    """One or more correlated alerts about the same host, user or indicator.

    Attributes:
        id: ``INC-<yyyymmdd>-<nnnn>``, unique per store.
        tenant: the MDR customer this incident belongs to.
        title: short description used to name the flow run.
        alerts: the OCSF findings that make up the incident.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^INC-\d{8}-\d{4,}$")
    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    title: str = Field(min_length=1, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    alerts: list[DetectionFinding] = Field(min_length=1)

    @property
    def severity(self) -> SeverityId:
        """The highest severity among the alerts (``OTHER`` ranks as unknown)."""
        ranked = [a.severity_id for a in self.alerts if a.severity_id != SeverityId.OTHER]
        return max(ranked, default=SeverityId.UNKNOWN)

    @property
    def first_seen(self) -> datetime:
        """When the earliest alert happened."""
        return min(a.occurred_at for a in self.alerts)

    def entities(self, kind: ObservableType) -> list[str]:
        """Distinct values of one entity type across all alerts, in first-seen order."""
        seen: dict[str, None] = {}
        for alert in self.alerts:
            for value in alert.observed(kind):
                seen.setdefault(value, None)
        return list(seen)

    @property
    def hostnames(self) -> list[str]:
        """Hosts named by the alerts."""
        return self.entities(ObservableType.HOSTNAME)

    @property
    def users(self) -> list[str]:
        """User logins named by the alerts."""
        return self.entities(ObservableType.USER_NAME)

    @property
    def sha256s(self) -> list[str]:
        """SHA-256 file hashes named by the alerts."""
        return [h for h in self.entities(ObservableType.HASH) if len(h) == 64]

    @property
    def external_ips(self) -> list[str]:
        """Internet addresses named by the alerts."""
        seen: dict[str, None] = {}
        for alert in self.alerts:
            for ip in alert.external_ips():
                seen.setdefault(ip, None)
        return list(seen)

    @property
    def techniques(self) -> list[str]:
        """ATT&CK technique ids named by the alerts."""
        seen: dict[str, None] = {}
        for alert in self.alerts:
            for attack in alert.finding_info.attacks:
                for t in (attack.technique, attack.sub_technique):
                    if t is not None:
                        seen.setdefault(t.uid, None)
        return list(seen)


class ActionPlan(BaseModel):
    """One side effect stanch intends to cause, in canonical form.

    The plan names the capability, not the vendor, so the same approval means the same
    thing whichever adapter runs it. ``target`` is the vendor-side id the verb takes;
    ``target_label`` is what a human recognises (the hostname behind a host id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    incident_id: str
    capability: Capability
    verb: str = Field(pattern=r"^[a-z_]+$")
    target: str = Field(min_length=1)
    target_label: str
    parameters: dict[str, str | int | bool | None] = Field(default_factory=dict)
    stage: Literal[Stage.CONTAIN, Stage.REMEDIATE]

    @property
    def action(self) -> str:
        """The playbook spelling of the call, e.g. ``edr.contain_host``."""
        return f"{self.capability.value}.{self.verb}"

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, UTF-8 as-is: the bytes that get hashed."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )

    @property
    def sha256(self) -> str:
        """SHA-256 of :meth:`canonical_json`, hex."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def idempotency_key(self) -> str:
        """(incident, verb, target): an action is fired at most once per incident."""
        return f"{self.incident_id}:{self.action}:{self.target}"


class Verdict(StrEnum):
    """What policy says about one plan."""

    UNATTENDED = "unattended"
    APPROVAL = "approval"
    FORBIDDEN = "forbidden"


class ActionStatus(StrEnum):
    """Where an action ended up."""

    EXECUTED = "executed"
    ALREADY_DONE = "already_done"
    DENIED = "denied"
    FORBIDDEN = "forbidden"
    FAILED = "failed"


class ActionResult(BaseModel):
    """What happened to one plan: who authorised it and what the vendor did."""

    model_config = ConfigDict(frozen=True)

    plan: ActionPlan
    plan_sha256: str
    verdict: Verdict
    status: ActionStatus
    approved_by: list[str] = Field(default_factory=list)
    vendor: str | None = None
    receipt: ActionReceipt | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @field_validator("plan_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("plan_sha256 must be 64 lowercase hex digits")
        return value


class StageRecord(BaseModel):
    """When a stage ran and how it ended."""

    stage: Stage
    state: Literal["completed", "failed", "skipped"]
    started_at: datetime
    finished_at: datetime
    note: str = ""


class HuntSummary(BaseModel):
    """One indicator hunted across the tenant's EDR: how many hosts, which (capped).

    Attributes:
        kind: ``sha256``, ``md5``, ``ipv4`` or ``domain``.
        value: the indicator, canonical.
        vendor: the EDR that answered.
        host_count: how many hosts it was seen on.
        hosts: their names, at most :data:`HUNT_HOST_CAP`; ``more`` counts the rest.
        other_hosts: how many of them the incident's alerts do not name.
        complete: ``False`` when the vendor did not finish (see ``note``).
        note: the vendor's or the hunt's caveat, if any.
    """

    kind: str
    value: str
    vendor: str
    host_count: int = 0
    hosts: list[str] = Field(default_factory=list)
    more: int = 0
    other_hosts: int = 0
    complete: bool = True
    note: str | None = None

    def line(self) -> str:
        """``sha256 8f2b7c1e5a9d4f3b…: 3 host(s): WS-0042, WS-0107 and 1 more``."""
        shown = f"{self.value[:16]}…" if len(self.value) > 16 else self.value
        text = f"{self.kind} {shown}: {self.host_count} host(s)"
        if self.hosts:
            text += ": " + ", ".join(self.hosts) + (f" and {self.more} more" if self.more else "")
        if not self.complete:
            text += f" (incomplete: {self.note})"
        return text


HUNT_HOST_CAP = 10
"""How many host names a hunt summary keeps; the rest are counted."""


class Investigation(BaseModel):
    """What the investigate stage learned: entity facts, hunts, a verdict and a score."""

    hosts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    users: dict[str, dict[str, Any]] = Field(default_factory=dict)
    hunts: list[HuntSummary] = Field(default_factory=list)
    verdict: Literal["true_positive", "suspicious", "benign"] = "suspicious"
    risk_score: int = Field(ge=0, le=100, default=0)
    reasons: list[str] = Field(default_factory=list)
    intel: list[IntelReport] = Field(
        default_factory=list, description="what reputation services said of its indicators"
    )

    def asset_names(self) -> dict[str, tuple[str, ...]]:
        """Every name and address the vendors gave each host and user, by vendor id.

        Protected-asset patterns (``DC-*``, ``10.0.0.0/24``, ``breakglass*``) are matched
        against these, never against a plan's label alone: a label falls back to the vendor
        id when a playbook gives none.
        """
        names: dict[str, tuple[str, ...]] = {}
        for found, fields in (
            *((h, ("hostname", "local_ip", "external_ip")) for h in self.hosts.values()),
            *((u, ("login", "email")) for u in self.users.values()),
        ):
            known = tuple(str(found[f]) for f in fields if found.get(f))
            if found.get("id"):
                names[str(found["id"])] = (*names.get(str(found["id"]), ()), *known)
        return names


class IncidentOutcome(BaseModel):
    """The handle-incident flow's return value, and what the report is made from."""

    incident: Incident
    flow_run_id: str | None
    investigation: Investigation
    stages: list[StageRecord]
    actions: list[ActionResult]
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    report_paths: dict[str, str] = Field(default_factory=dict)
    clocks: dict[str, float | None] = Field(default_factory=dict)
    in_effect: list[str] = Field(default_factory=list, description="actions not yet undone")
    playbook: str | None = Field(default=None, description="the playbook that handled it")
    playbook_notes: list[str] = Field(
        default_factory=list, description="steps that planned no action, and why"
    )
    ledger: dict[str, Any] = Field(default_factory=dict, description="verification, entries")
    case_status: str | None = Field(default=None, description="the case status when reported")
    clock_notes: dict[str, str] = Field(
        default_factory=dict, description="why a clock has no value (containment denied ...)"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="configuration the run worked around: skipped playbooks, fail-safe policy",
    )


# The verbs a plan may name, and the plan parameters each takes. Anything else is refused
# before an adapter is touched, so a plan can never reach an arbitrary adapter attribute.
ACTION_VERBS: dict[Capability, dict[str, tuple[str, ...]]] = {
    Capability.EDR: {
        "contain_host": ("reason",),
        "release_host": ("reason",),
        "block_hash": ("reason",),
        "unblock_hash": (),
    },
    Capability.IDENTITY: {
        "suspend_user": ("reason",),
        "unsuspend_user": ("reason",),
        "revoke_sessions": (),
        "expire_password": (),
        "reset_factors": (),
    },
    Capability.FIREWALL: {
        "block_ip": ("ttl_seconds", "reason"),
        "unblock_ip": (),
    },
}
