"""An approval request, the signed decision that answers it, and what the flow acts on.

A decision is acted on only if its HMAC (keyed with the stanch approval key) verifies and
it names exactly the plans asked about: anyone with Prefect UI or API access can resume a
paused run, but only a holder of the key (the CLI, the Slack service) can sign a decision.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field

from flows.approval.context import ApprovalContext
from flows.models import ActionPlan, utcnow
from flows.policy import ApprovalTerms, TimeoutOutcome
from flows.record import ApprovalRow


class ApprovalRequest(BaseModel):
    """What is asked of the approvers: these plans, for this incident, by this deadline.

    ``requester`` is who caused the request (``cli:<user>@<host>`` for ``stanch run``,
    ``rerun`` or ``undo``, ``slack:<user id>`` for a Slack user, ``automation:<what>`` for
    intake); neither they nor the incident's own subjects (``excluded``) may approve it.
    ``timeout_seconds`` and ``on_timeout`` are the policy's for these plans (see
    :func:`flows.policy.approval_terms`).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    incident_id: str
    tenant: str
    flow_run_id: str | None
    requester: str
    plans: list[ActionPlan]
    reasons: dict[str, str] = Field(default_factory=dict, description="plan sha256 -> why")
    deadline: datetime
    timeout_seconds: int = Field(default=900, ge=1, description="the policy's wait")
    on_timeout: TimeoutOutcome = Field(default="deny", description="what silence means")
    incident_title: str = ""
    required_approvals: int = Field(default=1, ge=1, le=10)
    approver_ids: tuple[str, ...] = Field(default=(), description="Slack user ids from policy")
    approver_group: str | None = Field(default=None, description="Slack user group from policy")
    approvers: str = Field(default="", description="the approvers as the policy names them")
    allow_prefect_ui: bool = Field(
        default=False, description="policy lets a Prefect UI resume decide, unsigned"
    )
    context: ApprovalContext = Field(
        default_factory=ApprovalContext, description="the evidence the approver decides on"
    )
    cli_users: tuple[str, ...] = Field(
        default=(), description="operator patterns whose CLI decisions count; none: no CLI"
    )
    excluded: tuple[str, ...] = Field(
        default=(), description="who may not approve: the incident's subjects (its users)"
    )

    @property
    def sha256s(self) -> list[str]:
        """The hashes of the plans asked about, in order."""
        return [p.sha256 for p in self.plans]


class ApprovalDecision(RunInput):
    """The typed input that resumes a paused incident flow.

    Every field but the signature is required and has no initial value, so a hand-filled
    Prefect UI form cannot fall back on the model's defaults. A decision
    without a signature counts only as the ``prefect-ui`` channel, and only where the
    tenant's policy enables that channel.
    """

    approval_id: str = Field(description="the approval request being answered")
    approved: list[str] = Field(description="sha256 of each plan approved")
    denied: list[str] = Field(description="sha256 of each plan denied")
    approver: str = Field(min_length=1, description="who decided, as the channel knows them")
    channel: str = Field(min_length=1, description="cli, slack, simulated-analyst ...")
    reason: str = Field(description="the approver's words")
    # The one default besides the signature: left alone it stops nothing, the safe reading.
    stop_response: bool = Field(
        default=False,
        description="denied as a false positive: stop the rest of the response (approves nothing)",
    )
    decided_at: datetime = Field(description="when the human decided")
    signature: str = Field(
        default="",
        pattern=r"^([0-9a-f]{64})?$",
        description="HMAC-SHA256, hex, set by stanch's channels; leave empty in the Prefect UI",
    )


class ApprovalOutcome(BaseModel):
    """The verified result of an approval request, as the flow acts on it."""

    approval_id: str
    status: Literal["approved", "denied", "partial", "expired", "rejected"]
    approved: list[str]
    approvers: list[str]
    channel: str | None
    reason: str
    decided_at: datetime
    stop_response: bool = False
    """Denied as a false positive: nothing more runs for the incident."""


def _signed_fields(decision: dict[str, Any]) -> bytes:
    fields = {k: decision[k] for k in sorted(decision) if k != "signature"}
    fields["approved"] = sorted(fields["approved"])
    fields["denied"] = sorted(fields["denied"])
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign_decision(key: bytes, decision: dict[str, Any]) -> str:
    """HMAC-SHA256 over the decision's canonical JSON (signature field excluded)."""
    return hmac.new(key, _signed_fields(decision), hashlib.sha256).hexdigest()


def verify_decision(key: bytes, decision: ApprovalDecision) -> bool:
    """Constant-time check of a decision's signature."""
    payload = decision.model_dump(mode="json")
    return hmac.compare_digest(sign_decision(key, payload), decision.signature)


EXPIRY_CHANNEL = "expiry"
"""The channel of the signed expiry the Slack service sends when a request's deadline passes."""

CLI_CHANNEL = "cli"
"""The channel of ``stanch approve``/``deny``; its approvers are ``user@host`` operators."""

ON_TIMEOUT_APPROVER = "policy:on-timeout"
"""Who authorised an action approved by its policy's ``on_timeout: approve``."""


