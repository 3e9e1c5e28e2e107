"""Slack interactions into the stanch service: the HTTP request URL and Socket Mode.

Both transports only verify, parse and acknowledge; the work (authorisation, votes, the
message update, the resume) runs afterwards in :class:`flows.approval.service.ApprovalService`
so Slack gets its acknowledgement well within three seconds.

* HTTP: ``POST /slack/interactions``. Any signature problem (missing, malformed timestamp,
  stale, mismatch) is a 401 and nothing is parsed; an unparseable payload is a 400; a payload
  of another workspace or app is acknowledged (200) and dropped.
* Socket Mode: :class:`SocketModeRunner` wraps ``slack_sdk.socket_mode.SocketModeClient``
  (the builtin, stdlib-only client). There are no signatures on that path: the TLS WebSocket
  opened with the app-level token is the trust anchor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any

from slack_sdk.socket_mode.builtin.client import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flows.approval import Handled
from integrations.slack import (
    Interaction,
    InteractionError,
    MalformedPayload,
    SelectionChange,
    SlackRequestVerifier,
    SlackSignatureError,
    WrongTeam,
    parse_interaction,
    parse_payload,
)
from integrations.slack.interactions import MAX_BODY_BYTES

log = logging.getLogger("stanch.slack")

INTERACTIONS_PATH = "/slack/interactions"

Handler = Callable[[Interaction], Coroutine[Any, Any, Handled]]


class SlackInteractions:
    """The HTTP request URL for Slack interactivity.

    Args:
        handle: what to do with a verified, parsed interaction (``ApprovalService.handle``).
        verifier: checks the ``v0`` request signature.
        team_id: the only workspace accepted.
        app_id: when given, the only app id accepted.
    """

    def __init__(
        self,
        handle: Handler,
        verifier: SlackRequestVerifier,
        *,
        team_id: str,
        app_id: str | None = None,
    ) -> None:
        self._handle = handle
        self._verifier = verifier
        self._team = team_id
        self._app = app_id
        self._tasks: set[asyncio.Task[Handled]] = set()
        self.handled: list[Handled] = []

    def route(self) -> Route:
        """The Starlette route to mount on the service."""
        return Route(INTERACTIONS_PATH, self.endpoint, methods=["POST"])

    async def endpoint(self, request: Request) -> Response:
        """Verify, parse, acknowledge; the work is scheduled after the response."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = await request.body()
        try:
            self._verifier.verify(request.headers, body)
        except SlackSignatureError as exc:
            log.warning("slack interaction refused: %s", exc.reason)
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        try:
            interaction = parse_interaction(body, team_id=self._team, app_id=self._app)
        except WrongTeam as exc:
            log.warning("slack interaction from elsewhere dropped: %s", exc)
            return Response(status_code=200)
        except SelectionChange:
            # A ticked or unticked plan checkbox: Slack wants the ack, nothing is decided.
            return Response(status_code=200)
        except MalformedPayload as exc:
            log.warning("slack interaction not understood: %s", exc)
            return JSONResponse({"error": "unsupported interaction"}, status_code=400)
        self._schedule(interaction)
        # An empty 200 acknowledges a click and closes a submitted modal.
        return Response(status_code=200)

    def _schedule(self, interaction: Interaction) -> None:
        task = asyncio.create_task(self._handle(interaction))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Handled]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("slack interaction failed", exc_info=task.exception())
            return
        self.handled.append(task.result())

    async def drain(self) -> None:
        """Wait for the interactions acknowledged so far to be processed."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def parse_socket_payload(
    payload: Mapping[str, Any], *, team_id: str, app_id: str | None = None
) -> Interaction:
    """An ``interactive`` envelope's payload (already JSON, no form encoding) as a value.

    Raises:
        InteractionError: not an interaction stanch handles, or another workspace.
    """
    return parse_payload(payload, team_id=team_id, app_id=app_id)


class SocketModeRunner:
    """Receive interactions over Socket Mode and hand them to the service's event loop.

    Args:
        client: a builtin ``SocketModeClient`` (app-level token; ``web_client`` with the
            bot token and, for a fake, its ``base_url``).
        handle: the service's ``handle`` coroutine function.
        loop: the event loop the service runs on.
        team_id: the only workspace accepted.
        app_id: when given, the only app id accepted.
    """

    def __init__(
        self,
        client: SocketModeClient,
        handle: Handler,
        loop: asyncio.AbstractEventLoop,
        *,
        team_id: str,
        app_id: str | None = None,
    ) -> None:
        self.client = client
        self._handle = handle
        self._loop = loop
        self._team = team_id
        self._app = app_id
        self.futures: list[Future[Handled]] = []
        client.socket_mode_request_listeners.append(self._on_request)

    def _on_request(self, client: BaseSocketModeClient, request: SocketModeRequest) -> None:
        # Ack first, on the envelope id, whatever the payload: Slack retries unacked ones.
        client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type != "interactive":
            return
        try:
            interaction = parse_socket_payload(
                request.payload, team_id=self._team, app_id=self._app
            )
        except SelectionChange:
            return
        except InteractionError as exc:
            log.warning("socket mode interaction dropped: %s", exc)
            return
        self.futures.append(asyncio.run_coroutine_threadsafe(self._handle(interaction), self._loop))

    def connect(self) -> None:
        """Open the WebSocket (``apps.connections.open``); returns once connected."""
        self.client.connect()

    def close(self) -> None:
        """Close the connection and the client's threads."""
        self.client.close()


__all__ = [
    "INTERACTIONS_PATH",
    "SlackInteractions",
    "SocketModeRunner",
    "parse_socket_payload",
]
