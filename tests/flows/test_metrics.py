"""Clocks across incidents, from stored stage transitions and decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.models import ActionResult, ActionStatus, Verdict
from flows.record import (
    BUILT_IN,
    ActionRow,
    ApprovalRow,
    Store,
    clocks_of,
    incident_clocks,
    period_report,
    summarise,
)
from flows.record.metrics import percentile
from tests.flows.factories import incident, plan
from tests.postgres import BACKENDS, backend_store


def test_percentile_is_nearest_rank() -> None:
    """Given ten values, Then p90 is the ninth and the median rank of one is itself."""
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.9) == 9.0
    assert percentile([4.0], 0.9) == 4.0
    assert percentile(values, 1.0) == 10.0


def _action(inc_id: str, *, status: str, at: datetime, verdict: str = "approval") -> ActionRow:
    """A stored containment action of ``inc_id`` that finished at ``at``."""
    p = plan(incident_id=inc_id)
    return ActionRow(
        idempotency_key=p.idempotency_key,
        incident_id=inc_id,
        tenant=p.tenant,
        action=p.action,
        target=p.target,
        plan_sha256=p.sha256,
        plan=p.model_dump(mode="json"),
        status=status,
        attempts=1,
        result={"verdict": verdict, "status": status},
        started_at=at - timedelta(seconds=1),
        finished_at=at.replace(tzinfo=None),  # as SQLite hands it back
    )


def _approval(inc_id: str, t0: datetime, *, asked: float, decided: float) -> ApprovalRow:
    return ApprovalRow(
        id="APR-1",
        incident_id=inc_id,
        tenant="demo",
        requester="t",
        plans={},
        status="approved",
        decided_by="cli:alice",
        requested_at=t0 + timedelta(seconds=asked),
        decided_at=(t0 + timedelta(seconds=decided)).replace(tzinfo=None),
        deadline=t0 + timedelta(minutes=5),
    )


def test_clocks_come_from_recorded_events() -> None:
    """Given an incident whose first alert is T0, the flow's own status change at T0+5 s,
    an analyst's note at T0+30 s, a decision at T0+42 s after a request at T0+40 s, the
    first containment action executed at T0+50 s and the case closed at T0+600 s,
    When its clocks are computed,
    Then each is measured from the first alert to that event: acknowledge is the note (the
    first human touch; the flow's change is not one), contain the executed action, resolve
    the closure."""
    inc = incident()
    t0 = inc.first_seen
    clocks = clocks_of(
        inc,
        approvals=[_approval(inc.id, t0, asked=40, decided=42)],
        actions=[_action(inc.id, status="executed", at=t0 + timedelta(seconds=50))],
        touches=[
            ("stanch:flow", t0 + timedelta(seconds=5)),
            ("cli:bob@soc", t0 + timedelta(seconds=30)),
        ],
        status="closed",
        closed_at=t0 + timedelta(seconds=600),
    )
    assert clocks.clocks["acknowledge"] == 30.0
    assert clocks.clocks["contain"] == 50.0
    assert clocks.clocks["resolve"] == 600.0
    assert clocks.clocks["approval_wait"] == 2.0
    assert clocks.approver_latency == {"cli:alice": [2.0]}
    assert clocks.clocks["detect"] == round((inc.created_at - t0).total_seconds(), 3)
    assert clocks.missing == {}
    assert clocks.contained_by == "human"


@pytest.mark.parametrize(
    ("status", "why"),
    [
        ("denied", "containment denied"),
        ("failed", "containment failed"),
        ("forbidden", "containment forbidden by policy"),
        ("already_done", "the targets were already contained"),
    ],
)
def test_containment_that_did_not_execute_leaves_contain_empty_and_says_why(
    status: str, why: str
) -> None:
    """Given an incident whose only containment action was denied (failed, forbidden,
    or found already in place),
    When its clocks are computed, Then contain is empty, the reason is given, and an
    open case has no resolve clock either."""
    inc = incident()
    action = _action(inc.id, status=status, at=inc.first_seen + timedelta(seconds=50))
    clocks = clocks_of(inc, actions=[action], status="awaiting-closure")
    assert clocks.clocks["contain"] is None
    assert clocks.missing["contain"] == why
    assert clocks.clocks["resolve"] is None
    assert clocks.missing["resolve"] == "the case is awaiting-closure"
    assert clocks.contained_by is None


def test_contain_is_the_first_containment_executed_and_unattended_is_automation() -> None:
    """Given two containment actions executed unattended at T0+50 s and T0+500 s,
    When the clocks are computed, Then time to contain is 50 s and the containment
    needed no human."""
    inc = incident()
    t0 = inc.first_seen
    actions = [
        _action(inc.id, status="executed", at=t0 + timedelta(seconds=s), verdict="unattended")
        for s in (500, 50)
    ]
    clocks = clocks_of(inc, actions=actions)
    assert clocks.clocks["contain"] == 50.0
    assert clocks.contained_by == "automation"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on SQLite, and on PostgreSQL when one is reachable."""
    async with backend_store(request.param, tmp_path) as opened:
        yield opened


async def test_summary_and_period_report_per_tenant(store: Store) -> None:
    """Given two demo incidents, one with an executed containment and one release (an
    undo), the other with nothing executed,
    When summarised and reported, Then counts, medians and actions per tenant are right,
    and the contained one counts as contained with a human's approval."""
    for n in (1, 2):
        inc = incident(n)
        await store.save_incident(inc)
    contained = plan(incident_id=incident(1).id)
    released = plan(incident_id=incident(1).id, verb="release_host")
    for p in (contained, released):
        await store.finish_action(
            ActionResult(
                plan=p,
                plan_sha256=p.sha256,
                verdict=Verdict.APPROVAL,
                status=ActionStatus.EXECUTED,
                approved_by=["cli:alice"],
            )
        )
    clocks = await incident_clocks(store, tenant="demo")
    summary = summarise(clocks)
    assert summary["demo"]["incidents"] == 2
    assert summary["demo"]["contain"]["n"] == 1
    assert summary["demo"]["acknowledge"] is None  # nobody decided anything
    assert summary["demo"]["containment"] == {"automation": 0, "human": 1, "automation_rate": 0.0}

    report = await period_report(store, tenant="demo", since=datetime.now(UTC) - timedelta(days=7))
    assert report["incidents"] == 2
    assert report["by_severity"] == {"critical": 2}
    assert report["actions_taken"] == {"edr.contain_host": 1, "edr.release_host": 1}
    assert report["actions_undone"] == 1
    assert report["by_playbook"] == {BUILT_IN: 2}
    assert (await incident_clocks(store, tenant="other")) == []


async def test_metrics_and_report_group_incidents_by_playbook(store: Store) -> None:
    """Given three incidents of tenant demo, two handled by the ransomware playbook (one of
    them contained) and one by the built-in response, and one of tenant acme by phishing,
    When summarised by playbook and reported for demo,
    Then each playbook is a row with its own counts and clocks, the built-in response is
    labelled "(built-in)", and the report counts incidents per playbook."""
    handled = {1: "ransomware", 2: "ransomware", 3: None}
    for n, playbook in handled.items():
        await store.save_incident(incident(n))
        await store.set_incident_playbook(incident(n).id, playbook)
    contained = plan(incident_id=incident(1).id)
    await store.finish_action(
        ActionResult(
            plan=contained,
            plan_sha256=contained.sha256,
            verdict=Verdict.UNATTENDED,
            status=ActionStatus.EXECUTED,
            approved_by=["policy:unattended"],
        )
    )
    other = incident(4, tenant="acme")
    await store.save_incident(other)
    await store.set_incident_playbook(other.id, "phishing")

    clocks = await incident_clocks(store)
    assert {c.incident_id: c.playbook for c in clocks} == {
        **{incident(n).id: p for n, p in handled.items()},
        other.id: "phishing",
    }
    by_playbook = summarise(clocks, by="playbook")
    assert list(by_playbook) == [BUILT_IN, "phishing", "ransomware"]
    assert [by_playbook[k]["incidents"] for k in by_playbook] == [1, 1, 2]
    assert by_playbook["ransomware"]["contain"]["n"] == 1
    assert by_playbook[BUILT_IN]["contain"] is None
    assert by_playbook["ransomware"]["containment"]["automation_rate"] == 1.0
    assert {k: v["incidents"] for k, v in summarise(clocks).items()} == {"acme": 1, "demo": 3}

    report = await period_report(store, tenant="demo", since=datetime.now(UTC) - timedelta(days=7))
    assert report["by_playbook"] == {BUILT_IN: 1, "ransomware": 2}
