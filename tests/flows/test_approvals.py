"""Approval decisions: signed, bound to the plans asked about, decided once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.approvals import (
    ApprovalDecision,
    PrefectPauseGate,
    new_approval_request,
    sign_decision,
    submit_decision,
    verify_decision,
)
from flows.errors import ApprovalError
from flows.store import ApprovalRow, Store, open_store
from tests.flows.factories import plan

KEY = b"k" * 32


def _decision(
    request_id: str, ok: list[str], no: list[str], key: bytes = KEY, **changes: Any
) -> ApprovalDecision:
    fields: dict[str, Any] = {
        "approval_id": request_id,
        "approved": ok,
        "denied": no,
        "approver": "alice",
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
    return new_approval_request(
        incident_id="INC-20261121-0007",
        tenant="acme",
        flow_run_id=None,
        plans=plans,
        reasons={},
        timeout_seconds=60,
    )


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
    assert not verify_decision(KEY, _decision("APR-1", ["a" * 64], [], **change))


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
