"""Cases in the store: each change checked, recorded with who and when, in the ledger;
each refusal names the field or state and changes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from flows.errors import CaseConflict, CaseInputError, UnknownIncident
from flows.models import ActionResult, ActionStatus, CaseStatus, Verdict
from flows.record import (
    AlertRow,
    CaseBook,
    EntryKind,
    IncidentEntityRow,
    Ledger,
    Store,
)
from tests.flows.factories import incident, plan
from tests.postgres import BACKENDS, backend_store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on SQLite, and on PostgreSQL when one is reachable."""
    async with backend_store(request.param, tmp_path) as opened:
        yield opened


async def _saved(store: Store, *numbers: int, tenant: str = "demo") -> list[str]:
    ids = []
    for n in numbers:
        inc = incident(n, tenant=tenant)
        await store.save_incident(inc)
        ids.append(inc.id)
    return ids


async def _entries(store: Store) -> int:
    return (await Ledger(store).head()).seq


async def test_the_flow_moves_a_case_forward_only(store: Store) -> None:
    """Given a new case, When the flow advances it to contained, then tries investigating,
    Then it is contained (a step back is a no-op); once closed by a person, the flow
    cannot move it at all; each change is a ledger entry naming the flow."""
    (inc,) = await _saved(store, 1)
    book = CaseBook(store)
    assert (await book.get(inc)).status == CaseStatus.NEW
    assert await book.advance(inc, CaseStatus.CONTAINED, reason="host isolated")
    assert not await book.advance(inc, CaseStatus.INVESTIGATING, reason="late")
    await book.close(inc, disposition="true-positive", summary="done", actor="cli:alice")
    assert not await book.advance(inc, CaseStatus.AWAITING_CLOSURE, reason="re-run")
    case = await book.get(inc)
    assert case.status == CaseStatus.CLOSED
    assert [(t.from_status, t.to_status, t.actor) for t in case.transitions] == [
        ("new", "contained", "stanch:flow"),
        ("contained", "closed", "cli:alice"),
    ]
    entries = await Ledger(store).entries(inc)
    assert [(e.kind, e.verb, e.status) for e in entries] == [
        (EntryKind.CASE, "advance", "contained"),
        (EntryKind.CASE, "close", "closed"),
    ]


async def test_closing_records_disposition_and_summary_in_the_verified_ledger(
    store: Store,
) -> None:
    """Given an open case, When an analyst closes it as a true positive with a summary,
    Then the case says so, and the ledger entry carries disposition, summary and actor
    and the chain verifies; editing the stored summary breaks verification at it."""
    (inc,) = await _saved(store, 1)
    await CaseBook(store).close(
        inc, disposition="true-positive", summary="Ransomware, contained", actor="cli:alice"
    )
    case = await CaseBook(store).get(inc)
    assert (case.disposition, case.summary, case.closed_by) == (
        "true-positive",
        "Ransomware, contained",
        "cli:alice",
    )
    (entry,) = await Ledger(store).entries(inc)
    assert entry.parameters["disposition"] == "true-positive"
    assert (entry.reason, entry.approvers) == ("Ransomware, contained", ["cli:alice"])
    assert (await Ledger(store).verify()).ok
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE ledger_entries SET reason = 'benign' WHERE seq = 1"))
    report = await Ledger(store).verify()
    assert not report.ok and report.broken_seq == 1
    assert "case close" in (report.label or "")


@pytest.mark.parametrize(
    ("disposition", "duplicate_of", "field"),
    [
        (None, None, "disposition"),
        ("", None, "disposition"),
        ("resolved", None, "disposition"),
        ("duplicate", None, "duplicate_of"),
        ("duplicate", "INC-1", "duplicate_of"),
        ("false-positive", "INC-20261121-0002", "duplicate_of"),
    ],
)
async def test_a_bad_closure_names_the_field_and_changes_nothing(
    store: Store, disposition: str | None, duplicate_of: str | None, field: str
) -> None:
    """Given an open case, When it is closed with no, an unknown, or an inconsistent
    disposition, Then the error names the field and the case and ledger are unchanged."""
    (inc,) = await _saved(store, 1)
    with pytest.raises(CaseInputError) as raised:
        await CaseBook(store).close(
            inc,
            disposition=disposition,
            summary="x",
            actor="cli:alice",
            duplicate_of=duplicate_of,
        )
    assert raised.value.field == field
    assert (await CaseBook(store).get(inc)).status == CaseStatus.NEW
    assert await _entries(store) == 0


