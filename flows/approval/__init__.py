"""Approval: who decides a plan that policy will not run unattended, and how.

The flow files an :class:`ApprovalRequest` and waits on an :class:`ApprovalGate` — a typed
Prefect pause (:class:`PrefectPauseGate`; the CLI resumes it) or the same pause announced
in Slack (:class:`SlackPauseGate`), with the evidence behind it (:class:`ApprovalContext`).
A decision counts only when its HMAC verifies and it
names exactly the plans asked about (:func:`submit_decision`). :class:`ApprovalService`
takes Slack clicks, checks who clicked against policy, and reminds, escalates and expires;
:class:`CaseClickService` takes the incident summary's case buttons under the same checks.
"""

from __future__ import annotations

from flows.approval.case_clicks import CaseClickService, interaction_router, slack_case_service
from flows.approval.context import ApprovalContext, approval_context
from flows.approval.gate import (
    ApprovalGate,
    PrefectPauseGate,
    default_gate,
    pause_description,
    submit_decision,
    wait_until_paused,
)
from flows.approval.request import (
    AUTOMATION_REQUESTER,
    EXPIRY_CHANNEL,
    ApprovalDecision,
    ApprovalOutcome,
    ApprovalRequest,
    approval_id_for,
    cli_refusal,
    new_approval_request,
    pending_row,
    self_approval,
    sign_decision,
    verify_decision,
)
from flows.approval.service import (
    ApprovalService,
    DecisionSubmitter,
    Handled,
    run_sweeper,
    slack_approval_service,
)
from flows.approval.slack_gate import SlackPauseGate, approval_view, post_and_bind

__all__ = [
    "AUTOMATION_REQUESTER",
    "EXPIRY_CHANNEL",
    "ApprovalContext",
    "ApprovalDecision",
    "ApprovalGate",
    "ApprovalOutcome",
    "ApprovalRequest",
    "ApprovalService",
    "CaseClickService",
    "DecisionSubmitter",
    "Handled",
    "PrefectPauseGate",
    "SlackPauseGate",
    "approval_context",
    "approval_id_for",
    "approval_view",
    "cli_refusal",
    "default_gate",
    "interaction_router",
    "new_approval_request",
    "pause_description",
    "pending_row",
    "post_and_bind",
    "run_sweeper",
    "self_approval",
    "sign_decision",
    "slack_approval_service",
    "slack_case_service",
    "submit_decision",
    "verify_decision",
    "wait_until_paused",
]
