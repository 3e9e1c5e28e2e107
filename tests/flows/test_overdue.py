"""The approval-overdue flow posts what still waits, and nothing else, to a second channel."""

from __future__ import annotations

import pytest

from flows.approval import new_approval_request, pending_row
from flows.approval.overdue import approval_overdue
from flows.record import Store
from integrations.slack.fake import FakeSlack
from tests.flows import factories
from tests.flows.test_slack_gate import fake, store

pytestmark = pytest.mark.usefixtures("prefect_server")
__all__ = ["fake", "store"]  # fixtures, used by name

OVERDUE = "C0SOCOVERDUE"
_numbers = iter(range(8300, 8400))


async def test_pending_approvals_are_posted_to_the_overdue_channel_as_plain_text(
    fake: FakeSlack, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an incident (titled with mrkdwn) with one pending and one decided approval,
    When approval-overdue runs for it,
    Then one notice reaches the overdue channel, naming the pending request, as plain text
    with the fallback escaped; the decided one is not posted."""
    monkeypatch.setenv("STANCH_SLACK_OVERDUE_CHANNEL", OVERDUE)
    incident = factories.incident(next(_numbers), title="<!channel> *urgent*")
    plans = [factories.plan(incident_id=incident.id)]
    waiting = new_approval_request(
        incident_id=incident.id,
        tenant=incident.tenant,
        flow_run_id=None,
        plans=plans,
        reasons={plans[0].sha256: "policy"},
        timeout_seconds=3600,
        incident_title=incident.title,
    )
    done = waiting.model_copy(update={"id": waiting.id + "-r2"})
    await store.create_approval(pending_row(waiting))
    await store.create_approval(pending_row(done))
    await store.decide_approval(done.id, status="approved", decided_by="cli:alice", reason="ok")

    posted = await approval_overdue(incident.id)

    assert posted == [waiting.id]
    [notice] = [m for m in fake.history if m["method"] == "chat.postMessage"]
    assert notice["channel"] == OVERDUE
    assert notice["blocks"][0]["text"]["type"] == "plain_text"
    assert waiting.id in notice["text"] and "stanch approve" in notice["text"]
    assert "<!channel>" not in notice["text"]


async def test_an_event_that_names_no_incident_is_refused(fake: FakeSlack) -> None:
    """Given an event forged with a resource name that is not an incident id,
    When approval-overdue runs with it,
    Then the run fails naming the value, and nothing is posted."""
    state = await approval_overdue("<!here> see http://evil.example", return_state=True)
    assert state.is_failed()
    assert "is not an incident id" in str(await state.aresult(raise_on_failure=False))
    assert not [m for m in fake.history if m["method"] == "chat.postMessage"]
