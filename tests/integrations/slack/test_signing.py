"""Slack request signatures: Slack's documented test vector, and every way to fail."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from integrations.slack.signing import SlackRequestVerifier, SlackSignatureError, sign

# Slack's worked example (docs.slack.dev/authentication/verifying-requests-from-slack).
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TIMESTAMP = 1531420618
BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    "&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    "&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    "%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def verifier(now: float = TIMESTAMP, secret: str = SECRET) -> SlackRequestVerifier:
    return SlackRequestVerifier(SecretStr(secret), clock=lambda: now)


def headers(timestamp: object = TIMESTAMP, signature: str = SIGNATURE) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


def test_sign_reproduces_slacks_documented_signature() -> None:
    """Given Slack's documented secret, timestamp and body
    When signing them
    Then the result is Slack's documented X-Slack-Signature."""
    assert sign(SECRET, TIMESTAMP, BODY) == SIGNATURE
    assert sign(SecretStr(SECRET), str(TIMESTAMP), BODY.encode()) == SIGNATURE


def test_documented_request_verifies_at_its_own_time() -> None:
    """Given Slack's documented request and a clock set to its timestamp
    When verifying it, with header names in any case
    Then it passes and the raw body is handed back for parsing."""
    lowered = {k.lower(): v for k, v in headers().items()}

    result = verifier().verify(lowered, BODY.encode())

    assert result.timestamp == TIMESTAMP
    assert result.body == BODY.encode()


def test_documented_request_is_stale_on_a_real_clock() -> None:
    """Given Slack's 2018 example
    When verified with the real clock
    Then it is refused as stale."""
    with pytest.raises(SlackSignatureError) as caught:
        SlackRequestVerifier(SecretStr(SECRET)).verify(headers(), BODY)
    assert caught.value.reason == "stale"


@pytest.mark.parametrize(("offset", "ok"), [(300, True), (-300, True), (301, False), (-301, False)])
def test_five_minute_window_both_directions(offset: int, ok: bool) -> None:
    """Given a correctly signed request
    When the clock is 300 s or 301 s away from its timestamp, either way
    Then 300 s passes and 301 s is stale."""
    check = verifier(now=TIMESTAMP + offset)
    if ok:
        check.verify(headers(), BODY)
    else:
        with pytest.raises(SlackSignatureError, match="stale"):
            check.verify(headers(), BODY)


@pytest.mark.parametrize(
    ("hdrs", "body", "secret", "reason"),
    [
        pytest.param({}, BODY, SECRET, "missing", id="no headers"),
        pytest.param(
            {"X-Slack-Request-Timestamp": str(TIMESTAMP)}, BODY, SECRET, "missing", id="no sig"
        ),
        pytest.param({"X-Slack-Signature": SIGNATURE}, BODY, SECRET, "missing", id="no ts"),
        pytest.param(headers(timestamp=""), BODY, SECRET, "missing", id="empty ts"),
        pytest.param(headers(timestamp="garbage"), BODY, SECRET, "malformed timestamp", id="word"),
        pytest.param(
            headers(timestamp="1531420618.5"), BODY, SECRET, "malformed timestamp", id="float"
        ),
        pytest.param(headers(timestamp="-1"), BODY, SECRET, "malformed timestamp", id="negative"),
        pytest.param(
            headers(timestamp="\u00b2"), BODY, SECRET, "malformed timestamp", id="unicode digit"
        ),
        pytest.param(
            headers(), BODY.replace("roadrunner", "wile_e"), SECRET, "mismatch", id="tampered body"
        ),
        pytest.param(headers(), BODY, SECRET[::-1], "mismatch", id="wrong secret"),
        pytest.param(
            headers(signature=SIGNATURE.upper()), BODY, SECRET, "mismatch", id="upper-case hex"
        ),
        pytest.param(
            headers(signature="v0=caf\u00e9"), BODY, SECRET, "mismatch", id="non-ascii signature"
        ),
        pytest.param(headers(signature=SIGNATURE[3:]), BODY, SECRET, "mismatch", id="no v0="),
    ],
)
def test_every_bad_request_is_a_typed_refusal(
    hdrs: dict[str, str], body: str, secret: str, reason: str
) -> None:
    """Given a request that is missing, malformed, tampered or signed with another secret
    When verifying it
    Then SlackSignatureError carries the reason (never another exception, so never a 500)."""
    with pytest.raises(SlackSignatureError) as caught:
        verifier(secret=secret).verify(hdrs, body)
    assert caught.value.reason == reason


def test_error_message_does_not_carry_the_secret() -> None:
    """Given a mismatching request
    When it is refused
    Then neither the secret nor the expected signature appears in the error."""
    with pytest.raises(SlackSignatureError) as caught:
        verifier().verify(headers(signature="v0=" + "0" * 64), BODY)
    assert SECRET not in str(caught.value)
    assert SIGNATURE not in str(caught.value)
