"""A local fake of the Slack Web API and of ``response_url``, plus signed interaction bodies.

A real HTTP server on 127.0.0.1 because ``slack_sdk`` uses urllib, which no httpx transport
can intercept. Point ``WebClient(token=fake.token, base_url=fake.base_url)`` at it.
Responses follow Slack's envelope: HTTP 200 with ``{"ok": false, "error": ...}`` for API
errors, and a real HTTP 429 with ``Retry-After`` when throttling is injected.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import SecretStr

from integrations.slack.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

JSON = dict[str, Any]

TEAM_ID = "T0STANCH"
BOT_USER_ID = "U0STANCHBOT"


@dataclass
class Call:
    """One Web API request as the fake received it.

    Attributes:
        method: the API method, ``chat.postMessage``.
        http_method: ``GET`` or ``POST``.
        params: query, form and JSON arguments merged (form values stay strings).
        content_type: the request's ``Content-Type``.
    """

    method: str
    http_method: str
    params: JSON
    content_type: str


@dataclass
class _State:
    messages: dict[tuple[str, str], JSON] = field(default_factory=dict)
    history: list[JSON] = field(default_factory=list)
    ephemerals: list[JSON] = field(default_factory=list)
    views: list[JSON] = field(default_factory=list)
    responses: list[JSON] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    users: dict[str, JSON] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    throttle: int = 0
    retry_after: int = 1


class FakeSlack:
    """Slack's Web API methods stanch uses, in memory, behind a real loopback HTTP server.

    Implements ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
    ``views.open``, ``usergroups.users.list`` and ``users.info``, and ``POST /response/<id>``
    for ``response_url``. Use as a context manager; the port is chosen by the OS.

    Args:
        token: the only bot token accepted (``Authorization: Bearer``).
        team_id: the workspace id it reports.
    """

    def __init__(
        self,
        token: str = "xoxb-fake-stanch",  # noqa: S107 - the fake's own test token
        *,
        team_id: str = TEAM_ID,
    ) -> None:
        self.token = token
        self.team_id = team_id
        self._state = _State()
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-slack", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("FakeSlack is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give ``WebClient``."""
        return f"{self.origin}/api/"

    # seeding and fault injection -------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str = "",
        *,
        deleted: bool = False,
        is_bot: bool = False,
        is_restricted: bool = False,
        is_ultra_restricted: bool = False,
        team_id: str | None = None,
        email: str | None = None,
    ) -> None:
        """Seed a user as ``users.info`` returns it (``email`` under ``profile``)."""
        with self._lock:
            self._state.users[user_id] = {
                "id": user_id,
                "team_id": team_id or self.team_id,
                "name": name or user_id.lower(),
                "deleted": deleted,
                "is_bot": is_bot,
                "is_app_user": False,
                "is_restricted": is_restricted,
                "is_ultra_restricted": is_ultra_restricted,
                "profile": {"real_name": name, **({"email": email} if email else {})},
            }

    def add_usergroup(self, usergroup_id: str, user_ids: list[str]) -> None:
        """Seed a user group's members for ``usergroups.users.list``."""
        with self._lock:
            self._state.usergroups[usergroup_id] = list(user_ids)

    def rate_limit(self, next_calls: int = 1, *, retry_after: int = 1) -> None:
        """Answer the next ``next_calls`` requests with HTTP 429 and ``Retry-After``."""
        with self._lock:
            self._state.throttle = next_calls
            self._state.retry_after = retry_after

    def response_url(self) -> str:
        """A fresh ``response_url`` served by this fake."""
        return f"{self.origin}/response/{secrets.token_hex(8)}"

    # what happened -----------------------------------------------------------------------

    @property
    def messages(self) -> dict[tuple[str, str], JSON]:
        """Current messages by ``(channel, ts)``, updates applied."""
        with self._lock:
            return dict(self._state.messages)

    @property
    def history(self) -> list[JSON]:
        """Every post and update in order, each with ``method``."""
        with self._lock:
            return list(self._state.history)

    @property
    def ephemerals(self) -> list[JSON]:
        """Ephemeral messages posted (``channel``, ``user``, ``text``)."""
        with self._lock:
            return list(self._state.ephemerals)

    @property
    def views(self) -> list[JSON]:
        """Views opened (``trigger_id``, ``view``)."""
        with self._lock:
            return list(self._state.views)

    @property
    def responses(self) -> list[JSON]:
        """Bodies POSTed to ``response_url`` values, each with its ``url``."""
        with self._lock:
            return list(self._state.responses)

    @property
    def calls(self) -> list[Call]:
        """Every request received, including throttled and refused ones."""
        with self._lock:
            return list(self._state.calls)

    def calls_to(self, method: str) -> list[Call]:
        """The requests received for one API method."""
        return [c for c in self.calls if c.method == method]

    # the API -------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def handle(
        self, path: str, http_method: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], JSON | str]:
        """Answer one request: status, extra headers, JSON body (or text for response_url)."""
        split = urlsplit(path)
        content_type = headers.get("Content-Type", "")
        params: JSON = dict(parse_qsl(split.query))
        if body:
            if content_type.startswith("application/json"):
                loaded = json.loads(body)
                if isinstance(loaded, dict):
                    params.update(loaded)
            else:
                params.update(parse_qsl(body.decode()))
        method = split.path.removeprefix("/api/")
        with self._lock:
            self._state.calls.append(Call(method, http_method, params, content_type))
            if self._state.throttle > 0:
                self._state.throttle -= 1
                retry = {"Retry-After": str(self._state.retry_after)}
                return 429, retry, {"ok": False, "error": "ratelimited"}
        if split.path.startswith("/response/"):
            return self._respond(split.path, params)
        if not split.path.startswith("/api/"):
            return 404, {}, {"ok": False, "error": "not_found"}
        auth = headers.get("Authorization", "")
        if not auth:
            return 200, {}, {"ok": False, "error": "not_authed"}
        if not secrets.compare_digest(auth.encode(), f"Bearer {self.token}".encode()):
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        route = _ROUTES.get(method)
        if route is None:
            return 200, {}, {"ok": False, "error": "unknown_method", "req_method": method}
        with self._lock:
            return 200, {}, route(self, params)

    def _respond(self, path: str, params: JSON) -> tuple[int, dict[str, str], str]:
        if not params.get("text") and not params.get("blocks"):
            return 400, {}, "no_text"
        with self._lock:
            self._state.responses.append({"url": self.origin + path, **params})
        return 200, {}, "ok"

    def _auth_test(self, params: JSON) -> JSON:
        return {
            "ok": True,
            "url": "https://stanch-fake.slack.com/",
            "team": "stanch-fake",
            "user": "stanch",
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": "B0STANCH",
        }

    def _post_message(self, params: JSON) -> JSON:
        channel = str(params.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER_ID, "ts": ts, **_message_fields(params)}
        self._state.messages[(channel, ts)] = message
        self._state.history.append({"method": "chat.postMessage", "channel": channel, **message})
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, params: JSON) -> JSON:
        key = (str(params.get("channel", "")), str(params.get("ts", "")))
        old = self._state.messages.get(key)
        if old is None:
            return {"ok": False, "error": "message_not_found"}
        message = {**old, **_message_fields(params), "edited": {"user": BOT_USER_ID}}
        if "blocks" not in params:
            message.pop("blocks", None)
        self._state.messages[key] = message
        self._state.history.append({"method": "chat.update", "channel": key[0], **message})
        return {"ok": True, "channel": key[0], "ts": key[1], "text": message.get("text", "")}

    def _post_ephemeral(self, params: JSON) -> JSON:
        user = str(params.get("user", ""))
        if user not in self._state.users:
            return {"ok": False, "error": "user_not_found"}
        self._state.ephemerals.append(
            {"channel": params.get("channel"), "user": user, **_message_fields(params)}
        )
        return {"ok": True, "message_ts": self._next_ts()}

    def _views_open(self, params: JSON) -> JSON:
        trigger_id = str(params.get("trigger_id", ""))
        view = params.get("view")
        if isinstance(view, str):  # form-encoded callers send the view as a JSON string
            view = json.loads(view)
        if not trigger_id:
            return {"ok": False, "error": "invalid_trigger_id"}
        if not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        view_id = f"V{next(self._ts):08d}"
        self._state.views.append({"trigger_id": trigger_id, "view": view})
        return {"ok": True, "view": {"id": view_id, "team_id": self.team_id, **view}}

    def _usergroup_users(self, params: JSON) -> JSON:
        members = self._state.usergroups.get(str(params.get("usergroup", "")))
        if members is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(members)}

    def _users_info(self, params: JSON) -> JSON:
        user = self._state.users.get(str(params.get("user", "")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}


def _message_fields(params: JSON) -> JSON:
    keep = ("text", "blocks", "thread_ts", "reply_broadcast", "unfurl_links", "unfurl_media")
    fields = {k: params[k] for k in keep if k in params}
    if isinstance(fields.get("blocks"), str):
        fields["blocks"] = json.loads(fields["blocks"])
    return fields


_ROUTES = {
    "auth.test": FakeSlack._auth_test,
    "chat.postMessage": FakeSlack._post_message,
    "chat.update": FakeSlack._update,
    "chat.postEphemeral": FakeSlack._post_ephemeral,
    "views.open": FakeSlack._views_open,
    "usergroups.users.list": FakeSlack._usergroup_users,
    "users.info": FakeSlack._users_info,
}


def _handler_for(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            status, extra, payload = fake.handle(self.path, self.command, headers, body)
            raw = payload if isinstance(payload, str) else json.dumps(payload)
            data = raw.encode()
            self.send_response(status)
            kind = "text/plain" if isinstance(payload, str) else "application/json"
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            # Silent: request lines would clutter test output (headers are never logged).
            pass

    return Handler


# interaction payloads ------------------------------------------------------------------


def signed_interaction(
    secret: SecretStr | str, payload: JSON, timestamp: int
) -> tuple[dict[str, str], bytes]:
    """The headers and body Slack would send for an interaction payload.

    Returns:
        ``(headers, body)``: form-encoded ``payload=<json>`` with its signature headers.
    """
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    return headers, body


def block_actions_payload(
    *,
    approval_id: str,
    action_id: str,
    user_id: str,
    channel_id: str,
    message_ts: str,
    team_id: str = TEAM_ID,
    username: str = "analyst",
    response_url: str = "https://hooks.slack.com/actions/T0STANCH/1/abc",
    trigger_id: str = "13345224609.738474920.8088930838d88f008e0",
    state: JSON | None = None,
) -> JSON:
    """A ``block_actions`` payload shaped like Slack's for a click on an approval button.

    Args:
        state: the message's ``state.values`` (e.g. :func:`selection_state`); left out of
            the payload when ``None``, as some deliveries do.
    """
    payload: JSON = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "stanch-fake"},
        "user": {"id": user_id, "username": username, "name": username, "team_id": team_id},
        "api_app_id": "A0STANCH",
        "token": "legacy-verification-token-ignored",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id,
        "channel": {"id": channel_id, "name": "soc-approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "Approval needed"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": f"stanch_approval:{approval_id}",
                "text": {"type": "plain_text", "text": "Approve", "emoji": False},
                "value": approval_id,
                "type": "button",
                "action_ts": "1700000100.000001",
            }
        ],
    }
    if state is not None:
        payload["state"] = {"values": state}
    return payload


