"""EntraIdentity against the in-process Graph simulator."""

from __future__ import annotations

import asyncio

import pytest

from integrations.capabilities import IdentityProvider, UserStatus
from integrations.entra import EntraIdentity, connect
from integrations.entra.sim import PASSWORD_METHOD_ID, EntraSimulator
from integrations.errors import NotFoundError, RejectedError
from tests.integrations.entra.support import lab


def test_implements_identity_provider(identity: EntraIdentity) -> None:
    """Given the adapter, When checked against the protocol, Then it is an IdentityProvider."""
    assert isinstance(identity, IdentityProvider)
    assert identity.vendor == "entra"


async def test_find_user_by_upn(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given a seeded user, When found by UPN, Then id, login, name, mail and status match."""
    user_id = sim.add_user("alice@contoso.com", display_name="Alice", mail="alice@contoso.com")

    found = await identity.find_user("alice@contoso.com")

    assert found is not None
    assert found.id == user_id
    assert found.login == "alice@contoso.com"
    assert found.display_name == "Alice"
    assert found.email == "alice@contoso.com"
    assert found.status is UserStatus.ACTIVE


async def test_find_user_b2b_guest_upn(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given a B2B guest whose UPN holds #EXT# and +, When found, Then the right user returns."""
    upn = "bob+sec_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    user_id = sim.add_user(upn)
    sim.add_user("bob@contoso.com")

    found = await identity.find_user(upn)

    assert found is not None
    assert found.id == user_id


async def test_find_user_dollar_upn_uses_filter(
    sim: EntraSimulator, identity: EntraIdentity
) -> None:
    """Given a UPN starting with $, When found, Then the $filter listing locates it."""
    user_id = sim.add_user("$svc@contoso.com")

    found = await identity.find_user("$svc@contoso.com")

    assert found is not None and found.id == user_id
    assert sim.requests[-1].route == "/v1.0/users"


async def test_find_unknown_user_is_none(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given no such UPN, When found, Then None (Graph's 404 is not an error here)."""
    assert await identity.find_user("nobody@contoso.com") is None
    assert await identity.find_user("$nobody@contoso.com") is None


async def test_get_unknown_user_raises(identity: EntraIdentity) -> None:
    """Given no such id, When read, Then NotFoundError carries Graph's error code."""
    with pytest.raises(NotFoundError) as caught:
        await identity.get_user("00000000-0000-0000-0000-000000000000")

    assert caught.value.vendor_code == "Request_ResourceNotFound"
    assert caught.value.status_code == 404


async def test_get_disabled_user(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given a disabled account, When read by id, Then it reads as suspended (vendor: disabled)."""
    user_id = sim.add_user("carol@contoso.com", enabled=False)

    user = await identity.get_user(user_id)

    assert user.status is UserStatus.SUSPENDED
    assert user.vendor_status == "disabled"
    assert user.vendor_status == "disabled"


async def test_suspend_twice_then_unsuspend(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given an enabled user, When suspended twice and unsuspended, Then changed flips."""
    user_id = sim.add_user("dave@contoso.com")

    first = await identity.suspend_user(user_id, reason="INC-1")
    assert sim.users[user_id].account_enabled is False
    second = await identity.suspend_user(user_id, reason="INC-1")
    patches = [r for r in sim.requests if r.method == "PATCH"]
    back = await identity.unsuspend_user(user_id, reason="INC-1 closed")

    assert (first.changed, first.state, first.verb) == (True, "disabled", "suspend_user")
    assert first.vendor_request_id
    assert (second.changed, second.state) == (False, "disabled")
    assert len(patches) == 1  # the second suspend read the state and wrote nothing
    assert (back.changed, back.state) == (True, "enabled")
    assert sim.users[user_id].account_enabled is True
    assert (await identity.get_user(user_id)).status is UserStatus.ACTIVE


async def test_suspend_by_upn_targets_object_id(
    sim: EntraSimulator, identity: EntraIdentity
) -> None:
    """Given a UPN, When suspended, Then the receipt names the object id the ledger can undo."""
    user_id = sim.add_user("erin@contoso.com")

    receipt = await identity.suspend_user("erin@contoso.com", reason="INC-2")

    assert receipt.target == user_id


async def test_suspend_unknown_user_raises(identity: EntraIdentity) -> None:
    """Given no such user, When suspended, Then NotFoundError (no PATCH is attempted)."""
    with pytest.raises(NotFoundError):
        await identity.suspend_user("ghost@contoso.com", reason="x")


@pytest.mark.parametrize("returns_204", [False, True])
async def test_revoke_sessions_200_or_204(returns_204: bool) -> None:
    """Given a tenant answering 200 {"value": true} or 204, When revoking, Then both succeed."""
    sim = EntraSimulator(revoke_returns_204=returns_204)
    user_id = sim.add_user("frank@contoso.com")
    assert sim.sign_in(user_id)
    async with connect(lab(), transport=sim.transport()) as client:
        receipt = await EntraIdentity(client).revoke_sessions(user_id)

    assert sim.requests[-1].status == (204 if returns_204 else 200)
    assert (receipt.changed, receipt.state) == (True, "sessions_revoked")
    assert sim.users[user_id].sessions == 0


async def test_revoke_sessions_unknown_user(identity: EntraIdentity) -> None:
    """Given no such user, When revoking sessions, Then NotFoundError."""
    with pytest.raises(NotFoundError):
        await identity.revoke_sessions("ghost@contoso.com")


async def test_expire_password_sets_force_change(
    sim: EntraSimulator, identity: EntraIdentity
) -> None:
    """Given a user, When the password is expired, Then forceChangePasswordNextSignIn is set."""
    user_id = sim.add_user("gina@contoso.com")

    receipt = await identity.expire_password(user_id)

    assert receipt.changed is True
    assert sim.users[user_id].force_change_password_next_sign_in is True


@pytest.mark.parametrize("allowed", [False, True])
async def test_password_expiry_after_re_enabling_works_under_both_readings(allowed: bool) -> None:
    """Given a tenant that may or may not accept a forced password change on a disabled
    account (Graph does not say),
    When a suspended user is re-enabled and then their password expired (the playbooks'
    order), Then it succeeds under both readings; expiring while still disabled fails
    only under the strict one (the simulator's default)."""
    sim = EntraSimulator(password_change_while_disabled=allowed)
    user_id = sim.add_user("ivy@contoso.com")
    async with connect(lab(), transport=sim.transport()) as http:
        identity = EntraIdentity(http)
        await identity.suspend_user(user_id, reason="INC-1")
        if allowed:
            assert (await identity.expire_password(user_id)).changed is True
        else:
            with pytest.raises(RejectedError):
                await identity.expire_password(user_id)
        await identity.unsuspend_user(user_id, reason="INC-1 released")
        receipt = await identity.expire_password(user_id)
    assert receipt.changed is True
    assert sim.users[user_id].account_enabled is True
    assert sim.users[user_id].force_change_password_next_sign_in is True


async def test_reset_factors_deletes_deletable_methods(
    sim: EntraSimulator, identity: EntraIdentity
) -> None:
    """Given phone, Authenticator, FIDO2 and password methods, When factors are reset,
    Then phone and Authenticator go, and password and FIDO2 (no documented delete) stay."""
    user_id = sim.add_user("hank@contoso.com")
    sim.add_phone_method(user_id, "+1 2065550100", "mobile")
    sim.add_phone_method(user_id, "+1 2065550101", "office")
    sim.add_authenticator_method(user_id)
    fido = sim.add_fido2_method(user_id)

    receipt = await identity.reset_factors(user_id)
    again = await identity.reset_factors(user_id)

    remaining = {m["id"] for m in sim.users[user_id].methods}
    assert remaining == {PASSWORD_METHOD_ID, fido}
    assert receipt.changed is True
    assert receipt.detail["deleted"] == "3"
    assert receipt.detail["kept"] == "fido2AuthenticationMethod,passwordAuthenticationMethod"
    assert again.changed is False
    deletes = [r.path for r in sim.requests if r.method == "DELETE"]
    # The mobile number, the usual default MFA phone, is deleted last.
    assert deletes[-1].endswith("/phoneMethods/3179e48a-750b-4051-897c-87b9720928f7")


async def test_confirm_compromised(sim: EntraSimulator, identity: EntraIdentity) -> None:
    """Given a user, When confirmed compromised, Then riskState confirmedCompromised, level high."""
    user_id = sim.add_user("ivy@contoso.com")

    receipt = await identity.confirm_compromised(user_id)

    assert (receipt.changed, receipt.state) == (True, "confirmedCompromised")
    assert sim.risky_users[user_id]["riskState"] == "confirmedCompromised"
    assert sim.risky_users[user_id]["riskLevel"] == "high"
    assert sim.requests[-1].status == 204


async def test_concurrent_callers_share_one_token(
    sim: EntraSimulator, identity: EntraIdentity
) -> None:
    """Given a fresh client, When five calls start at once, Then one token is fetched."""
    user_id = sim.add_user("jack@contoso.com")

    users = await asyncio.gather(*(identity.get_user(user_id) for _ in range(5)))

    assert {u.id for u in users} == {user_id}
    token_calls = [r for r in sim.requests if r.route == "/{tenant}/oauth2/v2.0/token"]
    assert len(token_calls) == 1
