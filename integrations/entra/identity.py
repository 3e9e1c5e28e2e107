"""Entra ID users as an :class:`~integrations.capabilities.IdentityProvider` (Microsoft Graph)."""

from __future__ import annotations

from typing import Any

import httpx

from integrations.capabilities import ActionReceipt, UserAccount, UserStatus
from integrations.entra.client import VENDOR, graph_send, odata_query, segment
from integrations.errors import (
    NotFoundError,
    RejectedError,
    VendorUnavailable,
)

USER_FIELDS = "id,userPrincipalName,displayName,mail,accountEnabled"
"""``accountEnabled`` is not a default property: Graph returns it only when selected."""

# Authentication method types Graph documents a delete for, and the collection each
# lives in. Password, FIDO2, Windows Hello and the rest are left alone: either they cannot
# be deleted (password) or deleting them is not among the documented operations.
DELETABLE_METHODS: dict[str, str] = {
    "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": "microsoftAuthenticatorMethods",
    "#microsoft.graph.phoneAuthenticationMethod": "phoneMethods",
}

# Graph refuses to delete the default MFA phone while other methods remain; the primary
# mobile number is the usual default, so it goes last.
MOBILE_PHONE_METHOD_ID = "3179e48a-750b-4051-897c-87b9720928f7"