def pending_row(request: ApprovalRequest) -> ApprovalRow:
    """The store's row for a new request, waiting for its decision."""
    return ApprovalRow(
        id=request.id,
        incident_id=request.incident_id,
        tenant=request.tenant,
        flow_run_id=request.flow_run_id,
        requester=request.requester,
        plans={
            "plans": [p.model_dump(mode="json") for p in request.plans],
            "sha256s": request.sha256s,
            "reasons": request.reasons,
            "required_approvals": request.required_approvals,
            # What the approver saw, for `stanch approvals show` in another terminal.
            "context": request.context.model_dump(mode="json"),
            "incident_title": request.incident_title,
            "timeout_seconds": request.timeout_seconds,
            "on_timeout": request.on_timeout,
            "approvers": request.approvers,
            "cli_users": list(request.cli_users),
            "excluded": list(request.excluded),
        },
        status="pending",
        requested_at=utcnow(),
        deadline=request.deadline,
    )


def _next_id(approval_id: str) -> str:
    """``APR-x`` → ``APR-x-2`` → ``APR-x-3``: a new request for the same plans."""
    base, _, attempt = approval_id.partition("-r")
    return f"{base}-r{int(attempt) + 1 if attempt.isdigit() else 2}"


def approval_id_for(incident_id: str, stage: str, sha256s: list[str]) -> str:
    """The id of the request for these plans of this incident's stage.

    Deterministic, so that a run re-executed after a suspend (or re-run after a crash)
    finds the same request, the same pause key and the decision already given to it.
    """
    digest = hashlib.sha256("\n".join([incident_id, stage, *sorted(sha256s)]).encode()).hexdigest()
    return f"APR-{digest[:10]}"


AUTOMATION_REQUESTER = "automation:intake"
"""The requester of a run nobody started by hand (intake, a poller, a deployment)."""


def new_approval_request(
    *,
    incident_id: str,
    tenant: str,
    flow_run_id: str | None,
    plans: list[ActionPlan],
    stage: str = "contain",
    reasons: dict[str, str],
    timeout_seconds: int = 900,
    incident_title: str = "",
    requester: str = AUTOMATION_REQUESTER,
    excluded: tuple[str, ...] = (),
    terms: ApprovalTerms | None = None,
    required_approvals: int = 1,
    approver_ids: tuple[str, ...] = (),
    approver_group: str | None = None,
    allow_prefect_ui: bool = False,
    context: ApprovalContext | None = None,
) -> ApprovalRequest:
    """A request for ``plans`` with its deterministic id (:func:`approval_id_for`) and deadline.

    With ``terms`` (what the flow always passes) the policy's approvers, channels, timeout
    and on-timeout apply, and ``timeout_seconds`` and the approver arguments are ignored.
    """
    on_timeout: TimeoutOutcome = "deny"
    cli_users: tuple[str, ...] = ()
    approvers = ""
    if terms is not None:
        timeout_seconds = max(1, int(terms.timeout.total_seconds()))
        required_approvals = terms.required_approvals
        approver_ids, approver_group = terms.approver_ids, terms.approver_group
        allow_prefect_ui = "prefect-ui" in terms.channels
        cli_users = terms.cli_users if "cli" in terms.channels else ()
        on_timeout, approvers = terms.on_timeout, terms.approvers
    return ApprovalRequest(
        id=approval_id_for(incident_id, stage, [p.sha256 for p in plans]),
        incident_id=incident_id,
        tenant=tenant,
        flow_run_id=flow_run_id,
        requester=requester,
        plans=plans,
        reasons=reasons,
        deadline=utcnow() + timedelta(seconds=timeout_seconds),
        timeout_seconds=timeout_seconds,
        on_timeout=on_timeout,
        incident_title=incident_title,
        required_approvals=required_approvals,
        approver_ids=approver_ids,
        approver_group=approver_group,
        approvers=approvers,
        allow_prefect_ui=allow_prefect_ui,
        context=context or ApprovalContext(),
        cli_users=cli_users,
        excluded=excluded,
    )


def _local_part(identity: str) -> str:
    # ``cli:alice@soc-host`` → ``alice``; ``jdoe@acme.example`` → ``jdoe``.
    return identity.rpartition(":")[2].partition("@")[0].strip().lower()


def self_approval(
    approver: str, *, requester: str, excluded: tuple[str, ...] | list[str]
) -> str | None:
    """Why ``approver`` may not approve this request (their own, or about them), or ``None``.

    ``approver`` is one identity as its channel records it (``cli:alice@soc-host``,
    ``slack:U0ALICE``); ``excluded`` holds the incident's subjects as logins. A CLI
    operator is a subject when their user name is a subject's login's local part: the
    terminal knows no more about who they are.
    """
    if approver == requester:
        return "you requested this action; someone else must approve it"
    name = _local_part(approver)
    if name and any(name == _local_part(s) or name == s.lower() for s in excluded):
        return "you are a subject of this incident; someone else must approve it"
    return None


def cli_refusal(
    operator: str, *, tenant: str, cli_users: tuple[str, ...] | list[str]
) -> str | None:
    """Why the tenant's policy does not let CLI ``operator`` (``user@host``) decide, or ``None``."""
    if not cli_users:
        return f"tenant {tenant}'s policy does not accept decisions from the CLI"
    if not any(fnmatch.fnmatchcase(operator.lower(), p.lower()) for p in cli_users):
        return (
            f"{operator} is not in approvers.cli_users of tenant {tenant}'s policy "
            f"({', '.join(cli_users)})"
        )
    return None
