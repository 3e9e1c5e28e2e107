"""Approval views for the Slack tests, one realistic and one hostile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from integrations.slack import ApprovalView, PlanView

CHANNEL = "C0APPROVALS"
HOSTILE = "web-01 <!channel> <http://evil.example|click here> *bold* `x` & <@U0ADMIN>"


def plan(**overrides: object) -> PlanView:
    values: dict[str, object] = {
        "action": "edr.contain_host",
        "target": "a1b2c3d4e5",
        "target_label": "WS-0042",
        "parameters": {"comment": "INC-20250301-0007"},
        "sha256": "3f" * 32,
        "policy_reason": "containment of a workstation needs one approver",
    }
    values.update(overrides)
    return PlanView.model_validate(values)


def view(**overrides: object) -> ApprovalView:
    values: dict[str, object] = {
        "approval_id": "APR-0123456789",
        "incident_id": "INC-20250301-0007",
        "incident_title": "Credential dumping on WS-0042",
        "tenant": "acme",
        "requester": "stanch:handle-incident",
        "evidence": ["procdump.exe -ma lsass.exe out.dmp", "user: ACME\\jdoe"],
        "plans": [plan()],
        "deadline": datetime(2025, 3, 1, 12, 30, tzinfo=UTC) + timedelta(minutes=15),
        "required_approvals": 1,
    }
    values.update(overrides)
    return ApprovalView.model_validate(values)
