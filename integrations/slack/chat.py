"""Slack Web API calls for approvals, and who may approve.

Wraps the sync ``slack_sdk.WebClient`` (urllib; the async client needs aiohttp). Each
method names its Slack method; ``a``-prefixed twins run it in a worker thread. Slack errors
reach callers only as the :mod:`integrations.errors` tree.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from integrations.errors import (
    AuthError,
    IntegrationError,
    NotFoundError,
    RateLimited,
    RejectedError,
    VendorTimeout,
    VendorUnavailable,
)
from integrations.slack.approval_message import (
    ApprovalView,
    FinalState,
    approval_final,
    approval_request,
    deny_reason_modal,
)
from integrations.slack.messages import escape_clipped, plain

VENDOR = "slack"
HOOKS_PREFIX = "https://hooks.slack.com/"
"""Where Slack's ``response_url`` values point; anything else is refused (no SSRF)."""
RATE_LIMIT_RETRIES = 2

T = TypeVar("T")

_AUTH_ERRORS = {
    "not_authed",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
    "not_allowed_token_type",
    "no_permission",
    "ekm_access_denied",
}
_NOT_FOUND = {
    "channel_not_found",
    "message_not_found",
    "user_not_found",
    "users_not_found",
    "no_such_subteam",
    "not_in_channel",
}
_UNAVAILABLE = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class MessageRef(NamedTuple):
    """Where a posted message lives: what ``chat.update`` and threads need."""

    channel: str
    ts: str


class UserFacts(BaseModel):
    """The parts of ``users.info`` that decide whether an account may approve."""

    model_config = ConfigDict(frozen=True)

    id: str
    team_id: str | None = None
    name: str = ""
    deleted: bool = False
    is_bot: bool = False
    is_restricted: bool = False
    is_ultra_restricted: bool = False
    # users.info has profile.email only with the users:read.email scope [U]: without it,
    # who a Slack user is in the directory is known by their username alone.
    email: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _profile_email(cls, data: Any) -> Any:
        if isinstance(data, dict) and "email" not in data:
            profile = data.get("profile")
            if isinstance(profile, dict) and isinstance(profile.get("email"), str):
                return {**data, "email": profile["email"]}
        return data


def classify(exc: SlackApiError, *, method: str) -> IntegrationError:
    """Map a failed Slack call to the integrations error tree (by type, never by text)."""
    response = exc.response
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error", "")) or None
    message = f"{method} failed"
    if status == 429 or code == "ratelimited":
        raw = response.headers.get("Retry-After") or response.headers.get("retry-after")
        retry_after = float(raw[0] if isinstance(raw, list) else raw) if raw else None
        return RateLimited(message, vendor=VENDOR, retry_after=retry_after, vendor_code=code)
    if status >= 500 or code in _UNAVAILABLE:
        return VendorUnavailable(message, vendor=VENDOR, status_code=status, vendor_code=code)
    if code in _AUTH_ERRORS or status in (401, 403):
        return AuthError(message, vendor=VENDOR, status_code=status, vendor_code=code)
    if code in _NOT_FOUND:
        return NotFoundError(message, vendor=VENDOR, status_code=status, vendor_code=code)
    return RejectedError(message, vendor=VENDOR, status_code=status, vendor_code=code)


