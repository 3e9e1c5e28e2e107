"""Verify that an HTTP request came from Slack: the ``v0`` HMAC-SHA256 request signature.

Slack signs ``v0:{X-Slack-Request-Timestamp}:{raw body}`` with the app's signing secret and
sends ``X-Slack-Signature: v0=<hex>``. Every failure raises :class:`SlackSignatureError`, so a
web handler can answer 401 for all of them and never 500.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
MAX_AGE_SECONDS = 300
"""Slack's documented replay window: reject requests more than five minutes from now."""

SignatureProblem = Literal["missing", "malformed timestamp", "stale", "mismatch"]

# ASCII digits only: str.isdigit() also accepts digits like "²" that int() then rejects.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SlackSignatureError(Exception):
    """The request is not a fresh, correctly signed request from Slack.

    Attributes:
        reason: ``missing`` (a header is absent or empty), ``malformed timestamp``,
            ``stale`` (outside the five-minute window) or ``mismatch`` (wrong signature).
    """

    def __init__(self, reason: SignatureProblem) -> None:
        super().__init__(f"Slack request signature rejected: {reason}")
        self.reason: SignatureProblem = reason


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature verified.

    Attributes:
        timestamp: the signed ``X-Slack-Request-Timestamp``, epoch seconds.
        body: the raw body that was signed, to be parsed only now.
    """

    timestamp: int
    body: bytes


def _secret_bytes(secret: SecretStr | str) -> bytes:
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    # Slack uses the secret as UTF-8 text, not base64- or hex-decoded.
    return value.encode()


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: SecretStr | str, timestamp: int | str, body: bytes | str) -> str:
    """The ``X-Slack-Signature`` value Slack would send for this timestamp and body.

    Args:
        secret: the app's signing secret.
        timestamp: the ``X-Slack-Request-Timestamp`` value.
        body: the raw request body.

    Returns:
        ``v0=`` followed by the lowercase hex HMAC-SHA256.
    """
    basestring = b"v0:" + str(timestamp).encode() + b":" + _as_bytes(body)
    return "v0=" + hmac.new(_secret_bytes(secret), basestring, hashlib.sha256).hexdigest()


class SlackRequestVerifier:
    """Checks Slack request signatures against one signing secret.

    Args:
        signing_secret: the app's signing secret (Basic Information page of the app).
        clock: returns now as epoch seconds; injected so tests can use a fixed time.
        max_age_seconds: the accepted distance between the request timestamp and now.
    """

    def __init__(
        self,
        signing_secret: SecretStr,
        *,
        clock: Callable[[], float] = time.time,
        max_age_seconds: int = MAX_AGE_SECONDS,
    ) -> None:
        self._secret = signing_secret
        self._clock = clock
        self._max_age = max_age_seconds

    def verify(self, headers: Mapping[str, str], body: bytes | str) -> VerifiedRequest:
        """Check one request; parse its body only after this returns.

        Args:
            headers: the request headers; names are matched case-insensitively.
            body: the raw body exactly as received, before any form or JSON parsing.

        Returns:
            The verified timestamp and body.

        Raises:
            SlackSignatureError: with the reason the request was rejected.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        raw_timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "").strip()
        signature = lowered.get(SIGNATURE_HEADER.lower(), "").strip()
        if not raw_timestamp or not signature:
            raise SlackSignatureError("missing")
        if not _TIMESTAMP.fullmatch(raw_timestamp):
            raise SlackSignatureError("malformed timestamp")
        timestamp = int(raw_timestamp)
        # Both directions: a timestamp far in the future is as replayable as an old one.
        if abs(self._clock() - timestamp) > self._max_age:
            raise SlackSignatureError("stale")
        raw_body = _as_bytes(body)
        expected = sign(self._secret, raw_timestamp, raw_body)
        # Compare bytes: compare_digest raises TypeError on non-ASCII str, which a hostile
        # header could otherwise turn into a 500.
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise SlackSignatureError("mismatch")
        return VerifiedRequest(timestamp=timestamp, body=raw_body)
