"""The incident store: idempotency keys, one decision per approval, dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.models import ActionResult, ActionStatus, Stage, Verdict
from flows.record import ApprovalRow, Store
from tests.flows.factories import incident, plan
from tests.postgres import BACKENDS, backend_store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on SQLite, and on PostgreSQL when one is reachable."""
    async with backend_store(request.param, tmp_path) as opened:
        yield opened


async def test_incident_ids_count_up_per_day(store: Store) -> None:
    """Given an incident saved for today, When the next id is allocated, Then it is n+1."""
    today = datetime.now(UTC)
    first = await store.allocate_incident_id(today)
    await store.save_incident(incident(int(first[-4:])))
    assert first.endswith("-0001")
    assert (await store.allocate_incident_id(today)).endswith("-0002")
    tomorrow = await store.allocate_incident_id(today + timedelta(days=1))
    assert tomorrow.endswith("-0001")


async def test_a_finished_action_is_replayed_not_repeated(store: Store) -> None:
    """Given an action claimed and finished as executed,
    When the same plan is claimed again (a retried task or re-run flow),
    Then the stored result comes back instead of a go-ahead."""
    p = plan()
    assert await store.claim_action(p) is None
    done = ActionResult(
        plan=p,
        plan_sha256=p.sha256,
        verdict=Verdict.APPROVAL,
        status=ActionStatus.EXECUTED,
        approved_by=["cli:alice"],
    )
    await store.finish_action(done)
    replay = await store.claim_action(p)
    assert replay is not None and replay.status == ActionStatus.EXECUTED
    assert replay.approved_by == ["cli:alice"]


async def test_an_unfinished_action_may_be_retried_and_counts_attempts(store: Store) -> None:
    """Given a claimed action that never finished (crash mid-call),
    When claimed again, Then the caller may proceed and the attempt is counted."""
    p = plan()
    assert await store.claim_action(p) is None
    assert await store.claim_action(p) is None
    rows = await store.actions(p.incident_id)
    assert len(rows) == 1 and rows[0].attempts == 2 and rows[0].status == "started"


async def test_an_approval_is_decided_once(store: Store) -> None:
    """Given a pending approval, When decided twice, Then only the first decision counts."""
    now = datetime.now(UTC)
    await store.create_approval(
        ApprovalRow(
            id="APR-1",
            incident_id="INC-20261121-0001",
            tenant="acme",
            flow_run_id=None,
            requester="test",
            plans={"plans": [], "sha256s": []},
            status="pending",
            requested_at=now,
            deadline=now + timedelta(minutes=5),
        )
    )
    assert await store.decide_approval("APR-1", status="approved", decided_by="a", reason="ok")
    assert not await store.decide_approval("APR-1", status="denied", decided_by="b", reason="no")
    row = await store.get_approval("APR-1")
    assert row is not None and (row.status, row.decided_by) == ("approved", "a")


async def test_dead_letters_keep_payload_and_reason(store: Store) -> None:
    """Given a rejected payload, When dead-lettered, Then it is kept verbatim with the field."""
    await store.dead_letter(source="f.json", field="class_uid", reason="bad", payload="{}")
    [row] = await store.dead_letters()
    assert (row.source, row.field, row.payload) == ("f.json", "class_uid", "{}")


async def test_stage_events_keep_their_order(store: Store) -> None:
    """Given stage transitions, When read back, Then they come in the order recorded."""
    await store.record_stage("INC-1", Stage.DETECT, "started")
    await store.record_stage("INC-1", Stage.DETECT, "completed")
    events = [(e.stage, e.event) for e in await store.stage_events("INC-1")]
    assert events == [("detect", "started"), ("detect", "completed")]
