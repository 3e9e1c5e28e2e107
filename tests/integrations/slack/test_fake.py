"""FakeSlack answers like Slack: the ok/error envelope, HTTP 429 with Retry-After, Bearer auth."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

import integrations.slack
from integrations.slack.fake import FakeSlack


def test_auth_test_checks_the_bearer_token(fake: FakeSlack) -> None:
    """Given the fake's token, a wrong token and no token
    When auth.test is called
    Then ok with the team id; invalid_auth; not_authed — each with HTTP 200."""
    ok = WebClient(token=fake.token, base_url=fake.base_url).auth_test()
    assert ok["ok"] is True and ok["team_id"] == fake.team_id

    for token, error in (("xoxb-wrong", "invalid_auth"), (None, "not_authed")):
        with pytest.raises(SlackApiError) as caught:
            WebClient(token=token, base_url=fake.base_url).auth_test()
        assert caught.value.response.status_code == 200
        assert caught.value.response.data == {"ok": False, "error": error}


def test_throttling_is_a_real_http_429_with_retry_after(fake: FakeSlack) -> None:
    """Given one injected 429 and a client without a rate-limit retry handler
    When it calls the API, then calls again
    Then the first call sees HTTP 429 with Retry-After and error ratelimited; the second works."""
    fake.rate_limit(1, retry_after=7)
    client = WebClient(token=fake.token, base_url=fake.base_url, retry_handlers=[])

    with pytest.raises(SlackApiError) as caught:
        client.auth_test()

    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert caught.value.response.data["error"] == "ratelimited"
    assert client.auth_test()["ok"] is True


def test_api_errors_use_slacks_envelope(fake: FakeSlack) -> None:
    """Given unknown users, groups, methods and messages
    When called
    Then each is HTTP 200 with ok false and Slack's error code."""
    client = WebClient(token=fake.token, base_url=fake.base_url)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: client.users_info(user="U0NOBODY"), "user_not_found"),
        (lambda: client.usergroups_users_list(usergroup="S0NONE"), "no_such_subteam"),
        (lambda: client.api_call("no.such.method"), "unknown_method"),
        (lambda: client.chat_update(channel="C1", ts="1.0", text="x"), "message_not_found"),
        (lambda: client.views_open(trigger_id="", view={"type": "modal"}), "invalid_trigger_id"),
    ]
    for call, error in cases:
        with pytest.raises(SlackApiError) as caught:
            call()
        assert caught.value.response.status_code == 200
        assert caught.value.response.data["ok"] is False
        assert caught.value.response.data["error"] == error


def test_query_string_arguments_are_read(fake: FakeSlack) -> None:
    """Given users.info, whose arguments slack_sdk sends in the query string
    When called for a seeded guest
    Then the fake reads the query and returns Slack's user object flags."""
    fake.add_user("U0GUEST", "guest", is_restricted=True)
    user = WebClient(token=fake.token, base_url=fake.base_url).users_info(user="U0GUEST")["user"]
    assert fake.calls_to("users.info")[0].params == {"user": "U0GUEST"}
    assert (user["id"], user["is_restricted"], user["deleted"]) == ("U0GUEST", True, False)


def test_response_url_refuses_an_empty_reply(fake: FakeSlack) -> None:
    """Given a response_url
    When something without text is posted to it
    Then HTTP 400 no_text, as Slack's hooks answer, and nothing is recorded."""
    response = WebhookClient(fake.response_url(), timeout=5).send_dict({})
    assert (response.status_code, response.body) == (400, "no_text")
    assert fake.responses == []


def test_stopped_fake_refuses_connections() -> None:
    """Given a fake that has exited its context
    When a client calls it
    Then the connection fails (nothing keeps serving in the background)."""
    with FakeSlack() as slack:
        base_url = slack.base_url
    client = WebClient(token="t", base_url=base_url, retry_handlers=[], timeout=2)
    with pytest.raises(urllib.error.URLError):
        client.auth_test()


def test_public_api_is_pinned() -> None:
    """Given the package's __all__
    When compared with the agreed public API
    Then nothing was added or removed by accident."""
    assert sorted(integrations.slack.__all__) == sorted(
        [
            "APPROVE_ACTION_ID",
            "CASE_ACTIONS",
            "APPROVE_SELECTED_ACTION_ID",
            "DENY_ACTION_ID",
            "DENY_REASON_CALLBACK_ID",
            "DENY_STOP_ACTION_ID",
            "DENY_STOP_CALLBACK_ID",
            "SELECT_ACTION_ID",
            "ApprovalView",
            "Authorisation",
            "Authoriser",
            "CaseClick",
            "CaseSubmission",
            "Click",
            "Decision",
            "DenyReason",
            "FinalState",
            "Interaction",
            "InteractionError",
            "MalformedPayload",
            "MessageRef",
            "PlanView",
            "SelectionChange",
            "SlackChat",
            "SlackRequestVerifier",
            "SlackSignatureError",
            "SummaryAction",
            "SummaryView",
            "UserFacts",
            "VerifiedRequest",
            "WrongMessage",
            "WrongTeam",
            "approval_final",
            "approval_request",
            "case_buttons",
            "case_summary",
            "classify",
            "close_modal",
            "deny_reason_errors",
            "deny_reason_modal",
            "duration",
            "ensure_same_message",
            "escape",
            "incident_summary",
            "note_modal",
            "parse_case_click",
            "parse_case_submission",
            "parse_click",
            "parse_deny_reason",
            "parse_interaction",
            "parse_payload",
            "payload_from_body",
            "sign",
        ]
    )
    for name in integrations.slack.__all__:
        assert hasattr(integrations.slack, name)


def test_integrations_slack_imports_no_prefect_or_flows() -> None:
    """Given the layering integrations <- flows <- stanch
    When the Slack package is imported in a fresh interpreter
    Then neither prefect nor flows is loaded."""
    import subprocess
    import sys

    code = (
        "import sys, integrations.slack, integrations.slack.fake;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
