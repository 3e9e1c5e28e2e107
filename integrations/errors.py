"""Errors raised by integration adapters; flows never see an httpx exception.

The tree::

    IntegrationError                 anything an adapter could not do
    ├── TransientError               worth retrying: the same call may succeed later
    │   ├── VendorTimeout            connect/read timeout, connection refused or reset
    │   ├── RateLimited              429 (or a vendor's equivalent); ``retry_after`` in seconds
    │   └── VendorUnavailable        5xx, or a vendor's "try again" error in a 200 body
    └── PermanentError               retrying the same call cannot help
        ├── AuthError                401/403, bad credentials, auth lockout (FortiGate's 429)
        ├── NotFoundError            the host, user, IOC ... does not exist
        ├── RejectedError            the vendor refused the request as invalid (400, 409, 422)
        │   └── ConflictError        ...because of the target's current state (``state`` names
        │                            it): Okta's 403 E0000038, a 409 "already contained"
        └── UnsupportedError         the vendor's API has no such operation

Retries decide on the type only, never on message text.
"""

from __future__ import annotations


class IntegrationError(Exception):
    """An adapter could not complete a vendor call.

    Attributes:
        vendor: which vendor adapter raised it (``"crowdstrike"``).
        status_code: the HTTP status, when there was a response.
        vendor_code: the vendor's own error code, when the body carried one.
    """

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status_code: int | None = None,
        vendor_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.vendor = vendor
        self.status_code = status_code
        self.vendor_code = vendor_code

    def __str__(self) -> str:
        where = f"{self.vendor}"
        if self.status_code is not None:
            where += f" HTTP {self.status_code}"
        if self.vendor_code:
            where += f" {self.vendor_code}"
        return f"{where}: {self.args[0]}"


class TransientError(IntegrationError):
    """The call may succeed if repeated later."""


class VendorTimeout(TransientError):
    """The vendor did not answer in time, or the connection failed."""


class RateLimited(TransientError):
    """The vendor throttled us; ``retry_after`` is how long it asked us to wait, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        retry_after: float | None,
        status_code: int | None = 429,
        vendor_code: str | None = None,
    ) -> None:
        super().__init__(message, vendor=vendor, status_code=status_code, vendor_code=vendor_code)
        self.retry_after = retry_after


class VendorUnavailable(TransientError):
    """The vendor answered with a server-side failure (5xx or equivalent)."""


class PermanentError(IntegrationError):
    """Repeating the same call cannot succeed."""


class AuthError(PermanentError):
    """Credentials are missing, wrong, lack permission, or are locked out."""


class NotFoundError(PermanentError):
    """The target does not exist at the vendor."""


class RejectedError(PermanentError):
    """The vendor refused the request as invalid for the target's current state or shape."""


class ConflictError(RejectedError):
    """The vendor refused the operation in the target's current state (not a credentials fault).

    Okta answers 403 E0000038 "This operation is not allowed in the user's current status";
    a 403 of that kind is about the user, not about stanch's API token, so it is not an
    :class:`AuthError`.

    Attributes:
        state: the target's state that the vendor refused to act in, when known
            (``"SUSPENDED"``).
    """

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status_code: int | None = None,
        vendor_code: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(message, vendor=vendor, status_code=status_code, vendor_code=vendor_code)
        self.state = state

    def __str__(self) -> str:
        text = super().__str__()
        if self.state and self.state not in text:
            text += f" (target is {self.state})"
        return text


class UnsupportedError(PermanentError):
    """The vendor's API has no operation for this capability verb."""
