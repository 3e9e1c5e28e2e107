"""Clocks across incidents, from stored stage transitions and decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.models import ActionResult, ActionStatus, Stage, Verdict
from flows.record import (
    BUILT_IN,
    ApprovalRow,
    StageEventRow,
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


def test_clocks_come_from_stage_transitions_and_decisions() -> None:
    """Given an incident whose first alert is T0, a decision at T0+42 s after a request at
    T0+40 s, contain done at T0+50 s and remediate at T0+60 s,
    When its clocks are computed, Then each is measured from the first alert."""
    inc = incident()
    t0 = inc.first_seen
    events = [
        StageEventRow(
            incident_id=inc.id,
            stage=Stage.CONTAIN,
            event="completed",
            at=t0 + timedelta(seconds=50),
        ),
        StageEventRow(
            incident_id=inc.id,
            stage=Stage.REMEDIATE,
            event="completed",
            at=t0 + timedelta(seconds=60),
        ),
    ]
    approvals = [
        ApprovalRow(
            id="APR-1",
            incident_id=inc.id,
            tenant=inc.tenant,
            requester="t",
            plans={},
            status="approved",
            decided_by="cli:alice",
            requested_at=t0 + timedelta(seconds=40),
            decided_at=(t0 + timedelta(seconds=42)).replace(tzinfo=None),
            deadline=t0 + timedelta(minutes=5),
        ),
    ]
    clocks = clocks_of(inc, events, approvals)
    assert clocks.clocks["acknowledge"] == 42.0
    assert clocks.clocks["contain"] == 50.0
    assert clocks.clocks["resolve"] == 60.0
    assert clocks.clocks["approval_wait"] == 2.0
    assert clocks.approver_latency == {"cli:alice": [2.0]}
    assert clocks.clocks["detect"] == round((inc.created_at - t0).total_seconds(), 3)


def test_a_rerun_completing_a_stage_again_does_not_move_its_clock() -> None:
    """Given an incident contained at T0+50 s and re-run later (contain completes again,
    replaying, at T0+500 s),
    When its clocks are computed, Then time to contain is still 50 s."""
    inc = incident()
    t0 = inc.first_seen
    events = [
        StageEventRow(
            incident_id=inc.id, stage=Stage.CONTAIN, event="completed", at=t0 + timedelta(seconds=s)
        )
        for s in (50, 500)
    ]
    assert clocks_of(inc, events, []).clocks["contain"] == 50.0


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store on SQLite, and on PostgreSQL when one is reachable."""
    async with backend_store(request.param, tmp_path) as opened:
        yield opened


async def test_summary_and_period_report_per_tenant(store: Store) -> None:
    """Given two demo incidents with contain and remediate recorded, one with an executed
    containment and one release (an undo),
    When summarised and reported, Then counts, medians and actions per tenant are right."""
    for n in (1, 2):
        inc = incident(n)
        await store.save_incident(inc)
        await store.record_stage(inc.id, Stage.CONTAIN, "completed")
        await store.record_stage(inc.id, Stage.REMEDIATE, "completed")
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
    assert summary["demo"]["contain"]["n"] == 2
    assert summary["demo"]["acknowledge"] is None  # nobody decided anything

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
    await store.record_stage(incident(1).id, Stage.CONTAIN, "completed")
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
    assert {k: v["incidents"] for k, v in summarise(clocks).items()} == {"acme": 1, "demo": 3}

    report = await period_report(store, tenant="demo", since=datetime.now(UTC) - timedelta(days=7))
    assert report["by_playbook"] == {BUILT_IN: 1, "ransomware": 2}