def _request_id(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("request-id")
    return value


def _to_account(body: dict[str, Any]) -> UserAccount:
    enabled = body.get("accountEnabled")
    if enabled is True:
        status, vendor_status = UserStatus.ACTIVE, "enabled"
    elif enabled is False:
        # Entra has one off switch: a disabled account is what stanch calls suspended,
        # and unsuspend_user (accountEnabled=true) reverses it.
        status, vendor_status = UserStatus.SUSPENDED, "disabled"
    else:
        status, vendor_status = UserStatus.OTHER, None
    return UserAccount(
        id=str(body["id"]),
        login=str(body.get("userPrincipalName") or body["id"]),
        vendor=VENDOR,
        display_name=body.get("displayName") or None,
        email=body.get("mail") or None,
        status=status,
        vendor_status=vendor_status,
    )


class EntraIdentity:
    """Find, disable, enable and sign out Entra ID users.

    Args:
        client: from :func:`integrations.entra.client.connect` (Graph base URL and auth).
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def _user(self, user_id: str) -> dict[str, Any]:
        response = await graph_send(
            self._client,
            "GET",
            f"/users/{segment(user_id)}?{odata_query({'$select': USER_FIELDS})}",
            ok=(200, 202),
        )
        if response.status_code == 202:
            # Graph's "background work still running" answer: the user is being provisioned.
            raise VendorUnavailable(
                f"user {user_id} is still being provisioned", vendor=VENDOR, status_code=202
            )
        body = response.json()
        if not isinstance(body, dict) or "id" not in body:
            raise VendorUnavailable("GET /users/{id} returned no user object", vendor=VENDOR)
        return body

    async def find_user(self, login: str) -> UserAccount | None:
        """The user whose userPrincipalName is ``login``, or ``None``.

        Vendor API: ``GET /users/{userPrincipalName}``; for a UPN starting with ``$``
        (which Graph would read as a path function) ``GET /users?$filter=userPrincipalName
        eq '...'`` instead.
        """
        if login.startswith("$"):
            literal = login.replace("'", "''")  # OData escapes a quote by doubling it
            query = odata_query(
                {"$filter": f"userPrincipalName eq '{literal}'", "$select": USER_FIELDS}
            )
            response = await graph_send(self._client, "GET", f"/users?{query}")
            found = response.json().get("value") or []
            return _to_account(found[0]) if found else None
        try:
            return _to_account(await self._user(login))
        except NotFoundError:
            return None

    async def get_user(self, user_id: str) -> UserAccount:
        """The user with object id (or userPrincipalName) ``user_id``.

        Vendor API: ``GET /users/{id}?$select=id,userPrincipalName,displayName,mail,accountEnabled``

        Raises:
            NotFoundError: no such user.
        """
        return _to_account(await self._user(user_id))

    async def _set_enabled(self, verb: str, user_id: str, enabled: bool) -> ActionReceipt:
        current = _to_account(await self._user(user_id))
        wanted = UserStatus.ACTIVE if enabled else UserStatus.SUSPENDED
        state = "enabled" if enabled else "disabled"
        if current.status is wanted:
            return ActionReceipt(
                verb=verb, target=current.id, vendor=VENDOR, changed=False, state=state
            )
        response = await graph_send(
            self._client,
            "PATCH",
            f"/users/{segment(current.id)}",
            json={"accountEnabled": enabled},
            ok=(204,),
        )
        return ActionReceipt(
            verb=verb,
            target=current.id,
            vendor=VENDOR,
            changed=True,
            state=state,
            vendor_request_id=_request_id(response),
        )

    async def suspend_user(self, user_id: str, *, reason: str) -> ActionReceipt:
        """Disable the account (blocks new sign-ins; existing sessions live on).

        Vendor API: ``GET /users/{id}`` then ``PATCH /users/{id}`` ``{"accountEnabled": false}``
        (204). Graph has no reason field; ``reason`` is kept by the ledger only.

        Raises:
            NotFoundError: no such user.
            AuthError: the app lacks permission (privileged admins need a higher role).
        """
        del reason
        return await self._set_enabled("suspend_user", user_id, enabled=False)

    async def unsuspend_user(self, user_id: str, *, reason: str) -> ActionReceipt:
        """Enable the account again.

        Vendor API: ``GET /users/{id}`` then ``PATCH /users/{id}`` ``{"accountEnabled": true}``
        (204).
        """
        del reason
        return await self._set_enabled("unsuspend_user", user_id, enabled=True)

    async def revoke_sessions(self, user_id: str) -> ActionReceipt:
        """Invalidate the user's refresh tokens and session cookies.

        Vendor API: ``POST /users/{id}/revokeSignInSessions``. Documented as 200 with
        ``{"value": true}`` while 204 is the stated intent; both count as success. Takes
        effect within minutes and does not cover external (B2B) users.

        Raises:
            RejectedError: Graph answered ``{"value": false}``.
        """
        response = await graph_send(
            self._client,
            "POST",
            f"/users/{segment(user_id)}/revokeSignInSessions",
            ok=(200, 204),
        )
        if response.status_code == 200 and response.content:
            try:
                value = response.json().get("value", True)
            except (ValueError, AttributeError):
                value = True  # an unreadable 2xx body still means the action ran
            if value is False:
                raise RejectedError(
                    f"revokeSignInSessions for {user_id} answered value=false",
                    vendor=VENDOR,
                    status_code=200,
                )
        return ActionReceipt(
            verb="revoke_sessions",
            target=user_id,
            vendor=VENDOR,
            changed=True,
            state="sessions_revoked",
            vendor_request_id=_request_id(response),
        )

    async def expire_password(self, user_id: str) -> ActionReceipt:
        """Make the user choose a new password at next sign-in.

        Vendor API: ``PATCH /users/{id}`` ``{"passwordProfile": {"forceChangePasswordNextSignIn":
        true}}`` (204). Needs ``User-PasswordProfile.ReadWrite.All``; Graph does not expose
        the flag for reading, so the receipt always reports a change.
        """
        response = await graph_send(
            self._client,
            "PATCH",
            f"/users/{segment(user_id)}",
            json={"passwordProfile": {"forceChangePasswordNextSignIn": True}},
            ok=(204,),
        )
        return ActionReceipt(
            verb="expire_password",
            target=user_id,
            vendor=VENDOR,
            changed=True,
            state="password_change_required",
            vendor_request_id=_request_id(response),
        )

    async def reset_factors(self, user_id: str) -> ActionReceipt:
        """Delete the user's Authenticator and phone methods so they must re-register MFA.

        Vendor API: ``GET /users/{id}/authentication/methods``, then
        ``DELETE /users/{id}/authentication/microsoftAuthenticatorMethods/{methodId}`` and
        ``DELETE /users/{id}/authentication/phoneMethods/{phoneMethodId}`` (204 each).
        Other method types (password, FIDO2, ...) are kept and listed in ``detail``.
        """
        listed = await graph_send(
            self._client, "GET", f"/users/{segment(user_id)}/authentication/methods"
        )
        methods = listed.json().get("value") or []
        deletable: list[tuple[str, str]] = []
        kept: list[str] = []
        for method in methods:
            kind = str(method.get("@odata.type", ""))
            collection = DELETABLE_METHODS.get(kind)
            if collection is None:
                kept.append(kind.rsplit(".", 1)[-1] or "unknown")
            else:
                deletable.append((collection, str(method["id"])))
        deletable.sort(key=lambda m: (m[0] == "phoneMethods", m[1] == MOBILE_PHONE_METHOD_ID))
        deleted = 0
        for collection, method_id in deletable:
            try:
                await graph_send(
                    self._client,
                    "DELETE",
                    f"/users/{segment(user_id)}/authentication/{collection}/{segment(method_id)}",
                    ok=(204,),
                )
            except NotFoundError:
                continue  # removed meanwhile (by the user or a parallel run): already done
            deleted += 1
        return ActionReceipt(
            verb="reset_factors",
            target=user_id,
            vendor=VENDOR,
            changed=deleted > 0,
            state="factors_reset",
            vendor_request_id=_request_id(listed),
            detail={"deleted": str(deleted), "kept": ",".join(sorted(kept))},
        )

    async def confirm_compromised(self, user_id: str) -> ActionReceipt:
        """Mark the user as confirmed compromised in Identity Protection (risk set to high).

        Vendor API: ``POST /identityProtection/riskyUsers/confirmCompromised``
        ``{"userIds": [id]}`` (204). Needs Entra ID P2. The current risk state is not read
        first: Identity Protection allows one request per second per tenant, and the
        action is idempotent anyway.
        """
        response = await graph_send(
            self._client,
            "POST",
            "/identityProtection/riskyUsers/confirmCompromised",
            json={"userIds": [user_id]},
            ok=(204,),
        )
        return ActionReceipt(
            verb="confirm_compromised",
            target=user_id,
            vendor=VENDOR,
            changed=True,
            state="confirmedCompromised",
            vendor_request_id=_request_id(response),
        )
