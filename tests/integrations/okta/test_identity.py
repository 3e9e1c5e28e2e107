"""OktaIdentity against the Okta simulator, in-process."""

from __future__ import annotations

import inspect
import time
from typing import Literal

import httpx
import pytest

from integrations.capabilities import IdentityProvider, UserStatus
from integrations.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RateLimited,
    RejectedError,
    VendorTimeout,
    VendorUnavailable,
)
from integrations.okta import OktaIdentity, OktaSimulator, connect
from tests.integrations.okta.conftest import RecordingTransport, ssws_settings


def _posts(wire: RecordingTransport, action: str) -> int:
    return sum(
        1 for r in wire.sent if r.method == "POST" and r.url.path.endswith(f"/lifecycle/{action}")
    )


def test_implements_the_identity_provider_protocol_exactly(idp: OktaIdentity) -> None:
    """Given the IdentityProvider protocol,
    When OktaIdentity's public methods are compared with it,
    Then each protocol method exists with the same parameters and the vendor is "okta"."""
    assert isinstance(idp, IdentityProvider)
    assert idp.vendor == "okta"
    for name, member in inspect.getmembers(IdentityProvider, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(OktaIdentity, name))
        theirs = inspect.signature(member)
        assert list(ours.parameters.items()) == list(theirs.parameters.items()), name
        assert inspect.iscoroutinefunction(getattr(OktaIdentity, name)), name


async def test_find_user_by_login_with_at_and_plus(sim: OktaSimulator, idp: OktaIdentity) -> None:
    """Given a user whose login contains '@' and '+',
    When find_user is called with that login,
    Then the account comes back with Okta's id, profile and status."""
    user_id = sim.add_user("first.last+soc@example.com", first_name="Ada", last_name="Last")

    account = await idp.find_user("first.last+soc@example.com")

    assert account is not None
    assert account.id == user_id
    assert account.login == "first.last+soc@example.com"
    assert account.display_name == "Ada Last"
    assert account.email == "first.last+soc@example.com"
    assert (account.status, account.vendor_status) == (UserStatus.ACTIVE, "ACTIVE")


async def test_find_unknown_user_is_none(sim: OktaSimulator, idp: OktaIdentity) -> None:
    """Given an org without the login,
    When find_user is called,
    Then it returns None instead of raising (Okta answered 404 E0000007)."""
    sim.add_user("someone@example.com")
    assert await idp.find_user("nobody@example.com") is None
    assert await idp.find_user("") is None


async def test_find_user_with_slash_uses_search(
    sim: OktaSimulator, idp: OktaIdentity, wire: RecordingTransport
) -> None:
    """Given a login containing '/', which Okta cannot take in a path,
    When find_user is called,
    Then the adapter uses the documented search on profile.login and finds the user."""
    user_id = sim.add_user("ops/oncall@example.com")

    account = await idp.find_user("ops/oncall@example.com")

    assert account is not None and account.id == user_id
    assert wire.sent[-1].url.path == "/api/v1/users"
    assert wire.sent[-1].url.params["search"] == 'profile.login eq "ops/oncall@example.com"'


async def test_get_unknown_user_raises_not_found(idp: OktaIdentity) -> None:
    """Given no such user,
    When get_user is called,
    Then NotFoundError carries HTTP 404, Okta's E0000007 and its summary."""
    with pytest.raises(NotFoundError) as caught:
        await idp.get_user("00unotthere000000000")
    assert caught.value.status_code == 404
    assert caught.value.vendor_code == "E0000007"
    assert "Resource not found" in str(caught.value)


@pytest.mark.parametrize(
    ("okta_status", "expected"),
    [
        ("ACTIVE", UserStatus.ACTIVE),
        ("PASSWORD_EXPIRED", UserStatus.ACTIVE),
        ("LOCKED_OUT", UserStatus.ACTIVE),
        ("RECOVERY", UserStatus.ACTIVE),
        ("SUSPENDED", UserStatus.SUSPENDED),
        ("DEPROVISIONED", UserStatus.DISABLED),
        ("STAGED", UserStatus.OTHER),
        ("PROVISIONED", UserStatus.OTHER),
    ],
)
async def test_okta_statuses_map_to_user_status(
    sim: OktaSimulator, idp: OktaIdentity, okta_status: str, expected: UserStatus
) -> None:
    """Given a user in each documented Okta status,
    When get_user reads them,
    Then status is the folded UserStatus and vendor_status keeps Okta's word."""
    user_id = sim.add_user("status@example.com", status=okta_status)
    account = await idp.get_user(user_id)
    assert (account.status, account.vendor_status) == (expected, okta_status)