async def test_closing_a_closed_case_is_a_conflict(store: Store) -> None:
    """Given a closed case, When closed again, Then CaseConflict; the first closure stands."""
    (inc,) = await _saved(store, 1)
    book = CaseBook(store)
    await book.close(inc, disposition="false-positive", summary="lab host", actor="cli:a")
    with pytest.raises(CaseConflict, match="already closed"):
        await book.close(inc, disposition="true-positive", summary="no!", actor="cli:b")
    case = await book.get(inc)
    assert (case.disposition, case.closed_by) == ("false-positive", "cli:a")
    assert await _entries(store) == 1


async def test_two_analysts_closing_at_once_one_wins(store: Store) -> None:
    """Given an open case, When two analysts close it at the same moment, Then exactly one
    closure is recorded and the other gets CaseConflict."""
    (inc,) = await _saved(store, 1)

    async def close(who: str) -> str:
        try:
            await CaseBook(store).close(
                inc, disposition="true-positive", summary=who, actor=f"cli:{who}"
            )
        except CaseConflict:
            return "refused"
        return "closed"

    outcomes = await asyncio.gather(close("alice"), close("bob"))
    assert sorted(outcomes) == ["closed", "refused"]
    assert len((await CaseBook(store).get(inc)).transitions) == 1


async def test_duplicate_closure_links_to_the_original_of_the_same_tenant(store: Store) -> None:
    """Given two incidents of demo and one of acme, When one demo incident is closed as a
    duplicate of the other, Then it links to it; naming acme's incident is refused as
    unknown (no tenant sees another's ids)."""
    first, second = await _saved(store, 1, 2)
    (foreign,) = await _saved(store, 3, tenant="acme")
    book = CaseBook(store)
    with pytest.raises(CaseInputError, match="no incident") as raised:
        await book.close(
            second, disposition="duplicate", summary="s", actor="cli:a", duplicate_of=foreign
        )
    assert raised.value.field == "duplicate_of"
    await book.close(
        second, disposition="duplicate", summary="same host", actor="cli:a", duplicate_of=first
    )
    case = await book.get(second)
    assert case.duplicate_of == first
    assert [(x.kind, x.incident_id, x.direction) for x in case.links] == [
        ("duplicate-of", first, "out")
    ]
    assert [(x.kind, x.incident_id, x.direction) for x in (await book.get(first)).links] == [
        ("duplicate-of", second, "in")
    ]


async def test_reopen_needs_a_closed_case_and_a_reason(store: Store) -> None:
    """Given an open case, When reopened, Then CaseConflict; closed, reopening without a
    reason names the field; with one, the case is reopened and the closure is no longer
    in force."""
    (inc,) = await _saved(store, 1)
    book = CaseBook(store)
    with pytest.raises(CaseConflict, match="not closed"):
        await book.reopen(inc, reason="why not", actor="cli:a")
    await book.close(inc, disposition="false-positive", summary="s", actor="cli:a")
    with pytest.raises(CaseInputError) as raised:
        await book.reopen(inc, reason="   ", actor="cli:a")
    assert raised.value.field == "reason"
    await book.reopen(inc, reason="new evidence", actor="cli:b")
    case = await book.get(inc)
    assert (case.status, case.disposition, case.closed_at) == ("reopened", None, None)


async def test_notes_are_appended_with_author_and_a_huge_one_is_refused(store: Store) -> None:
    """Given a case, When two notes are added, Then both are kept in order with author
    and time; a note of a megabyte, or one with control characters, is refused naming
    the field and stores nothing."""
    (inc,) = await _saved(store, 1)
    book = CaseBook(store)
    await book.note(inc, "first look: beaconing", actor="cli:alice")
    await book.note(inc, "user confirms travel", actor="slack:U0BOB")
    for bad in ("x" * 1_000_000, "red\x1b[31mtext"):
        with pytest.raises(CaseInputError) as raised:
            await book.note(inc, bad, actor="cli:mallory")
        assert raised.value.field == "text"
    notes = (await book.get(inc)).notes
    assert [(n.author, n.text) for n in notes] == [
        ("cli:alice", "first look: beaconing"),
        ("slack:U0BOB", "user confirms travel"),
    ]
    assert notes[0].at <= notes[1].at
    assert await _entries(store) == 2


