"""Correlation in the store: one incident per attack, however many intakes feed it.

Every test here goes through :meth:`Intake.ingest` (what ``stanch serve`` and
``poll-alerts`` call) with a real store, on SQLite and on PostgreSQL when reachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from flows.detect import Intake
from flows.models import ActionResult, ActionStatus, CaseStatus, Verdict
from flows.record import (
    CORRELATION_ACTOR,
    ActionRow,
    AlertRow,
    CaseBook,
    IncidentRow,
    Ledger,
    LinkKind,
    Store,
)
from integrations.capabilities import ActionReceipt
from tests.flows.factories import plan
from tests.flows.test_intake import T0, Starts, alert, count
from tests.postgres import BACKENDS, backend_store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on SQLite, and on PostgreSQL when one is reachable."""
    async with backend_store(request.param, tmp_path) as opened:
        yield opened


async def incident_of(store: Store, uid: str) -> str:
    async with store.engine.connect() as conn:
        found = await conn.scalar(select(AlertRow.incident_id).where(AlertRow.finding_uid == uid))
    assert found is not None, uid
    return str(found)


# Many intakes, one store ------------------------------------------------------------------
async def test_two_intakes_fed_one_host_concurrently_make_one_incident_started_once(
    store: Store,
) -> None:
    """Given two intakes on one store (two replicas, or a webhook and a poller), When 20
    alerts about one host 1 s apart are handed to them alternately, all at once,
    Then every alert lands in one incident, and that incident is started once in all."""
    first, second = Starts(), Starts()
    intakes = [Intake(store, start_incident=first), Intake(store, start_incident=second)]
    results = await asyncio.gather(
        *(
            intakes[n % 2].ingest("acme", "ocsf", [alert(f"H-{n}", host="WS-1", at=T0 + n * 1000)])
            for n in range(20)
        )
    )
    placed = {item.incident_id for r in results for item in r.items}
    assert len(placed) == 1
    assert sum(r.accepted for r in results) == 20
    assert await count(store, IncidentRow) == 1
    assert len(first.ids + second.ids) == 1


async def test_an_intake_sees_an_incident_another_intake_made_a_moment_ago(
    store: Store,
) -> None:
    """Given an incident made by one intake, When a second intake (created before it, so
    it cannot have loaded it at start) gets an alert on the same host 1 s later,
    Then it joins that incident instead of opening another."""
    a, b = Intake(store, start_incident=Starts()), Intake(store, start_incident=Starts())
    await b.ingest("acme", "ocsf", [alert("warm", host="WS-0")])  # b has read the store
    made = await a.ingest("acme", "ocsf", [alert("A-1", host="WS-2")])
    joined = await b.ingest("acme", "ocsf", [alert("A-2", host="WS-2", at=T0 + 1000)])
    assert joined.joined == 1 and joined.new_incidents == 0
    assert joined.items[0].incident_id == made.items[0].incident_id


# Join rules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reached",
    [CaseStatus.CONTAINED, CaseStatus.REMEDIATED, CaseStatus.AWAITING_CLOSURE],
    ids=["contained", "remediated", "awaiting-closure"],
)
async def test_an_incident_past_containment_still_takes_alerts(
    store: Store, reached: CaseStatus
) -> None:
    """Given an incident the flow moved to contained (remediated, awaiting closure),
    When an alert on the same host arrives 60 s later, Then it joins that incident and
    starts nothing."""
    starts = Starts()
    intake = Intake(store, start_incident=starts)
    first = await intake.ingest("acme", "ocsf", [alert("K-1", host="WS-3")])
    incident_id = first.items[0].incident_id or ""
    assert await CaseBook(store).advance(incident_id, reached, reason="test")
    later = await intake.ingest("acme", "ocsf", [alert("K-2", host="WS-3", at=T0 + 60_000)])
    assert (later.joined, later.new_incidents) == (1, 0)
    assert later.items[0].incident_id == incident_id
    assert starts.ids == [incident_id]


async def test_a_closed_incident_is_not_reopened_but_linked_as_related(store: Store) -> None:
    """Given a closed incident about WS-4, When WS-4 alerts again within the window,
    Then a new incident opens, the closed one stays closed, and the new one is linked
    to it as related by correlation, in the ledger."""
    intake = Intake(store, start_incident=Starts())
    cases = CaseBook(store)
    first = await intake.ingest("acme", "ocsf", [alert("L-1", host="WS-4")])
    closed_id = first.items[0].incident_id or ""
    await cases.close(closed_id, disposition="true-positive", summary="done", actor="cli:al")
    again = await intake.ingest("acme", "ocsf", [alert("L-2", host="WS-4", at=T0 + 1)])
    new_id = again.items[0].incident_id or ""
    assert again.new_incidents == 1 and new_id != closed_id
    assert again.related == {new_id: closed_id}
    assert (await cases.get(closed_id)).status == CaseStatus.CLOSED
    links = (await cases.get(new_id)).links
    assert [(link.kind, link.incident_id, link.actor) for link in links] == [
        (LinkKind.RELATED, closed_id, CORRELATION_ACTOR)
    ]
    entries = await Ledger(store).entries(new_id)
    assert [e.verb for e in entries] == ["link"]
    assert (await Ledger(store).verify()).ok