async def test_suspend_twice_second_is_unchanged(
    sim: OktaSimulator, idp: OktaIdentity, wire: RecordingTransport
) -> None:
    """Given an ACTIVE user,
    When suspend_user is called twice,
    Then the first suspends (changed) and the second reports changed=False without
    sending the suspend that Okta would answer with 400."""
    user_id = sim.add_user("victim@example.com")

    first = await idp.suspend_user(user_id, reason="INC-1 credential theft")
    second = await idp.suspend_user(user_id, reason="INC-1 credential theft")

    assert sim.user_status(user_id) == "SUSPENDED"
    assert (first.verb, first.target, first.changed, first.state) == (
        "suspend_user",
        user_id,
        True,
        "suspended",
    )
    assert first.vendor_request_id
    assert first.detail["reason"] == "INC-1 credential theft"
    assert first.detail["previous_vendor_status"] == "ACTIVE"
    assert (second.changed, second.state) == (False, "suspended")
    assert _posts(wire, "suspend") == 1


async def test_suspend_by_login_acts_on_the_user_id(sim: OktaSimulator, idp: OktaIdentity) -> None:
    """Given an ACTIVE user addressed by login,
    When suspend_user is called with the login,
    Then the receipt's target is the Okta user id the ledger can reverse with."""
    user_id = sim.add_user("bylogin@example.com")
    receipt = await idp.suspend_user("bylogin@example.com", reason="test")
    assert receipt.target == user_id
    assert sim.user_status(user_id) == "SUSPENDED"


