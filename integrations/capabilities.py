"""Vendor-neutral capabilities: what playbooks ask for, whichever vendor answers.

Each capability is a ``typing.Protocol`` implemented by one adapter class per vendor
(``CrowdStrikeEDR``, ``OktaIdentity``, ``FortiGateFirewall``). Reads return entities;
mutating verbs are idempotent, return an :class:`ActionReceipt`, and come in reversal
pairs (``contain_host``/``release_host``) so the ledger can undo them.
"""

from __future__ import annotations

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
