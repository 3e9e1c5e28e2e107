"""Approval decisions: signed, bound to the plans asked about, decided once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.approval import (
    ApprovalDecision,
    PrefectPauseGate,
    new_approval_request,
    sign_decision,
    submit_decision,
    verify_decision,
)
from flows.errors import ApprovalError
from flows.record import ApprovalRow, Store, open_store
from tests.flows.factories import plan

KEY = b"k" * 32


def _decision(
    request_id: str,
    ok: list[str],
    no: list[str],
    key: bytes = KEY,
    approver: str = "alice",
    **changes: Any,
) -> ApprovalDecision:
    fields: dict[str, Any] = {
        "approval_id": request_id,
        "approved": ok,
        "denied": no,
        "approver": approver,
        "channel": "cli",
        "reason": "ok",
        "decided_at": datetime.now(UTC),
        "signature": "0" * 64,
    }
    unsigned = ApprovalDecision.model_validate(fields)
    signed = unsigned.model_copy(
        update={"signature": sign_decision(key, unsigned.model_dump(mode="json"))}
    )
    return signed.model_copy(update=changes)


def _request() -> Any:
    plans = [plan(), plan(target="aid-2", target_label="WS-0043")]
    request = new_approval_request(
        incident_id="INC-20261121-0007",
        tenant="acme",
        flow_run_id=None,
        plans=plans,
        reasons={},
        timeout_seconds=60,
    )
    # A policy that lets any operator decide at the CLI.
    return request.model_copy(update={"cli_users": ("*",)})


def test_a_signed_decision_verifies_and_survives_the_json_round_trip() -> None:
    """Given a decision signed with the key,
    When it goes through JSON (as through Prefect's resume) and back,
    Then it still verifies."""
    decision = _decision("APR-1", ["a" * 64], [])
    again = ApprovalDecision.model_validate_json(decision.model_dump_json())
    assert verify_decision(KEY, again)


@pytest.mark.parametrize(
    "change",
    [
        {"approver": "mallory"},
        {"approved": ["b" * 64]},
        {"approval_id": "APR-2"},
        {"reason": "edited"},
        {"channel": "prefect-ui"},
    ],
)
def test_any_edit_breaks_the_signature(change: dict[str, Any]) -> None:
    """Given a signed decision, When any field is edited afterwards, Then it no longer verifies."""
    assert not verify_decision(KEY, _decision("APR-1", ["a" * 64], []).model_copy(update=change))


def test_a_decision_signed_with_another_key_is_refused() -> None:
    """Given a decision signed with a different key (a hand-filled resume),
    When the gate checks it, Then it is refused as not from a stanch channel."""
    request = _request()
    forged = _decision(request.id, request.sha256s, [], key=b"x" * 32)
    gate = PrefectPauseGate(KEY, timeout_seconds=60, poll_seconds=1)
    assert "signature" in (gate._problem(forged, request) or "")


def test_a_decision_must_name_exactly_the_plans_asked_about() -> None:
    """Given decisions that skip a plan, add one, or both approve and deny one,
    When the gate checks them, Then each is refused; the exact set is accepted."""
    request = _request()
    first, second = request.sha256s
    gate = PrefectPauseGate(KEY, timeout_seconds=60, poll_seconds=1)
    assert gate._problem(_decision(request.id, [first], []), request)
    assert gate._problem(_decision(request.id, [first, second, "c" * 64], []), request)
    assert gate._problem(_decision(request.id, [first, second], [first]), request)
    assert gate._problem(_decision("APR-other", [first], [second]), request)
    assert gate._problem(_decision(request.id, [first], [second]), request) is None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as opened:
        yield opened


async def test_unknown_or_decided_requests_are_refused_before_resuming(store: Store) -> None:
    """Given no request, and a request already decided,
    When a decision is submitted, Then ApprovalError says why and nothing is resumed."""
    resumed: list[Any] = []

    async def resume(run_id: Any, payload: Any) -> None:
        resumed.append(run_id)

    with pytest.raises(ApprovalError, match="no approval request"):
        await submit_decision(
            store,
            KEY,
            "APR-none",
            approve=True,
            approver="a",
            channel="cli",
            reason="",
            resume=resume,
        )
    now = datetime.now(UTC)
    await store.create_approval(
        ApprovalRow(
            id="APR-done",
            incident_id="INC-20261121-0001",
            tenant="acme",
            flow_run_id="00000000-0000-0000-0000-000000000000",
            requester="t",
            plans={"plans": [], "sha256s": []},
            status="approved",
            decided_by="bob",
            requested_at=now,
            deadline=now + timedelta(minutes=1),
        )
    )
    with pytest.raises(ApprovalError, match="already approved"):
        await submit_decision(
            store,
            KEY,
            "APR-done",
            approve=False,
            approver="a",
            channel="cli",
            reason="",
            resume=resume,
        )
    assert resumed == []


def _unsigned(request_id: str, ok: list[str], no: list[str], approver: str = "ui-user") -> Any:
    return ApprovalDecision.model_validate(
        {
            "approval_id": request_id,
            "approved": ok,
            "denied": no,
            "approver": approver,
            "channel": "prefect-ui",
            "reason": "typed in the UI",
            "decided_at": datetime.now(UTC),
        }
    )


def test_an_unsigned_prefect_ui_decision_counts_only_where_policy_enables_it() -> None:
    """Given a hand-filled Prefect UI resume (no signature),
    When the tenant's policy does not enable that channel, Then it is refused;
    When it does, Then it is accepted."""
    request = _request()
    decision = _unsigned(request.id, request.sha256s, [])
    gate = PrefectPauseGate(KEY, timeout_seconds=60, poll_seconds=1)
    assert "not enabled" in (gate._problem(decision, request) or "")
    allowed = request.model_copy(update={"allow_prefect_ui": True})
    assert gate._problem(decision, allowed) is None
    cli_unsigned = decision.model_copy(update={"channel": "cli"})
    assert "signature" in (gate._problem(cli_unsigned, allowed) or "")


def test_an_approval_must_carry_as_many_approvers_as_policy_requires() -> None:
    """Given a request that needs two approvers,
    When a signed decision names one approver, Then it is refused;
    When it names two distinct ones, Then it is accepted; a denial by one is accepted."""
    request = _request().model_copy(update={"required_approvals": 2})
    gate = PrefectPauseGate(KEY, timeout_seconds=60, poll_seconds=1)
    one = _decision(request.id, request.sha256s, [])
    assert "2 distinct approvers" in (gate._problem(one, request) or "")
    two = _decision(request.id, request.sha256s, [], approver="U0ALICE,U0BOB")
    assert gate._problem(two, request) is None
    same_twice = _decision(request.id, request.sha256s, [], approver="U0ALICE,U0ALICE")
    assert gate._problem(same_twice, request)
    denial = _decision(request.id, [], request.sha256s)
    assert gate._problem(denial, request) is None


async def test_the_cli_cannot_be_two_people(store: Store) -> None:
    """Given a pending request that needs two approvers,
    When one operator approves from the CLI, Then it is refused before any resume."""
    resumed: list[Any] = []

    async def resume(run_id: Any, payload: Any) -> None:
        resumed.append(run_id)

    now = datetime.now(UTC)
    await store.create_approval(
        ApprovalRow(
            id="APR-two",
            incident_id="INC-20261121-0001",
            tenant="acme",
            flow_run_id="00000000-0000-0000-0000-000000000000",
            requester="t",
            plans={
                "plans": [],
                "sha256s": ["a" * 64],
                "required_approvals": 2,
                "cli_users": ["*"],
            },
            status="pending",
            requested_at=now,
            deadline=now + timedelta(minutes=1),
        )
    )
    with pytest.raises(ApprovalError, match="needs 2 distinct approvers"):
        await submit_decision(
            store,
            KEY,
            "APR-two",
            approve=True,
            approver="cli-user",
            channel="cli",
            reason="",
            resume=resume,
        )
    assert resumed == []