def selection_state(approval_id: str, ticked: list[str]) -> JSON:
    """``state.values`` of an approval message whose plan checkboxes have ``ticked`` ticked.

    Slack reports each checkbox group (ten options at most) under its own block id.
    """
    groups = [ticked[i : i + 10] for i in range(0, len(ticked), 10)] or [[]]
    return {
        f"stanch_select:{approval_id}:{n}": {
            "stanch_select": {
                "type": "checkboxes",
                "selected_options": [
                    {"text": {"type": "plain_text", "text": h[:12]}, "value": h} for h in group
                ],
            }
        }
        for n, group in enumerate(groups)
    }


def view_submission_payload(
    *,
    approval_id: str,
    reason: str,
    user_id: str,
    team_id: str = TEAM_ID,
    username: str = "analyst",
    callback_id: str = "stanch_deny_reason",
    values: JSON | None = None,
) -> JSON:
    """A ``view_submission`` payload shaped like Slack's for the deny-reason modal, or, with
    ``values`` (``state.values``) and another ``callback_id``, for another modal whose
    ``private_metadata`` is ``approval_id``."""
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": "stanch-fake"},
        "user": {"id": user_id, "username": username, "name": username, "team_id": team_id},
        "api_app_id": "A0STANCH",
        "trigger_id": "13345224609.738474920.8088930838d88f008e1",
        "view": {
            "id": "V0DENY",
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": approval_id,
            "state": {
                "values": values
                if values is not None
                else {"reason": {"value": {"type": "plain_text_input", "value": reason}}}
            },
            "hash": "156772938.1827394",
        },
    }


def iter_text(value: Any) -> Iterator[tuple[str, JSON]]:
    """Every text object (``{"type": "plain_text"|"mrkdwn", "text": …}``) inside blocks."""
    if isinstance(value, dict):
        if value.get("type") in ("plain_text", "mrkdwn") and isinstance(value.get("text"), str):
            yield value["type"], value
        for item in value.values():
            yield from iter_text(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_text(item)
