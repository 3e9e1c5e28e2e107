"""Okta as an :class:`~integrations.capabilities.IdentityProvider` (Users and lifecycle API)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from integrations.capabilities import ActionReceipt, UserAccount, UserStatus
from integrations.errors import ConflictError, NotFoundError, RejectedError, VendorUnavailable
from integrations.okta.client import VENDOR, okta_send

OKTA_STATUS: dict[str, UserStatus] = {
    "ACTIVE": UserStatus.ACTIVE,
    # These three are credential conditions of an active account: the user exists, is
    # assigned to apps and can recover, so playbooks should treat them as active.
    "PASSWORD_EXPIRED": UserStatus.ACTIVE,
    "LOCKED_OUT": UserStatus.ACTIVE,
    "RECOVERY": UserStatus.ACTIVE,
    "SUSPENDED": UserStatus.SUSPENDED,
    "DEPROVISIONED": UserStatus.DISABLED,
    # Never activated: no sign-in possible yet, but not disabled by anyone either.
    "STAGED": UserStatus.OTHER,
    "PROVISIONED": UserStatus.OTHER,
}
"""Okta ``User.status`` → :class:`UserStatus`; the Okta value is kept as ``vendor_status``."""


def _path_segment(value: str) -> str:
    if not value.strip():
        # An empty segment would turn GET /api/v1/users/{id} into the list-users call.
        raise NotFoundError("empty user id or login", vendor=VENDOR)
    # Logins carry '@' and '+'; encode everything so an id can never add path segments.
    return quote(value, safe="")


def _request_id(response: httpx.Response) -> str | None:
    value = response.headers.get("X-Okta-Request-Id")
    return str(value) if value else None


def user_account(body: Any) -> UserAccount:
    """A :class:`UserAccount` from an Okta User object.

    Raises:
        VendorUnavailable: the body is not a User object.
    """
    try:
        profile = body.get("profile") or {}
        status = body.get("status")
        names = [profile.get("firstName"), profile.get("lastName")]
        display = profile.get("displayName") or " ".join(n for n in names if n) or None
        return UserAccount(
            id=str(body["id"]),
            login=str(profile["login"]),
            vendor=VENDOR,
            display_name=display,
            email=profile.get("email"),
            status=OKTA_STATUS.get(str(status), UserStatus.OTHER),
            vendor_status=status,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise VendorUnavailable(
            "Okta answered with a body that is not a User", vendor=VENDOR
        ) from exc


def _refused_in_state(error: RejectedError, action: str, status: str | None) -> ConflictError:
    """A lifecycle refusal as a :class:`ConflictError` naming the user's Okta status."""
    return ConflictError(
        f"{action} refused while the user is {status or 'in an unknown status'}: {error.args[0]}",
        vendor=VENDOR,
        status_code=error.status_code,
        vendor_code=error.vendor_code,
        state=status,
    )


