"""Slack interactions over HTTP (signed request URL) and Socket Mode, into the service.

The HTTP route is mounted on the real service app and driven with httpx; the Socket Mode
runner talks to a local WebSocket server standing in for Slack. The resume is recorded
(``tests/flows/test_slack_gate.py`` covers it against Prefect).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.socket_mode.builtin.client import SocketModeClient

from flows.detect import Intake
from flows.models import Incident
from integrations.slack import APPROVE_ACTION_ID, SlackRequestVerifier
from integrations.slack.fake import TEAM_ID, block_actions_payload, signed_interaction
from stanch.service import ServiceSettings, create_app
from stanch.slack_listener import INTERACTIONS_PATH, SlackInteractions, SocketModeRunner
from tests.flows.test_approval_service import World, final_text, has_buttons
from tests.flows.test_approval_service import fake as fake  # the fixtures
from tests.flows.test_approval_service import world as world

SECRET = SecretStr("8f742231b10e8888abcd99yyyzzz85a5")
NOW = 1_790_000_000


async def _no_start(incident: Incident) -> None:
    return None


@pytest.fixture
async def listener(world: World) -> SlackInteractions:
    verifier = SlackRequestVerifier(SECRET, clock=lambda: NOW)
    return SlackInteractions(world.service.handle, verifier, team_id=TEAM_ID)


@pytest.fixture
async def client(world: World, listener: SlackInteractions) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        ServiceSettings(),
        Intake(world.store, start_incident=_no_start),
        sources={},
        slack=listener,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://stanch.test"
    ) as opened:
        yield opened


async def payload_for(world: World, approval_id: str, **changes: Any) -> dict[str, Any]:
    binding = await world.store.slack_approval(approval_id)
    assert binding is not None
    fields: dict[str, Any] = {
        "approval_id": approval_id,
        "action_id": APPROVE_ACTION_ID,
        "user_id": "UALICE",
        "channel_id": binding.channel,
        "message_ts": binding.ts,
        "response_url": world.fake.response_url(),
    }
    fields.update(changes)
    return block_actions_payload(**fields)


async def test_a_signed_click_is_acknowledged_then_decides(
    world: World, listener: SlackInteractions, client: httpx.AsyncClient
) -> None:
    """Given a posted approval,
    When Slack posts a correctly signed click by an approver,
    Then the route answers 200 with an empty body, and the service then resumes the run and
    updates the message."""
    request = await world.request()
    headers, body = signed_interaction(SECRET, await payload_for(world, request.id), NOW)

    response = await client.post(INTERACTIONS_PATH, content=body, headers=headers)
    await listener.drain()

    assert (response.status_code, response.content) == (200, b"")
    assert [h.outcome for h in listener.handled] == ["final"]
    assert [c["approver"] for c in world.submitted.calls] == ["UALICE"]
    message = await world.message(request.id)
    assert not has_buttons(message) and "<@UALICE>" in final_text(message)


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("stale", 401),
        ("future", 401),
        ("malformed-timestamp", 401),
        ("missing-signature", 401),
        ("wrong-secret", 401),
        ("tampered-body", 401),
    ],
)
async def test_bad_signatures_are_401_and_never_processed(
    world: World, listener: SlackInteractions, client: httpx.AsyncClient, case: str, status: int
) -> None:
    """Given a click that is not a fresh, correctly signed request from Slack,
    When it is posted to the route,
    Then the answer is 401 and nothing is decided."""
    request = await world.request()
    payload = await payload_for(world, request.id)
    secret: SecretStr | str = "not-the-secret" if case == "wrong-secret" else SECRET
    stamp = {"stale": NOW - 301, "future": NOW + 301}.get(case, NOW)
    headers, body = signed_interaction(secret, payload, stamp)
    if case == "malformed-timestamp":
        headers["X-Slack-Request-Timestamp"] = "17e8"
    if case == "missing-signature":
        del headers["X-Slack-Signature"]
    if case == "tampered-body":
        body = body.replace(b"UALICE", b"UBOB00")

    response = await client.post(INTERACTIONS_PATH, content=body, headers=headers)
    await listener.drain()

    assert response.status_code == status
    assert listener.handled == [] and world.submitted.calls == []
    assert has_buttons(await world.message(request.id))


async def test_a_signed_click_from_another_workspace_is_dropped(
    world: World, listener: SlackInteractions, client: httpx.AsyncClient
) -> None:
    """Given a correctly signed click whose team is another workspace,
    When it is posted,
    Then it is acknowledged but never reaches the service."""
    request = await world.request()
    payload = await payload_for(world, request.id, team_id="T0OTHER")
    headers, body = signed_interaction(SECRET, payload, NOW)
    response = await client.post(INTERACTIONS_PATH, content=body, headers=headers)
    await listener.drain()
    assert response.status_code == 200
    assert listener.handled == [] and world.submitted.calls == []


async def test_an_unsupported_payload_is_400(
    world: World, listener: SlackInteractions, client: httpx.AsyncClient
) -> None:
    """Given a signed body that is not an approval interaction,
    When posted, Then 400 and nothing is processed."""
    headers, body = signed_interaction(SECRET, {"type": "shortcut", "team": {"id": TEAM_ID}}, NOW)
    response = await client.post(INTERACTIONS_PATH, content=body, headers=headers)
    assert response.status_code == 400
    assert listener.handled == []


# Socket Mode ---------------------------------------------------------------------------------
def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Block (in a worker thread) until ``condition`` holds or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


class FakeSocketSlack:
    """A local WebSocket endpoint speaking Socket Mode: hello, one envelope, read the ack."""

    def __init__(self, envelope: dict[str, Any]) -> None:
        self.envelope = envelope
        self.acks: list[dict[str, Any]] = []
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from websockets.asyncio.server import ServerConnection, serve

        async def session(ws: ServerConnection) -> None:
            await ws.send(json.dumps({"type": "hello", "num_connections": 1}))
            await ws.send(json.dumps(self.envelope))
            async for raw in ws:
                self.acks.append(json.loads(raw))

        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(session, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/link"
            self._ready.set()
            await self._stop

    def __enter__(self) -> FakeSocketSlack:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(5)


async def test_socket_mode_click_is_acked_by_envelope_id_and_decides(world: World) -> None:
    """Given a posted approval and Slack's Socket Mode endpoint (a local WebSocket),
    When Slack sends the click as an interactive envelope,
    Then the runner acks the envelope id and the service resumes the run and updates the
    message."""
    request = await world.request()
    envelope = {
        "envelope_id": "env-1",
        "type": "interactive",
        "accepts_response_payload": False,
        "payload": await payload_for(world, request.id),
    }
    with FakeSocketSlack(envelope) as slack_ws:
        web = WebClient(token=world.fake.token, base_url=world.fake.base_url, timeout=5)
        client = SocketModeClient(
            app_token="xapp-fake",
            web_client=web,
            auto_reconnect_enabled=False,
        )
        # apps.connections.open is not in the HTTP fake: hand the client the local URL.
        client.wss_uri = slack_ws.url
        client.issue_new_wss_url = lambda *a, **k: slack_ws.url  # type: ignore[method-assign]
        runner = SocketModeRunner(
            client, world.service.handle, asyncio.get_running_loop(), team_id=TEAM_ID
        )
        await asyncio.to_thread(runner.connect)
        try:
            await asyncio.to_thread(wait_for, lambda: bool(runner.futures))
            [future] = runner.futures
            handled = await asyncio.wrap_future(future)
            await asyncio.to_thread(wait_for, lambda: bool(slack_ws.acks))
        finally:
            await asyncio.to_thread(runner.close)
    assert slack_ws.acks[0] == {"envelope_id": "env-1"}
    assert handled.outcome == "final"
    assert [c["approver"] for c in world.submitted.calls] == ["UALICE"]
    assert not has_buttons(await world.message(request.id))
