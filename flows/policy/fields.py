"""The vocabulary of a policy file: the actions it may name and its field types."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
)
from pydantic_core import PydanticCustomError

from integrations.capabilities import Capability
from integrations.ocsf import SeverityId

# The mutating verbs of each capability protocol (pinned against the protocols by a test):
# a policy naming any other verb is a typo, not a rule for a future verb.
KNOWN_ACTIONS: Mapping[Capability, frozenset[str]] = {
    Capability.EDR: frozenset({"contain_host", "release_host", "block_hash", "unblock_hash"}),
    Capability.IDENTITY: frozenset(
        {"suspend_user", "unsuspend_user", "revoke_sessions", "expire_password", "reset_factors"}
    ),
    Capability.FIREWALL: frozenset({"block_ip", "unblock_ip"}),
    Capability.ALERTS: frozenset(),
}

# Actions that cut someone off. A timeout must never count as a yes for these: silence from
# the approvers is not consent to isolate a host or lock out a user.
CONTAINMENT_ACTIONS: frozenset[str] = frozenset(
    {"edr.contain_host", "identity.suspend_user", "identity.revoke_sessions", "firewall.block_ip"}
)

# Actions whose target is a host: protected host patterns apply to the host's name.
HOST_ACTIONS: frozenset[str] = frozenset({"edr.contain_host", "edr.release_host"})

TimeoutOutcome = Literal["deny", "approve"]
ActionCounter = Callable[[str, str, timedelta], int]
"""``(tenant, action, window) -> how many of that action ran in the tenant within window``."""

_SEVERITY_NAMES = ("informational", "low", "medium", "high", "critical", "fatal")


def _count(value: int) -> int:
    if value < 1:
        raise PydanticCustomError(
            "bad-count", "must be at least 1, got {value}", {"value": repr(value)}
        )
    return value


# strict: YAML ``true`` or ``"2"`` as a count is a mistake worth reporting, not coercing.
Count = Annotated[int, Field(strict=True), AfterValidator(_count)]

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> timedelta:
    if isinstance(value, bool):
        seconds = -1
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m.group(1)) * _UNITS[m.group(2)]
    else:
        seconds = -1
    if seconds <= 0:
        raise PydanticCustomError(
            "bad-duration",
            "{value} is not a duration; write seconds (900) or 30s, 15m, 1h, 2d",
            {"value": repr(value)},
        )
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def parse_duration(text: str) -> timedelta:
    """``900``, ``30s``, ``15m``, ``1h`` or ``7d`` as a timedelta (policy files' spelling).

    Raises:
        ValueError: not a positive duration in that form.
    """
    try:
        return _duration(int(text) if text.strip().isdigit() else text)
    except PydanticCustomError as exc:
        raise ValueError(str(exc)) from exc


def _severity(value: Any) -> SeverityId:
    name = value.strip().lower() if isinstance(value, str) else None
    if name not in _SEVERITY_NAMES:
        raise PydanticCustomError(
            "bad-severity",
            "{value} is not a severity; use one of " + ", ".join(_SEVERITY_NAMES),
            {"value": repr(value)},
        )
    return SeverityId[name.upper()]


Severity = Annotated[SeverityId, BeforeValidator(_severity)]


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        # strict: 10.0.0.5/24 is more likely a typo than a way of writing 10.0.0.0/24.
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise PydanticCustomError(
            "bad-cidr",
            "{value} is not an IP range in CIDR form: {error}",
            {"value": repr(value), "error": str(exc)},
        ) from exc


Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]
Glob = Annotated[str, Field(min_length=1)]
GroupName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
# ``user@host`` as ``stanch approve`` records it, or a glob of them (``*@soc-*``, ``*``).
CliOperator = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s,]+$")]
TenantName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def _slack_id(prefixes: str, what: str) -> Callable[[str], str]:
    pattern = re.compile(rf"^[{prefixes}][A-Z0-9]{{2,}}$")

    def check(value: str) -> str:
        if not pattern.match(value):
            raise PydanticCustomError(
                "bad-slack-id",
                "{value} is not a Slack {what} id (like {example})",
                {"value": repr(value), "what": what, "example": f"{prefixes[0]}0123ABCD"},
            )
        return value

    return check


SlackUserId = Annotated[str, AfterValidator(_slack_id("UW", "user"))]
SlackGroupId = Annotated[str, AfterValidator(_slack_id("S", "user group"))]


def _action_name(value: str) -> str:
    capability, _, verb = value.partition(".")
    known = {c.value for c in Capability}
    if capability not in known or not verb:
        raise PydanticCustomError(
            "unknown-capability",
            "{value} does not start with a capability; use <capability>.<verb> with one of "
            + ", ".join(sorted(known)),
            {"value": repr(value)},
        )
    verbs = KNOWN_ACTIONS[Capability(capability)]
    if verb not in verbs:
        hint = difflib.get_close_matches(verb, verbs, n=1)
        raise PydanticCustomError(
            "unknown-action",
            "{capability} has no verb {verb}" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
            {"capability": capability, "verb": repr(verb)},
        )
    return value


ActionName = Annotated[str, AfterValidator(_action_name)]
