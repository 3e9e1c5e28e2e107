"""Vendor-neutral capabilities: what playbooks ask for, whichever vendor answers.

Each capability is a ``typing.Protocol`` implemented by one adapter class per vendor
(``CrowdStrikeEDR``, ``OktaIdentity``, ``FortiGateFirewall``). Reads return entities;
mutating verbs are idempotent, return an :class:`ActionReceipt`, and come in reversal
pairs (``contain_host``/``release_host``) so the ledger can undo them.

:class:`ThreatIntel` is read-only: ``lookup`` says what a reputation service knows of a
file hash, an address or a domain, so an analyst knows what an indicator is before
anyone approves acting on it.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from integrations.hunting import HuntResult, Indicator
from integrations.ocsf import DetectionFinding


class Capability(StrEnum):
    """The capability names playbooks use as the prefix of an action (``edr.contain_host``)."""

    EDR = "edr"
    IDENTITY = "identity"
    FIREWALL = "firewall"
    ALERTS = "alerts"
    INTEL = "intel"


class Containment(StrEnum):
    """Network containment of a host, vendor states folded into four."""

    NORMAL = "normal"
    CONTAINMENT_PENDING = "containment_pending"
    CONTAINED = "contained"
    RELEASE_PENDING = "release_pending"


class UserStatus(StrEnum):
    """Account lifecycle, vendor states folded into four."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    DISABLED = "disabled"
    OTHER = "other"


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Host(_Value):
    """An endpoint as an EDR knows it."""

    id: str
    hostname: str
    vendor: str
    platform: str | None = None
    os_version: str | None = None
    local_ip: str | None = None
    external_ip: str | None = None
    last_seen: datetime | None = None
    containment: Containment = Containment.NORMAL


class UserAccount(_Value):
    """A user as an identity provider knows it."""

    id: str
    login: str
    vendor: str
    display_name: str | None = None
    email: str | None = None
    status: UserStatus = UserStatus.ACTIVE
    vendor_status: str | None = None


class BlockedIP(_Value):
    """An address a firewall currently blocks."""

    ip: str
    vendor: str
    expires_at: datetime | None = None


class ActionReceipt(_Value):
    """What a mutating vendor call did.

    Attributes:
        verb: the capability verb that was called (``contain_host``).
        target: the id the vendor acted on (host id, user id, IP, hash).
        vendor: which adapter did it.
        changed: ``False`` when the target was already in the requested state.
        state: the target's state after the call, in the vendor's words where useful
            (``containment_pending``, ``suspended``).
        vendor_request_id: the vendor's id for the request or action, for the ledger.
    """

    verb: str
    target: str
    vendor: str
    changed: bool
    state: str
    vendor_request_id: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)


@runtime_checkable
class EDR(Protocol):
    """Endpoint detection and response: find hosts, contain them, block file hashes, hunt.

    ``hunt`` is read-only: the hosts on which ``indicator`` was seen since ``since``.
    """

    vendor: str

    async def find_host(self, hostname: str) -> Host | None: ...
    async def get_host(self, host_id: str) -> Host: ...
    async def contain_host(self, host_id: str, *, reason: str) -> ActionReceipt: ...
    async def release_host(self, host_id: str, *, reason: str) -> ActionReceipt: ...
    async def block_hash(self, sha256: str, *, reason: str) -> ActionReceipt: ...
    async def unblock_hash(self, sha256: str) -> ActionReceipt: ...
    async def hunt(self, indicator: Indicator, *, since: datetime) -> HuntResult: ...


@runtime_checkable
class IdentityProvider(Protocol):
    """An identity provider: find users, suspend them, end their sessions."""

    vendor: str

    async def find_user(self, login: str) -> UserAccount | None: ...
    async def get_user(self, user_id: str) -> UserAccount: ...
    async def suspend_user(self, user_id: str, *, reason: str) -> ActionReceipt: ...
    async def unsuspend_user(self, user_id: str, *, reason: str) -> ActionReceipt: ...
    async def revoke_sessions(self, user_id: str) -> ActionReceipt: ...
    async def expire_password(self, user_id: str) -> ActionReceipt: ...
    async def reset_factors(self, user_id: str) -> ActionReceipt: ...


