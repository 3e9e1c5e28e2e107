"""`stanch serve` hosts the Slack side when approvals go through Slack."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flows.detect import Intake
from flows.record import Store, open_store
from integrations.slack.fake import FakeSlack, block_actions_payload, signed_interaction
from stanch.serve_cli import _slack_side
from stanch.service import ServiceSettings, create_app

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


async def _no_start(incident: object) -> None:
    return None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}") as opened:
        yield opened


async def test_serve_mounts_a_signature_checked_slack_route(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given Slack approvals configured with a signing secret,
    When the service is built and clicks arrive,
    Then a forged one gets 401 and a signed one for an unknown request is answered (acked),
    not refused."""
    with FakeSlack() as fake:
        for name, value in {
            "STANCH_APPROVAL_CHANNEL": "slack",
            "STANCH_SLACK_BOT_TOKEN": fake.token,
            "STANCH_SLACK_BASE_URL": fake.base_url,
            "STANCH_SLACK_CHANNEL": "C0APPROVALS",
            "STANCH_SLACK_TEAM_ID": fake.team_id,
            "STANCH_SLACK_SIGNING_SECRET": SECRET,
        }.items():
            monkeypatch.setenv(name, value)
        payload = block_actions_payload(
            approval_id="APR-unknown",
            action_id="stanch_approve",
            user_id="U0ALICE",
            channel_id="C0APPROVALS",
            message_ts="1.2",
            team_id=fake.team_id,
        )
        headers, body = signed_interaction(SECRET, payload, int(time.time()))
        async with _slack_side(store) as listener:
            assert listener is not None
            app = create_app(
                ServiceSettings(),
                Intake(store, start_incident=_no_start),
                sources={},
                slack=listener,
            )
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://stanch.local"
            ) as client:
                forged = await client.post(
                    "/slack/interactions",
                    content=body,
                    headers={**headers, "X-Slack-Signature": "v0=" + "0" * 64},
                )
                signed = await client.post("/slack/interactions", content=body, headers=headers)
            await listener.drain()
    assert forged.status_code == 401
    assert signed.status_code == 200


async def test_serve_refuses_half_configured_slack(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given Slack approvals without a signing secret or app token,
    When the service starts, Then it stops with a message naming both."""
    monkeypatch.setenv("STANCH_APPROVAL_CHANNEL", "slack")
    monkeypatch.setenv("STANCH_SLACK_BOT_TOKEN", "xoxb-x")
    monkeypatch.setenv("STANCH_SLACK_CHANNEL", "C0APPROVALS")
    monkeypatch.setenv("STANCH_SLACK_TEAM_ID", "T0STANCH")
    monkeypatch.delenv("STANCH_SLACK_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("STANCH_SLACK_APP_TOKEN", raising=False)
    with pytest.raises(SystemExit, match=r"STANCH_SLACK_APP_TOKEN .* STANCH_SLACK_SIGNING_SECRET"):
        async with _slack_side(store):
            pass


async def test_serve_names_every_missing_slack_setting(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given Slack approvals with a signing secret but no bot token and no team id,
    When the service starts, Then it stops with the shared builder's message naming both
    (and not the channel, which is set)."""
    monkeypatch.setenv("STANCH_APPROVAL_CHANNEL", "slack")
    monkeypatch.setenv("STANCH_SLACK_CHANNEL", "C0APPROVALS")
    monkeypatch.setenv("STANCH_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.delenv("STANCH_SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("STANCH_SLACK_TEAM_ID", raising=False)
    with pytest.raises(SystemExit) as stopped:
        async with _slack_side(store):
            pass
    message = str(stopped.value)
    assert "STANCH_SLACK_BOT_TOKEN" in message and "STANCH_SLACK_TEAM_ID" in message
    assert "STANCH_SLACK_CHANNEL" not in message