class OktaIdentity:
    """Find, suspend and contain Okta users.

    Args:
        client: from :func:`integrations.okta.client.connect` (org URL, auth, timeouts).

    Every call goes through :func:`integrations.okta.client.okta_send`: errors are mapped
    to :mod:`integrations.errors`, rate limits carry ``retry_after`` from
    ``X-Rate-Limit-Reset``, and nothing is retried here (retries belong to the flow layer).
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def find_user(self, login: str) -> UserAccount | None:
        """The user with this login, or ``None``.

        Vendor API: GET /api/v1/users/{id} (the login URL-encoded; Okta also resolves an id
        or an unambiguous short login there). Logins containing ``/`` cannot travel in a
        path, so those use GET /api/v1/users?search=profile.login eq "<login>".
        """
        if not login.strip():
            return None
        if "/" in login:
            escaped = login.replace("\\", "\\\\").replace('"', '\\"')
            response = await okta_send(
                self._client,
                "GET",
                "/api/v1/users",
                params={"search": f'profile.login eq "{escaped}"', "limit": "2"},
                ok=(200,),
            )
            users = response.json()
            if not isinstance(users, list):
                raise VendorUnavailable("user search did not return a list", vendor=VENDOR)
            return user_account(users[0]) if users else None
        response = await okta_send(
            self._client, "GET", f"/api/v1/users/{_path_segment(login)}", ok=(200, 404)
        )
        if response.status_code == 404:
            return None
        return user_account(response.json())

    async def get_user(self, user_id: str) -> UserAccount:
        """The user with this id (or login).

        Vendor API: GET /api/v1/users/{id}

        Raises:
            NotFoundError: no such user (E0000007).
        """
        response = await okta_send(
            self._client, "GET", f"/api/v1/users/{_path_segment(user_id)}", ok=(200,)
        )
        return user_account(response.json())

    async def suspend_user(self, user_id: str, *, reason: str) -> ActionReceipt:
        """Suspend an ACTIVE user: they cannot sign in until unsuspended.

        Vendor API: POST /api/v1/users/{id}/lifecycle/suspend

        Okta has no field for the reason; it is kept in the receipt for the ledger.

        Raises:
            ConflictError: the user is in a status Okta cannot suspend (only ACTIVE users
                can be; e.g. DEPROVISIONED or PASSWORD_EXPIRED), named in ``state``.
        """
        return await self._transition(
            user_id, verb="suspend_user", action="suspend", target="SUSPENDED", reason=reason
        )

    async def unsuspend_user(self, user_id: str, *, reason: str) -> ActionReceipt:
        """Return a SUSPENDED user to ACTIVE.

        Vendor API: POST /api/v1/users/{id}/lifecycle/unsuspend

        Raises:
            ConflictError: the user is neither SUSPENDED nor ACTIVE (e.g. DEPROVISIONED),
                named in ``state``.
        """
        return await self._transition(
            user_id, verb="unsuspend_user", action="unsuspend", target="ACTIVE", reason=reason
        )

    async def _transition(
        self, user_id: str, *, verb: str, action: str, target: str, reason: str
    ) -> ActionReceipt:
        # Okta answers 400 (not 200) when the user is already where we want them, so read
        # first; the status, not the error text, decides what counts as "already done".
        before = await self.get_user(user_id)
        if before.vendor_status == target:
            return self._receipt(verb, before.id, changed=False, state=target, reason=reason)
        try:
            response = await okta_send(
                self._client,
                "POST",
                f"/api/v1/users/{_path_segment(before.id)}/lifecycle/{action}",
                ok=(200,),
            )
        except RejectedError as exc:
            # Someone else may have made the same change between our read and our write.
            after = await self.get_user(before.id)
            if after.vendor_status == target:
                return self._receipt(verb, after.id, changed=False, state=target, reason=reason)
            raise _refused_in_state(exc, action, after.vendor_status) from exc
        return self._receipt(
            verb,
            before.id,
            changed=True,
            state=target,
            reason=reason,
            request_id=_request_id(response),
            previous=before.vendor_status,
        )

    async def revoke_sessions(self, user_id: str) -> ActionReceipt:
        """End every Okta session of the user and revoke their OAuth/OIDC tokens.

        Vendor API: DELETE /api/v1/users/{userId}/sessions?oauthTokens=true

        ``oauthTokens=true`` because a stolen refresh token outlives the browser session.
        Sessions that apps keep themselves are out of Okta's reach. Safe to repeat (204).
        """
        response = await okta_send(
            self._client,
            "DELETE",
            f"/api/v1/users/{_path_segment(user_id)}/sessions",
            params={"oauthTokens": "true"},
            ok=(204, 200),
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
        """Force a password change at next sign-in.

        Vendor API: POST /api/v1/users/{id}/lifecycle/expire_password

        Okta answers with the User object, whose status (normally PASSWORD_EXPIRED) is the
        receipt's state. Expiring an already expired password changes nothing visible, so
        the receipt then says ``changed=False``.

        Okta's user status limits the lifecycle operations allowed: the password of a
        SUSPENDED user cannot be expired (403 E0000038). Expire it before suspending, or
        after unsuspending; the playbooks do the latter.

        Raises:
            ConflictError: Okta refused in the user's current status (named in ``state``).
        """
        before = await self.get_user(user_id)
        if before.vendor_status == "PASSWORD_EXPIRED":
            return self._receipt(
                "expire_password", before.id, changed=False, state="PASSWORD_EXPIRED"
            )
        try:
            response = await okta_send(
                self._client,
                "POST",
                f"/api/v1/users/{_path_segment(before.id)}/lifecycle/expire_password",
                ok=(200,),
            )
        except ConflictError as exc:
            # 403 E0000038: Okta expires the password of an active account only (not of a
            # SUSPENDED one); say which status it refused, as read just before.
            raise _refused_in_state(exc, "expire_password", before.vendor_status) from exc
        after = user_account(response.json())
        return self._receipt(
            "expire_password",
            after.id,
            changed=True,
            state=after.vendor_status or "unknown",
            request_id=_request_id(response),
            previous=before.vendor_status,
        )

    async def reset_factors(self, user_id: str) -> ActionReceipt:
        """Unenroll every MFA factor, so the user must enroll again at next sign-in.

        Vendor API: POST /api/v1/users/{id}/lifecycle/reset_factors

        The user stays ACTIVE; Okta answers 200 with an empty body and the call is safe
        to repeat. Whether a SUSPENDED user's factors can be reset is not documented; the
        playbooks reset them after the unsuspend.

        Raises:
            ConflictError: Okta refused in the user's current status (named in ``state``).
        """
        try:
            response = await okta_send(
                self._client,
                "POST",
                f"/api/v1/users/{_path_segment(user_id)}/lifecycle/reset_factors",
                ok=(200,),
            )
        except ConflictError as exc:
            current = await self.get_user(user_id)
            raise _refused_in_state(exc, "reset_factors", current.vendor_status) from exc
        return ActionReceipt(
            verb="reset_factors",
            target=user_id,
            vendor=VENDOR,
            changed=True,
            state="factors_reset",
            vendor_request_id=_request_id(response),
        )

    @staticmethod
    def _receipt(
        verb: str,
        target: str,
        *,
        changed: bool,
        state: str,
        reason: str | None = None,
        request_id: str | None = None,
        previous: str | None = None,
    ) -> ActionReceipt:
        detail = {"vendor_status": state}
        if previous is not None:
            detail["previous_vendor_status"] = previous
        if reason:
            detail["reason"] = reason
        return ActionReceipt(
            verb=verb,
            target=target,
            vendor=VENDOR,
            changed=changed,
            state=state.lower(),
            vendor_request_id=request_id,
            detail=detail,
        )