class SlackChat:
    """The approval channel's Slack calls, through one bot-token ``WebClient``.

    Args:
        client: a ``WebClient`` with the bot token (and ``base_url`` for a fake).
            A 429 retry handler is added to it if it has none.
        channel: the channel id approval requests are posted in.
        response_url_prefixes: allowed ``response_url`` prefixes; Slack's hooks host only,
            unless a test points them at a fake.
    """

    def __init__(
        self,
        client: WebClient,
        *,
        channel: str,
        response_url_prefixes: tuple[str, ...] = (HOOKS_PREFIX,),
    ) -> None:
        # The default client only retries connection errors; a 429 would surface at once.
        if not any(isinstance(h, RateLimitErrorRetryHandler) for h in client.retry_handlers):
            client.retry_handlers.append(
                RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES)
            )
        self.client = client
        self.channel = channel
        self._hooks = response_url_prefixes

    def _call(self, method: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except SlackApiError as exc:
            raise classify(exc, method=method) from exc
        except (OSError, SlackClientError) as exc:  # urllib: URLError, timeouts, resets
            raise VendorTimeout(f"{method} failed: {type(exc).__name__}", vendor=VENDOR) from exc

    def post_approval(self, view: ApprovalView) -> MessageRef:
        """Post the approval request with its buttons.

        Slack API: ``chat.postMessage``; unfurling is off so Slack never fetches URLs that
        came from alert data.
        """
        text, blocks = approval_request(view)
        response = self._call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=self.channel,
                text=text,
                blocks=blocks,
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return MessageRef(channel=str(response["channel"]), ts=str(response["ts"]))

    def mark_decided(self, channel: str, ts: str, view: ApprovalView, state: FinalState) -> None:
        """Replace the buttons with who decided and when.

        Slack API: ``chat.update`` (``response_url`` expires; ``channel`` + ``ts`` do not).
        """
        text, blocks = approval_final(view, state)
        self._call(
            "chat.update",
            lambda: self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
        )

    def tell_user(
        self,
        text: str,
        *,
        response_url: str | None = None,
        channel: str | None = None,
        user: str | None = None,
    ) -> None:
        """Show ``text`` to one user only (a refusal, "already decided").

        Slack API: the interaction's ``response_url`` with ``response_type: ephemeral``
        when given, otherwise ``chat.postEphemeral`` to ``user`` in ``channel``.

        Raises:
            ValueError: neither a response_url nor channel + user, or a foreign response_url.
        """
        escaped = escape_clipped(text, 3000)
        if response_url:
            self._respond(response_url, escaped)
            return
        if not channel or not user:
            raise ValueError("tell_user needs a response_url or a channel and a user")
        self._call(
            "chat.postEphemeral",
            lambda: self.client.chat_postEphemeral(channel=channel, user=user, text=escaped),
        )

    def _respond(self, response_url: str, escaped: str) -> None:
        if not response_url.startswith(self._hooks):
            raise ValueError("response_url does not point at Slack")
        hook = WebhookClient(
            response_url,
            timeout=self.client.timeout,
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES)],
        )
        body = {"response_type": "ephemeral", "replace_original": False, "text": escaped}
        response = self._call("response_url", lambda: hook.send_dict(body))
        if response.status_code != 200:
            raise RejectedError(
                "response_url refused the reply",
                vendor=VENDOR,
                status_code=response.status_code,
                vendor_code=str(response.body)[:64] or None,
            )

    def open_deny_modal(
        self, trigger_id: str, approval_id: str, incident_id: str = "", *, stop: bool = False
    ) -> str:
        """Ask the denier for a reason; returns the opened view's id.

        Slack API: ``views.open`` (the ``trigger_id`` is only valid for about 3 seconds).

        Args:
            trigger_id: from the click.
            approval_id: returned with the submission.
            incident_id: shown for context.
            stop: ask about a false positive that stops the response.
        """
        view = deny_reason_modal(approval_id, incident_id, stop=stop)
        response = self._call(
            "views.open", lambda: self.client.views_open(trigger_id=trigger_id, view=view)
        )
        opened: dict[str, Any] = response["view"]
        return str(opened.get("id", ""))

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        """Open a modal built by stanch; returns the view's id.

        Slack API: ``views.open`` (the ``trigger_id`` is only valid for about 3 seconds).
        """
        response = self._call(
            "views.open", lambda: self.client.views_open(trigger_id=trigger_id, view=view)
        )
        opened: dict[str, Any] = response["view"]
        return str(opened.get("id", ""))

    def update_message(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        """Redraw a message stanch posted (the incident summary) in place.

        Slack API: ``chat.update``.
        """
        self._call(
            "chat.update",
            lambda: self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
        )

    async def aopen_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        """:meth:`open_view` in a worker thread."""
        return await asyncio.to_thread(self.open_view, trigger_id, view)

    async def aupdate_message(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]
    ) -> None:
        """:meth:`update_message` in a worker thread."""
        await asyncio.to_thread(self.update_message, channel, ts, text, blocks)

    def approver_ids(self, usergroup_id: str) -> frozenset[str]:
        """The members of a user group.

        Slack API: ``usergroups.users.list`` (scope ``usergroups:read``, paid plans only).
        """
        response = self._call(
            "usergroups.users.list",
            lambda: self.client.usergroups_users_list(usergroup=usergroup_id),
        )
        return frozenset(str(u) for u in response["users"])

    def user_facts(self, user_id: str) -> UserFacts:
        """Account facts that decide whether a user may approve.

        Slack API: ``users.info`` (scope ``users:read``).
        """
        response = self._call("users.info", lambda: self.client.users_info(user=user_id))
        return UserFacts.model_validate(response["user"])

    def post_thread_summary(self, channel: str, ts: str, text: str) -> str:
        """Reply in the approval message's thread; returns the reply's ``ts``.

        Slack API: ``chat.postMessage`` with ``thread_ts``. ``text`` is escaped.
        """
        response = self._call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=channel,
                thread_ts=ts,
                text=escape_clipped(text, 3000),
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return str(response["ts"])

    def post_notice(self, text: str, *, channel: str, thread_ts: str | None = None) -> str:
        """A notice for everyone following the incident; returns its ``ts``.

        Slack API: ``chat.postMessage``; with ``thread_ts`` the notice goes in the
        incident's thread and ``reply_broadcast`` shows it in the channel too, so the
        thread and the channel both see it. ``text`` is escaped.
        """
        response = self._call(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                reply_broadcast=True if thread_ts else None,
                text=escape_clipped(text, 3000),
                blocks=[{"type": "section", "text": plain(text)}],
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return str(response["ts"])

    async def apost_notice(self, text: str, *, channel: str, thread_ts: str | None = None) -> str:
        """:meth:`post_notice` in a worker thread."""
        return await asyncio.to_thread(self.post_notice, text, channel=channel, thread_ts=thread_ts)

    async def apost_approval(self, view: ApprovalView) -> MessageRef:
        """:meth:`post_approval` in a worker thread."""
        return await asyncio.to_thread(self.post_approval, view)

    async def amark_decided(
        self, channel: str, ts: str, view: ApprovalView, state: FinalState
    ) -> None:
        """:meth:`mark_decided` in a worker thread."""
        await asyncio.to_thread(self.mark_decided, channel, ts, view, state)

    async def atell_user(
        self,
        text: str,
        *,
        response_url: str | None = None,
        channel: str | None = None,
        user: str | None = None,
    ) -> None:
        """:meth:`tell_user` in a worker thread."""
        await asyncio.to_thread(
            self.tell_user, text, response_url=response_url, channel=channel, user=user
        )

    async def aopen_deny_modal(
        self, trigger_id: str, approval_id: str, incident_id: str = "", *, stop: bool = False
    ) -> str:
        """:meth:`open_deny_modal` in a worker thread."""
        return await asyncio.to_thread(
            partial(self.open_deny_modal, trigger_id, approval_id, incident_id, stop=stop)
        )

    async def aapprover_ids(self, usergroup_id: str) -> frozenset[str]:
        """:meth:`approver_ids` in a worker thread."""
        return await asyncio.to_thread(self.approver_ids, usergroup_id)

    async def auser_facts(self, user_id: str) -> UserFacts:
        """:meth:`user_facts` in a worker thread."""
        return await asyncio.to_thread(self.user_facts, user_id)

    async def apost_thread_summary(self, channel: str, ts: str, text: str) -> str:
        """:meth:`post_thread_summary` in a worker thread."""
        return await asyncio.to_thread(self.post_thread_summary, channel, ts, text)


class Authorisation(NamedTuple):
    """Whether a user may decide, and if not, a reason fit to show them."""

    allowed: bool
    reason: str


class Authoriser:
    """Decides whether a Slack user may approve, from an allow-list and/or a user group.

    Only the user id is used: never names or emails. Deleted, bot and guest accounts are
    refused even when listed. With neither a list nor a group, everyone is refused.

    Args:
        chat: the Slack calls to use.
        user_ids: user ids allowed to decide.
        usergroup_id: a user group whose members may decide.
        team_id: when given, accounts of other workspaces are refused.
        cache_seconds: how long group membership is reused (``usergroups.users.list`` is
            Tier 2); a member removed from the group can decide until it expires.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        chat: SlackChat,
        *,
        user_ids: Iterable[str] = (),
        usergroup_id: str | None = None,
        team_id: str | None = None,
        cache_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chat = chat
        self._user_ids = frozenset(user_ids)
        self._group = usergroup_id
        self._team = team_id
        self._ttl = cache_seconds
        self._clock = clock
        self._members: tuple[float, frozenset[str]] | None = None
        self._lock = threading.Lock()

    def _group_members(self) -> frozenset[str]:
        assert self._group is not None
        with self._lock:
            now = self._clock()
            if self._members is None or now - self._members[0] > self._ttl:
                self._members = (now, self._chat.approver_ids(self._group))
            return self._members[1]

    def check(self, user_id: str) -> Authorisation:
        """May ``user_id`` approve or deny?

        Raises:
            IntegrationError: Slack could not be asked (callers refuse, i.e. fail closed).
        """
        if not self._user_ids and self._group is None:
            return Authorisation(False, "no approvers are configured")
        try:
            facts = self._chat.user_facts(user_id)
        except NotFoundError:
            return Authorisation(False, "unknown Slack user")
        if facts.deleted:
            return Authorisation(False, "deactivated accounts may not approve")
        if facts.is_bot:
            return Authorisation(False, "bots may not approve")
        if facts.is_restricted or facts.is_ultra_restricted:
            return Authorisation(False, "guest accounts may not approve")
        if self._team is not None and facts.team_id not in (None, self._team):
            return Authorisation(False, "accounts of another workspace may not approve")
        if user_id in self._user_ids:
            return Authorisation(True, "on the approver list")
        if self._group is not None and user_id in self._group_members():
            return Authorisation(True, "member of the approver group")
        return Authorisation(False, "you are not an approver for this channel")

    async def acheck(self, user_id: str) -> Authorisation:
        """:meth:`check` in a worker thread."""
        return await asyncio.to_thread(self.check, user_id)