# Bridging alerts --------------------------------------------------------------------------
async def test_an_alert_bridging_two_incidents_merges_the_younger_into_the_oldest(
    store: Store,
) -> None:
    """Given an incident about host WS-1 and a younger one about user bob and an IP,
    When an alert names WS-1 and bob, Then it joins the older incident, the younger is
    merged into it (its alerts and entities move, it is closed as merged-into the older),
    the merge is a ledger entry by correlation, and the ledger verifies."""
    starts = Starts()
    intake = Intake(store, start_incident=starts)
    await intake.ingest("acme", "ocsf", [alert("B-1", host="WS-1")])
    await intake.ingest("acme", "ocsf", [alert("B-2", user="bob", ip="203.0.113.7", at=T0 + 1000)])
    older, younger = await incident_of(store, "B-1"), await incident_of(store, "B-2")
    assert older != younger
    bridge = await intake.ingest(
        "acme", "ocsf", [alert("B-3", host="WS-1", user="bob", at=T0 + 2000)]
    )
    assert bridge.merged == {younger: older}
    assert bridge.items[0].incident_id == older
    assert {await incident_of(store, uid) for uid in ("B-1", "B-2", "B-3")} == {older}
    cases = CaseBook(store)
    gone = await cases.get(younger)
    assert gone.status == CaseStatus.CLOSED
    assert [(link.kind, link.incident_id) for link in gone.links] == [(LinkKind.MERGED_INTO, older)]
    kept = await cases.get(older)
    assert kept.status != CaseStatus.CLOSED
    merge = [e for e in await Ledger(store).entries(younger) if e.verb == "merge"]
    assert len(merge) == 1 and merge[0].approvers == [CORRELATION_ACTOR]
    assert merge[0].parameters["into"] == older and merge[0].parameters["alerts"] == 1
    assert (await Ledger(store).verify()).ok
    # The survivor now carries bob and the IP: a later alert on bob alone joins it.
    later = await intake.ingest("acme", "ocsf", [alert("B-4", user="bob", at=T0 + 3000)])
    assert later.items[0].incident_id == older and later.new_incidents == 0
    assert len(set(starts.ids)) == len(starts.ids)


async def test_a_merge_leaves_executed_actions_with_their_incident_and_lists_them(
    store: Store,
) -> None:
    """Given a younger incident with one executed containment and one claimed but not yet
    run, When a bridging alert merges it into the older one, Then the executed action
    stays with the younger incident and the ledger's merge entry names it, while the
    action not yet executed moves to the survivor."""
    intake = Intake(store, start_incident=Starts())
    await intake.ingest("acme", "ocsf", [alert("E-1", host="WS-5")])
    await intake.ingest("acme", "ocsf", [alert("E-2", user="carol", at=T0 + 1000)])
    older, younger = await incident_of(store, "E-1"), await incident_of(store, "E-2")
    done = plan(tenant="acme", incident_id=younger, target="aid-6", target_label="WS-6")
    await store.claim(done)
    await store.finish_action(
        ActionResult(
            plan=done,
            plan_sha256=done.sha256,
            verdict=Verdict.APPROVAL,
            status=ActionStatus.EXECUTED,
            approved_by=["cli:alice"],
            vendor="crowdstrike",
            receipt=ActionReceipt(
                verb=done.verb,
                target="aid-6",
                vendor="crowdstrike",
                changed=True,
                state="contained",
            ),
        )
    )
    pending = plan(tenant="acme", incident_id=younger, target="aid-7", target_label="WS-7")
    await store.claim(pending)
    bridge = await intake.ingest(
        "acme", "ocsf", [alert("E-3", host="WS-5", user="carol", at=T0 + 2000)]
    )
    assert bridge.merged == {younger: older}
    rows = {r.target: r.incident_id for r in await _actions(store)}
    assert rows == {"aid-6": younger, "aid-7": older}
    merge = [e for e in await Ledger(store).entries(younger) if e.verb == "merge"]
    assert merge[0].parameters["kept_actions"] == ["edr.contain_host aid-6"]
    assert merge[0].parameters["actions"] == 1


async def _actions(store: Store) -> list[ActionRow]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(ActionRow))).all())  # type: ignore[arg-type]