async def test_another_tenants_incident_is_unknown(store: Store) -> None:
    """Given an acme incident, When demo's caller notes, assigns, closes or reads it,
    Then UnknownIncident each time and nothing is recorded."""
    (inc,) = await _saved(store, 1, tenant="acme")
    book = CaseBook(store)
    for change in (
        book.note(inc, "hi", actor="api:demo", tenant="demo"),
        book.assign(inc, "alice", actor="api:demo", tenant="demo"),
        book.close(inc, disposition="true-positive", summary="s", actor="api:demo", tenant="demo"),
        book.get(inc, tenant="demo"),
    ):
        with pytest.raises(UnknownIncident):
            await change
    assert await _entries(store) == 0


async def test_assignment_and_listing(store: Store) -> None:
    """Given three cases, two assigned (one twice), When listed by assignee and status,
    Then the current assignee counts; a closed case cannot be assigned."""
    a, b, c = await _saved(store, 1, 2, 3)
    book = CaseBook(store)
    await book.assign(a, "alice", actor="cli:lead")
    await book.assign(b, "alice", actor="cli:lead")
    await book.assign(b, "bob", actor="cli:lead")
    assert [x.incident_id for x in await book.list(assignee="alice")] == [a]
    assert {x.incident_id for x in await book.list(status="new")} == {a, b, c}
    await book.close(c, disposition="false-positive", summary="s", actor="cli:lead")
    with pytest.raises(CaseConflict):
        await book.assign(c, "alice", actor="cli:lead")
    with pytest.raises(CaseInputError):
        await book.assign(a, "two words", actor="cli:lead")
    assert (await book.get(b)).assignee == "bob"


async def test_merge_moves_alerts_entities_and_actions_and_closes_the_merged(
    store: Store,
) -> None:
    """Given two demo incidents, the first with a stored alert, an entity and an executed
    action, When the first is merged into the second,
    Then they move to the survivor, the merged one is closed as a duplicate pointing at it,
    and merging into itself, across tenants, or a closed one is refused."""
    first, second = await _saved(store, 1, 2)
    (foreign,) = await _saved(store, 3, tenant="acme")
    inc = incident(1)
    async with store.engine.begin() as conn:
        await conn.execute(
            AlertRow.__table__.insert().values(
                tenant="demo",
                source="ocsf",
                fingerprint="f" * 64,
                finding_uid="u-1",
                severity=5,
                occurred_ms=1,
                received_at=inc.created_at,
                incident_id=first,
                entities=[],
                finding={},
            )
        )
        for incident_id in (first, second):
            await conn.execute(
                IncidentEntityRow.__table__.insert().values(
                    incident_id=incident_id,
                    kind="host",
                    value="ws-0042",
                    tenant="demo",
                    first_seen_ms=10 if incident_id == first else 20,
                    last_seen_ms=30 if incident_id == first else 25,
                )
            )
    p = plan(incident_id=first)
    await store.finish_action(
        ActionResult(
            plan=p, plan_sha256=p.sha256, verdict=Verdict.UNATTENDED, status=ActionStatus.EXECUTED
        )
    )
    book = CaseBook(store)
    with pytest.raises(CaseInputError):
        await book.merge(first, into=first, actor="cli:a")
    with pytest.raises(CaseInputError, match="no incident"):
        await book.merge(first, into=foreign, actor="cli:a")

    moved = await book.merge(first, into=second, actor="cli:a")

    assert (moved.alerts, moved.entities, moved.actions) == (1, 1, 1)
    merged = await book.get(first)
    assert (merged.status, merged.disposition, merged.merged_into) == (
        "closed",
        "duplicate",
        second,
    )
    async with store.engine.connect() as conn:
        alert_owner = (await conn.execute(select(AlertRow.incident_id))).scalar_one()
        entities = (
            await conn.execute(
                select(
                    IncidentEntityRow.incident_id,
                    IncidentEntityRow.first_seen_ms,
                    IncidentEntityRow.last_seen_ms,
                )
            )
        ).all()
    assert alert_owner == second
    assert [tuple(e) for e in entities] == [(second, 10, 30)]
    assert [a.incident_id for a in await store.actions(second)] == [second]
    with pytest.raises(CaseConflict):
        await book.merge(first, into=second, actor="cli:a")
    assert (await Ledger(store).verify()).ok