@runtime_checkable
class Firewall(Protocol):
    """A firewall that can block an address at runtime, optionally for a limited time."""

    vendor: str

    async def block_ip(self, ip: str, *, ttl_seconds: int | None, reason: str) -> ActionReceipt: ...
    async def unblock_ip(self, ip: str) -> ActionReceipt: ...
    async def list_blocked(self) -> list[BlockedIP]: ...


@runtime_checkable
class AlertSource(Protocol):
    """A product whose alerts stanch pulls, normalised to OCSF Detection Findings."""

    vendor: str

    async def fetch_alerts(self, since: datetime) -> list[DetectionFinding]: ...


class IndicatorKind(StrEnum):
    """What an indicator is, as :func:`indicator_kind` reads it."""

    SHA256 = "sha256"
    SHA1 = "sha1"
    MD5 = "md5"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DOMAIN = "domain"

    @property
    def is_hash(self) -> bool:
        """Whether it names a file by its digest."""
        return self in (IndicatorKind.SHA256, IndicatorKind.SHA1, IndicatorKind.MD5)

    @property
    def is_ip(self) -> bool:
        """Whether it is an address."""
        return self in (IndicatorKind.IPV4, IndicatorKind.IPV6)


class IntelVerdict(StrEnum):
    """A reputation service's word on an indicator, vendor verdicts folded into four."""

    MALICIOUS = "malicious"
    SUSPICIOUS = "suspicious"
    HARMLESS = "harmless"
    UNKNOWN = "unknown"


_HASH_KINDS = {64: IndicatorKind.SHA256, 40: IndicatorKind.SHA1, 32: IndicatorKind.MD5}
_HEX = re.compile(r"^[0-9a-f]+$")
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$"
)


def indicator_kind(indicator: str) -> tuple[IndicatorKind, str] | None:
    """``(kind, canonical value)`` of an indicator, or ``None`` if it is none of the kinds.

    Hashes and domains are lower-cased (a trailing dot dropped), addresses put in their
    canonical text form.
    """
    value = indicator.strip().lower()
    if _HEX.match(value) and len(value) in _HASH_KINDS:
        return _HASH_KINDS[len(value)], value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        kind = IndicatorKind.IPV4 if address.version == 4 else IndicatorKind.IPV6
        return kind, str(address)
    value = value.rstrip(".")
    if _DOMAIN.match(value):
        return IndicatorKind.DOMAIN, value
    return None


class IntelReport(_Value):
    """What one reputation service knows of one indicator.

    Every text field but ``indicator``, ``vendor`` and ``link`` comes from the vendor's
    data, which attackers influence (a family name is whatever a sample calls itself, an
    engine's label whatever the sample's strings say): render it as data, escaped.

    Attributes:
        indicator: the indicator looked up, in canonical form.
        kind: what it is.
        vendor: which service answered.
        verdict: malicious, suspicious, harmless or unknown (the service has no record,
            or could not be asked: ``note`` says which).
        score: 0-100, the service's confidence that it is malicious, where it has one.
        names: threat labels and families (``ransomware``, ``lockbit``).
        first_seen: when the service first saw it, where it says.
        link: the service's page for the analyst.
        note: why the verdict is unknown, or anything else the analyst should know.
    """

    indicator: str
    kind: IndicatorKind
    vendor: str
    verdict: IntelVerdict
    score: int | None = Field(default=None, ge=0, le=100)
    names: tuple[str, ...] = ()
    first_seen: datetime | None = None
    link: str | None = None
    note: str | None = None


@runtime_checkable
class ThreatIntel(Protocol):
    """A reputation service: what it knows of a file hash, an address or a domain.

    ``kinds`` are the indicator kinds it answers for. ``lookup`` returns an
    :class:`IntelReport` with verdict ``unknown`` when the service has no record (its
    404); it raises :class:`~integrations.errors.RateLimited` when the quota is spent
    and :class:`~integrations.errors.RejectedError` for an indicator it does not take.
    """

    vendor: str
    kinds: frozenset[IndicatorKind]

    async def lookup(self, indicator: str) -> IntelReport: ...


# The inverse of each reversible verb: what the ledger runs to undo it.
INVERSE_VERBS: dict[str, str] = {
    "contain_host": "release_host",
    "release_host": "contain_host",
    "block_hash": "unblock_hash",
    "unblock_hash": "block_hash",
    "suspend_user": "unsuspend_user",
    "unsuspend_user": "suspend_user",
    "block_ip": "unblock_ip",
    "unblock_ip": "block_ip",
}
