"""FortiGate as a :class:`~integrations.capabilities.Firewall`: IP quarantine via banned users.

Runtime bans (``monitor/user/banned``) take effect at once and expire on their own, so a
playbook never has to edit policy objects to block an address.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.capabilities import ActionReceipt, BlockedIP
from integrations.errors import RejectedError, VendorUnavailable
from integrations.fortigate.client import VENDOR, call

BANNED = "/api/v2/monitor/user/banned"


def _canonical_ip(ip: str) -> str:
    """The address in canonical text form, or RejectedError before anything is sent."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError as exc:
        raise RejectedError(f"not an IP address: {ip!r}", vendor=VENDOR) from exc


class FortiGateFirewall:
    """Blocks addresses on one FortiGate VDOM through the banned-users (quarantine) table.

    Args:
        client: from :func:`integrations.fortigate.client.connect` (base URL, token,
            timeouts already set).
        vdom: the virtual domain whose banned list is used; by default the ``vdom``
            query parameter :func:`~integrations.fortigate.client.connect` set on the
            client (``FortiGateSettings.vdom``), else ``root``.
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient, *, vdom: str | None = None) -> None:
        self._client = client
        self._vdom = vdom or client.params.get("vdom") or "root"

    async def _is_banned(self, ip: str) -> bool:
        envelope = await call(
            self._client, "GET", f"{BANNED}/check", vdom=self._vdom, params={"ip_address": ip}
        )
        results = envelope.get("results")
        banned = results.get("is_banned") if isinstance(results, dict) else None
        if not isinstance(banned, bool):
            raise VendorUnavailable(
                "banned/check answered without results.is_banned", vendor=VENDOR, status_code=200
            )
        return banned

    async def block_ip(self, ip: str, *, ttl_seconds: int | None, reason: str) -> ActionReceipt:
        """Ban ``ip`` for ``ttl_seconds`` (``None`` or 0: until unbanned).

        Checks first, because FortiOS does not document what ``add_users`` does to an
        address that is already banned; an existing ban is left as it is.

        Vendor API: POST /api/v2/monitor/user/banned/add_users
        (after GET /api/v2/monitor/user/banned/check?ip_address=<ip>)

        Args:
            ip: IPv4 or IPv6 address.
            ttl_seconds: ban lifetime; ``None`` or ``0`` bans indefinitely.
            reason: why; kept on the receipt (the banned table has no comment field).

        Raises:
            RejectedError: ``ip`` is not an address or ``ttl_seconds`` is negative
                (before any request), or FortiOS refused the ban.
        """
        address = _canonical_ip(ip)
        if ttl_seconds is not None and ttl_seconds < 0:
            raise RejectedError(f"ttl_seconds must be >= 0, got {ttl_seconds}", vendor=VENDOR)
        # FortiOS reads expiry 0 as an indefinite ban.
        expiry = ttl_seconds or 0
        detail = {"reason": reason, "expiry_seconds": str(expiry), "vdom": self._vdom}
        if await self._is_banned(address):
            return self._receipt("block_ip", address, changed=False, state="blocked", detail=detail)
        await call(
            self._client,
            "POST",
            f"{BANNED}/add_users",
            vdom=self._vdom,
            json={"ip_addresses": [address], "expiry": expiry},
        )
        # The add_users success envelope carries no per-address result, so confirm
        # (the reference's idempotency checklist: check before and after).
        if not await self._is_banned(address):
            raise RejectedError(
                f"add_users reported success but {address} is not banned", vendor=VENDOR
            )
        return self._receipt("block_ip", address, changed=True, state="blocked", detail=detail)

    async def unblock_ip(self, ip: str) -> ActionReceipt:
        """Lift the ban on ``ip``; an address that is not banned is left alone.

        Vendor API: POST /api/v2/monitor/user/banned/clear_users
        (after GET /api/v2/monitor/user/banned/check?ip_address=<ip>)

        Raises:
            RejectedError: ``ip`` is not an address (before any request), or the ban
                is still in place after FortiOS reported success.
        """
        address = _canonical_ip(ip)
        detail = {"vdom": self._vdom}
        if not await self._is_banned(address):
            return self._receipt(
                "unblock_ip", address, changed=False, state="unblocked", detail=detail
            )
        await call(
            self._client,
            "POST",
            f"{BANNED}/clear_users",
            vdom=self._vdom,
            json={"ip_addresses": [address]},
        )
        if await self._is_banned(address):
            raise RejectedError(
                f"clear_users reported success but {address} is still banned", vendor=VENDOR
            )
        return self._receipt("unblock_ip", address, changed=True, state="unblocked", detail=detail)

    async def list_blocked(self) -> list[BlockedIP]:
        """Every address in the VDOM's banned table, whoever banned it (IPS, DoS, admin).

        Vendor API: GET /api/v2/monitor/user/banned
        """
        envelope = await call(self._client, "GET", BANNED, vdom=self._vdom)
        results = envelope.get("results")
        if not isinstance(results, list):
            raise VendorUnavailable(
                "banned list answered without a results list", vendor=VENDOR, status_code=200
            )
        return [
            self._blocked(entry)
            for entry in results
            if isinstance(entry, dict) and isinstance(entry.get("ip_address"), str)
        ]

    @staticmethod
    def _blocked(entry: dict[str, Any]) -> BlockedIP:
        expires = entry.get("expires")
        # `expires` is epoch seconds; an indefinite ban has no positive expiry.
        expires_at = (
            datetime.fromtimestamp(expires, tz=UTC)
            if isinstance(expires, int | float) and expires > 0
            else None
        )
        return BlockedIP(ip=entry["ip_address"], vendor=VENDOR, expires_at=expires_at)

    def _receipt(
        self, verb: str, ip: str, *, changed: bool, state: str, detail: dict[str, str]
    ) -> ActionReceipt:
        return ActionReceipt(
            verb=verb, target=ip, vendor=VENDOR, changed=changed, state=state, detail=detail
        )