async def test_unsuspend_restores_active_then_is_unchanged(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given a SUSPENDED user,
    When unsuspend_user is called twice,
    Then the user is ACTIVE after the first (changed) and the second is a no-op."""
    user_id = sim.add_user("back@example.com", status="SUSPENDED")

    first = await idp.unsuspend_user(user_id, reason="false positive")
    second = await idp.unsuspend_user(user_id, reason="false positive")

    assert sim.user_status(user_id) == "ACTIVE"
    assert (first.verb, first.changed, first.state) == ("unsuspend_user", True, "active")
    assert (second.changed, second.state) == (False, "active")


async def test_suspending_a_deprovisioned_user_is_rejected(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given a DEPROVISIONED user,
    When suspend_user is called,
    Then Okta's 400 stays a RejectedError carrying E0000001 and Okta's explanation."""
    user_id = sim.add_user("gone@example.com", status="DEPROVISIONED")

    with pytest.raises(RejectedError) as caught:
        await idp.suspend_user(user_id, reason="test")

    assert caught.value.status_code == 400
    assert caught.value.vendor_code == "E0000001"
    assert "Cannot suspend a user that is not active" in str(caught.value)
    assert sim.user_status(user_id) == "DEPROVISIONED"


async def test_unsuspending_a_deprovisioned_user_is_rejected(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given a DEPROVISIONED user,
    When unsuspend_user is called,
    Then the result is a RejectedError, not a silent success."""
    user_id = sim.add_user("gone2@example.com", status="DEPROVISIONED")
    with pytest.raises(RejectedError, match="Cannot unsuspend a user that is not suspended"):
        await idp.unsuspend_user(user_id, reason="test")


async def test_suspend_race_with_another_admin_is_unchanged(sim: OktaSimulator) -> None:
    """Given an ACTIVE user that an admin suspends between our read and our write,
    When suspend_user gets Okta's 400,
    Then it re-reads the status and reports changed=False instead of failing."""
    user_id = sim.add_user("race@example.com")
    inner = sim.transport()

    class AdminActsFirst(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/lifecycle/suspend"):
                sim.set_user_status(user_id, "SUSPENDED")
            return await inner.handle_async_request(request)

    async with connect(ssws_settings(), AdminActsFirst()) as client:
        receipt = await OktaIdentity(client).suspend_user(user_id, reason="test")

    assert (receipt.changed, receipt.state) == (False, "suspended")


async def test_revoke_sessions_clears_sessions_and_oauth_tokens(
    sim: OktaSimulator, idp: OktaIdentity, wire: RecordingTransport
) -> None:
    """Given a user with an open Okta session,
    When revoke_sessions is called,
    Then Okta answers 204, the sessions are gone, and OAuth tokens were included."""
    user_id = sim.add_user("sess@example.com")
    assert sim.session_count(user_id) == 1

    receipt = await idp.revoke_sessions(user_id)

    assert sim.session_count(user_id) == 0
    assert (receipt.verb, receipt.target, receipt.changed) == ("revoke_sessions", user_id, True)
    sent = wire.sent[-1]
    assert (sent.method, sent.url.path) == ("DELETE", f"/api/v1/users/{user_id}/sessions")
    assert sent.url.params["oauthTokens"] == "true"
    assert [r.status for r in sim.requests][-1] == 204


async def test_revoke_sessions_of_unknown_user_is_not_found(idp: OktaIdentity) -> None:
    """Given no such user,
    When revoke_sessions is called,
    Then NotFoundError is raised rather than a receipt claiming success."""
    with pytest.raises(NotFoundError):
        await idp.revoke_sessions("00unotthere000000000")


async def test_expire_password_returns_password_expired(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given an ACTIVE user,
    When expire_password is called twice,
    Then Okta's returned User says PASSWORD_EXPIRED and the second call changes nothing."""
    user_id = sim.add_user("pw@example.com")

    first = await idp.expire_password(user_id)
    second = await idp.expire_password(user_id)

    assert sim.user_status(user_id) == "PASSWORD_EXPIRED"
    assert (first.verb, first.changed, first.state) == ("expire_password", True, "password_expired")
    assert second.changed is False


async def test_expire_password_of_a_suspended_user_is_a_conflict_naming_the_status(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given a user stanch has just suspended (containment),
    When their password is expired,
    Then Okta's documented 403 E0000038 comes back as a ConflictError (not an AuthError:
    the credentials are fine) that names the user's status, and the user stays SUSPENDED."""
    user_id = sim.add_user("contained@example.com")
    await idp.suspend_user(user_id, reason="INC-1")

    with pytest.raises(ConflictError) as caught:
        await idp.expire_password(user_id)

    assert not isinstance(caught.value, AuthError)
    assert (caught.value.status_code, caught.value.vendor_code) == (403, "E0000038")
    assert caught.value.state == "SUSPENDED"
    assert "SUSPENDED" in str(caught.value)
    assert sim.user_status(user_id) == "SUSPENDED"


async def test_expire_password_after_unsuspending_succeeds(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given a suspended user,
    When they are unsuspended and then their password expired (the order the playbooks use),
    Then both succeed and the user ends PASSWORD_EXPIRED."""
    user_id = sim.add_user("released@example.com")
    await idp.suspend_user(user_id, reason="INC-1")
    await idp.unsuspend_user(user_id, reason="INC-1 released")

    receipt = await idp.expire_password(user_id)

    assert (receipt.changed, receipt.state) == (True, "password_expired")
    assert sim.user_status(user_id) == "PASSWORD_EXPIRED"


@pytest.mark.parametrize("allowed", [False, True])
async def test_reset_factors_after_unsuspending_works_under_both_readings(allowed: bool) -> None:
    """Given an org that may or may not reset a SUSPENDED user's factors (undocumented),
    When factors are reset while suspended and again after unsuspending,
    Then while suspended it succeeds only under the permissive reading (else a
    ConflictError naming SUSPENDED), and after the unsuspend it succeeds under both."""
    sim = OktaSimulator(reset_factors_while_suspended=allowed)
    user_id = sim.add_user("mfa-contained@example.com")
    async with connect(ssws_settings(), transport=sim.transport()) as http:
        idp = OktaIdentity(http)
        await idp.suspend_user(user_id, reason="INC-1")
        if allowed:
            assert (await idp.reset_factors(user_id)).changed is True
        else:
            with pytest.raises(ConflictError) as caught:
                await idp.reset_factors(user_id)
            assert caught.value.state == "SUSPENDED"
        await idp.unsuspend_user(user_id, reason="INC-1 released")
        assert (await idp.reset_factors(user_id)).changed is True
    assert sim.user_status(user_id) == "ACTIVE"


@pytest.mark.parametrize("refusal_in", ["errorCauses", "errorSummary"])
async def test_suspend_refusal_names_the_status_wherever_okta_puts_the_text(
    refusal_in: Literal["errorCauses", "errorSummary"],
) -> None:
    """Given a DEPROVISIONED user and an org that puts "Cannot suspend a user that is not
    active" in errorCauses or in errorSummary (undocumented which),
    When suspended,
    Then a ConflictError naming DEPROVISIONED under both readings (the adapter decides by
    the status it re-reads, never by the text)."""
    sim = OktaSimulator(suspend_refusal_in=refusal_in)
    user_id = sim.add_user("gone@example.com", status="DEPROVISIONED")
    async with connect(ssws_settings(), transport=sim.transport()) as http:
        with pytest.raises(ConflictError) as caught:
            await OktaIdentity(http).suspend_user(user_id, reason="r")
    assert caught.value.state == "DEPROVISIONED"
    assert "Cannot suspend a user that is not active" in str(caught.value)


async def test_reset_factors_unenrolls_and_keeps_user_active(
    sim: OktaSimulator, idp: OktaIdentity, client: httpx.AsyncClient
) -> None:
    """Given an ACTIVE user with an enrolled factor,
    When reset_factors is called,
    Then the factor list is empty and the user is still ACTIVE."""
    user_id = sim.add_user("mfa@example.com")
    before = await client.get(f"/api/v1/users/{user_id}/factors")
    assert len(before.json()) == 1

    receipt = await idp.reset_factors(user_id)

    after = await client.get(f"/api/v1/users/{user_id}/factors")
    assert after.json() == []
    assert sim.user_status(user_id) == "ACTIVE"
    assert (receipt.verb, receipt.changed, receipt.state) == (
        "reset_factors",
        True,
        "factors_reset",
    )


async def test_bad_token_is_auth_error(sim: OktaSimulator) -> None:
    """Given a wrong SSWS token,
    When any call is made,
    Then AuthError carries HTTP 401 and E0000011, and the token is not in the message."""
    from pydantic import SecretStr

    user_id = sim.add_user("x@example.com")
    settings = ssws_settings(api_token=SecretStr("00wrong-token-value"))
    async with connect(settings, sim.transport()) as client:
        with pytest.raises(AuthError) as caught:
            await OktaIdentity(client).get_user(user_id)
    assert (caught.value.status_code, caught.value.vendor_code) == (401, "E0000011")
    assert "00wrong-token-value" not in str(caught.value)


async def test_rate_limit_from_simulator_gives_retry_after_until_reset() -> None:
    """Given an org allowing 2 API calls a minute,
    When a third call is made,
    Then Okta's 429 (X-Rate-Limit-* headers, no Retry-After) becomes RateLimited with
    retry_after equal to X-Rate-Limit-Reset minus now."""
    sim = OktaSimulator(rate_limit_per_minute=2)
    user_id = sim.add_user("rl@example.com")
    async with connect(ssws_settings(), sim.transport()) as client:
        idp = OktaIdentity(client)
        await idp.get_user(user_id)
        second = await client.get(f"/api/v1/users/{user_id}")
        reset = int(second.headers["X-Rate-Limit-Reset"])
        assert second.headers["X-Rate-Limit-Remaining"] == "0"

        raw = await client.get(f"/api/v1/users/{user_id}")
        assert raw.status_code == 429
        assert raw.json()["errorCode"] == "E0000047"
        assert "Retry-After" not in raw.headers
        assert raw.headers["X-Rate-Limit-Limit"] == "2"

        with pytest.raises(RateLimited) as caught:
            await idp.get_user(user_id)

    assert caught.value.retry_after is not None
    assert caught.value.retry_after == pytest.approx(reset - time.time(), abs=1.5)
    assert 0 < caught.value.retry_after <= 61
    assert caught.value.vendor_code == "E0000047"


async def test_injected_429_reset_epoch_becomes_retry_after(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given a 429 whose X-Rate-Limit-Reset is 30 s ahead,
    When the adapter meets it,
    Then RateLimited.retry_after is about 30 seconds."""
    user_id = sim.add_user("rl2@example.com")
    reset = int(time.time()) + 30
    sim.fail_next(status=429, headers={"X-Rate-Limit-Reset": str(reset)})
    with pytest.raises(RateLimited) as caught:
        await idp.get_user(user_id)
    assert caught.value.retry_after == pytest.approx(reset - time.time(), abs=1.5)


async def test_injected_5xx_is_vendor_unavailable_without_retry(
    sim: OktaSimulator, idp: OktaIdentity
) -> None:
    """Given Okta failing with 503 once,
    When suspend_user is called,
    Then VendorUnavailable is raised after exactly one request: retrying is the flow's job."""
    user_id = sim.add_user("5xx@example.com")
    sim.fail_next(status=503)
    with pytest.raises(VendorUnavailable) as caught:
        await idp.suspend_user(user_id, reason="test")
    assert caught.value.status_code == 503
    assert len(sim.requests) == 1
    assert sim.user_status(user_id) == "ACTIVE"


async def test_hang_with_short_timeout_is_vendor_timeout(sim: OktaSimulator) -> None:
    """Given Okta not answering and a 0.2 s timeout,
    When get_user is called,
    Then VendorTimeout is raised promptly."""
    user_id = sim.add_user("slow@example.com")
    sim.hang_next(seconds=5)
    started = time.monotonic()
    async with connect(ssws_settings(timeout_seconds=0.2), sim.transport()) as client:
        with pytest.raises(VendorTimeout):
            await OktaIdentity(client).get_user(user_id)
    assert time.monotonic() - started < 2
