"""SLAs: the sweep flow, judged at a time the test chooses (no sleeping), warns in the
incident's Slack thread before a deadline, records the breach once, and `stanch metrics`
counts it; the policy's auto-close closes idle low-score incidents as policy:auto-close.

Runs the real sweep flow on the session's Prefect server, a store of the test's own, a
policy file with SLA targets, and the loopback FakeSlack.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient
from sqlalchemy import insert, select

from flows.models import utcnow
from flows.record import CaseBook, IncidentTriageRow, SlaEventRow, Store, open_store
from flows.sweep import sweep
from integrations.slack.fake import TEAM_ID, FakeSlack
from tests.flows import factories

pytestmark = pytest.mark.usefixtures("prefect_server")

CHANNEL = "C0SOC"
POLICY = """\
version: 1
approvers: {cli: true, cli_users: [alice@*]}
sla:
  warn_before: 5m
  targets:
    critical: {acknowledge: 15m, contain: 1h}
auto_close:
  - when: below-triage-threshold
    after: 2h
    disposition: false-positive
"""


@pytest.fixture
def policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rules of engagement for every tenant: critical incidents acknowledged in 15 min."""
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "default.yaml").write_text(POLICY)
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(directory))
    return directory


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    """A store of this test's own, which the flow opens too."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}"
    monkeypatch.setenv("STANCH_DATABASE_URL", url)
    async with open_store(url) as opened:
        yield opened


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """FakeSlack, and settings that point stanch's Slack at it."""
    with FakeSlack() as fake:
        monkeypatch.setenv("STANCH_APPROVAL_CHANNEL", "slack")
        monkeypatch.setenv("STANCH_SLACK_BOT_TOKEN", fake.token)
        monkeypatch.setenv("STANCH_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("STANCH_SLACK_TEAM_ID", TEAM_ID)
        monkeypatch.setenv("STANCH_SLACK_BASE_URL", fake.base_url)
        yield fake


def thread_replies(fake: FakeSlack, root: str) -> list[dict[str, object]]:
    return [m for m in fake.history if m.get("thread_ts") == root]


@pytest.mark.usefixtures("policies")
async def test_a_breach_is_warned_in_the_thread_recorded_once_and_counted(
    store: Store, slack: FakeSlack, tmp_path: Path
) -> None:
    """Given a critical incident whose Slack summary started its thread, and a policy
    giving critical incidents 15 minutes to be acknowledged (warning 5 minutes before),
    When the sweep runs at +9 min, twice at +11 min, then at +16 min,
    Then nothing is said at +9, one warning is posted in the thread and broadcast to the
    channel at +11 (not two), and at +16 the breach is posted and recorded; `stanch
    metrics --json` then counts one breached acknowledge for critical incidents, and a
    note afterwards does not turn the breach into a met target."""
    incident = factories.incident(4101)
    await store.save_incident(incident)
    root = WebClient(token=slack.token, base_url=slack.base_url).chat_postMessage(
        channel=CHANNEL, text="Incident summary"
    )["ts"]
    await store.record_incident_summary(incident.id, CHANNEL, str(root))
    t0 = incident.first_seen

    quiet = await sweep(approvals=False, now=t0 + timedelta(minutes=9))
    assert quiet.sla == [] and thread_replies(slack, str(root)) == []

    warned = await sweep(approvals=False, now=t0 + timedelta(minutes=11))
    again = await sweep(approvals=False, now=t0 + timedelta(minutes=11))
    assert [(n.clock, n.kind, n.posted) for n in warned.sla] == [("acknowledge", "warning", True)]
    assert again.sla == []
    (warning,) = thread_replies(slack, str(root))
    assert warning["reply_broadcast"] is True
    assert f"SLA warning: {incident.id} (critical) must be acknowledged" in str(warning["text"])
    assert "4 m 00 s left of 15 m 00 s" in str(warning["text"])

    breached = await sweep(approvals=False, now=t0 + timedelta(minutes=16))
    assert [(n.clock, n.kind) for n in breached.sla] == [("acknowledge", "breach")]
    assert "SLA breached" in str(thread_replies(slack, str(root))[-1]["text"])
    async with store.engine.connect() as conn:
        recorded = (await conn.execute(select(SlaEventRow.clock, SlaEventRow.kind))).all()
    assert sorted(tuple(r) for r in recorded) == [
        ("acknowledge", "breach"),
        ("acknowledge", "warning"),
    ]

    # Acknowledged at last, after the deadline: still a breach, not a met target.
    late = CaseBook(store, clock=lambda: t0 + timedelta(minutes=17))
    await late.note(incident.id, "looking now", actor="cli:alice")
    metrics = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "stanch", "metrics", "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert metrics.returncode == 0, metrics.stderr
    sla = json.loads(metrics.stdout)["demo"]["sla"]["critical"]
    assert sla["acknowledge"]["breached"] == 1 and sla["acknowledge"]["met"] == 0
    assert sla["contain"]["pending"] == 1  # an hour has not passed by the real clock


@pytest.mark.usefixtures("policies")
async def test_an_idle_incident_below_the_triage_threshold_is_closed_by_policy(
    store: Store,
) -> None:
    """Given an incident intake recorded below its tenant's triage threshold (no flow),
    and a policy closing such incidents after 2 h,
    When the sweep runs at +1 h, Then it stays new; at +3 h it is closed as a false
    positive by policy:auto-close, and the closure is in the ledger."""
    incident = factories.incident(4102)
    await store.save_incident(incident)
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(IncidentTriageRow).values(
                incident_id=incident.id,
                tenant=incident.tenant,
                score=12,
                severity=2,
                alert_count=1,
                started=False,
                updated_at=utcnow(),
            )
        )
    early = await sweep(approvals=False, now=utcnow() + timedelta(hours=1))
    assert early.auto_closed == []
    late = await sweep(approvals=False, now=utcnow() + timedelta(hours=3))
    assert late.auto_closed == [incident.id]
    case = await CaseBook(store).get(incident.id)
    assert (case.status, case.disposition, case.closed_by) == (
        "closed",
        "false-positive",
        "policy:auto-close",
    )
    assert "Triage score 12 stayed below the threshold" in (case.summary or "")
