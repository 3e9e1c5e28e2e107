"""PAN-OS as a :class:`~integrations.capabilities.Firewall`: tag IPs for a Dynamic Address Group.

Registering an IP with the DAG's tag through the User-ID API blocks it at once, with no
commit, and the tag's ``timeout`` lifts the block by itself.
"""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from typing import Literal

import httpx

from integrations.capabilities import ActionReceipt, BlockedIP
from integrations.errors import RejectedError
from integrations.panos.client import (
    DEFAULT_TAG,
    VENDOR,
    PanosClient,
    call,
    entry_messages,
    error_for,
    request,
)

MAX_TIMEOUT_SECONDS = 2_592_000
"""The largest tag ``timeout`` PAN-OS accepts (30 days; reference §4)."""
PAGE = 500
"""Registered IPs per page of the read-back (PAN-OS 8.0+; reference §4)."""
ALREADY_REGISTERED = "already exists, ignore"
NOT_REGISTERED = "does not exist, ignore unreg"


def _canonical_ip(ip: str) -> str:
    """The address in canonical text form, or RejectedError before anything is sent."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError as exc:
        raise RejectedError(f"not an IP address: {ip!r}", vendor=VENDOR) from exc


def uid_message(
    action: Literal["register", "unregister"], ip: str, tag: str, timeout: int | None = None
) -> str:
    """A uid-message registering or unregistering ``tag`` on ``ip`` (reference §4)."""
    root = ET.Element("uid-message")
    ET.SubElement(root, "version").text = "2.0"
    ET.SubElement(root, "type").text = "update"
    block = ET.SubElement(ET.SubElement(root, "payload"), action)
    entry = ET.SubElement(block, "entry", {"ip": ip})
    if action == "register":
        # Survive a firewall reboot: a block that silently vanished would be worse.
        entry.set("persistent", "1")
    member = ET.SubElement(ET.SubElement(entry, "tag"), "member")
    member.text = tag
    if timeout:
        member.set("timeout", str(timeout))
    return ET.tostring(root, encoding="unicode")


def registered_ip_command(tag: str, *, start: int, limit: int = PAGE) -> str:
    """The op command listing IPs registered with ``tag``, one page (reference §4)."""
    show = ET.Element("show")
    registered = ET.SubElement(ET.SubElement(show, "object"), "registered-ip")
    ET.SubElement(ET.SubElement(registered, "tag"), "entry", {"name": tag})
    ET.SubElement(registered, "limit").text = str(limit)
    ET.SubElement(registered, "start-point").text = str(start)
    return ET.tostring(show, encoding="unicode")


def _only(root: ET.Element, suffix: str) -> bool:
    """True if the error is nothing but per-entry "already in that state" messages."""
    messages = entry_messages(root)
    return root.get("code") is None and bool(messages) and all(m.endswith(suffix) for m in messages)


class PanosFirewall:
    """Blocks addresses on one PAN-OS firewall by tagging them for a Dynamic Address Group.

    Precondition (configured and committed once, outside stanch): an address group whose
    dynamic match is the tag, used by a deny rule.

    Args:
        client: from :func:`integrations.panos.client.connect` (base URL, key handling,
            timeouts already set).
        tag: the DAG's tag; by default the client's (``PanosSettings.tag``), else
            ``stanch-block``.
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient, *, tag: str | None = None) -> None:
        self._client = client
        self._tag = tag or (client.tag if isinstance(client, PanosClient) else DEFAULT_TAG)

    async def block_ip(self, ip: str, *, ttl_seconds: int | None, reason: str) -> ActionReceipt:
        """Register ``ip`` with the tag for ``ttl_seconds`` (``None`` or 0: until unblocked).

        An IP that already carries the tag comes back "already exists, ignore"; that is
        success with ``changed=False`` and the existing registration (and its timeout)
        stays as it was.

        Vendor API: POST /api/?type=user-id&cmd=<uid-message>…<register>…
        (parameters in the form body)

        Args:
            ip: IPv4 or IPv6 address.
            ttl_seconds: registration lifetime, at most 2,592,000 (30 days).
            reason: why; kept on the receipt (registrations carry no comment).

        Raises:
            RejectedError: ``ip`` is not an address or ``ttl_seconds`` is out of range
                (before any request), or the firewall refused the registration.
            AuthError: the key or credentials were refused.
        """
        address = _canonical_ip(ip)
        if ttl_seconds is not None and not 0 <= ttl_seconds <= MAX_TIMEOUT_SECONDS:
            raise RejectedError(
                f"ttl_seconds must be 0..{MAX_TIMEOUT_SECONDS}, got {ttl_seconds}", vendor=VENDOR
            )
        cmd = uid_message("register", address, self._tag, ttl_seconds)
        root = await request(self._client, {"type": "user-id", "cmd": cmd})
        changed = self._judge(root, ALREADY_REGISTERED, "register")
        detail = {"reason": reason, "tag": self._tag, "timeout_seconds": str(ttl_seconds or 0)}
        return ActionReceipt(
            verb="block_ip",
            target=address,
            vendor=VENDOR,
            changed=changed,
            state="blocked",
            detail=detail,
        )

    async def unblock_ip(self, ip: str) -> ActionReceipt:
        """Remove the tag from ``ip``; an IP without it ("does not exist, ignore unreg")
        is success with ``changed=False``.

        Vendor API: POST /api/?type=user-id&cmd=<uid-message>…<unregister>…
        (parameters in the form body)

        Raises:
            RejectedError: ``ip`` is not an address (before any request), or the
                firewall refused the request.
            AuthError: the key or credentials were refused.
        """
        address = _canonical_ip(ip)
        cmd = uid_message("unregister", address, self._tag)
        root = await request(self._client, {"type": "user-id", "cmd": cmd})
        changed = self._judge(root, NOT_REGISTERED, "unregister")
        return ActionReceipt(
            verb="unblock_ip",
            target=address,
            vendor=VENDOR,
            changed=changed,
            state="unblocked",
            detail={"tag": self._tag},
        )

    async def list_blocked(self) -> list[BlockedIP]:
        """Every IP registered with the tag, read 500 at a time.

        The documented read-back does not report a registration's remaining timeout,
        so ``expires_at`` is ``None`` (unknown) on every entry.

        Vendor API: POST /api/?type=op&cmd=<show><object><registered-ip><tag><entry
        name="TAG"/></tag><limit>500</limit><start-point>N</start-point>…</show>
        """
        blocked: list[BlockedIP] = []
        start = 1
        while True:
            cmd = registered_ip_command(self._tag, start=start)
            root = await call(self._client, {"type": "op", "cmd": cmd}, what="registered-ip")
            entries = root.findall("./result/entry")
            for entry in entries:
                tags = {member.text for member in entry.findall("./tag/member")}
                ip = entry.get("ip")
                if ip and self._tag in tags:
                    blocked.append(BlockedIP(ip=ip, vendor=VENDOR))
            if len(entries) < PAGE:
                return blocked
            start += len(entries)

    @staticmethod
    def _judge(root: ET.Element, ignorable: str, what: str) -> bool:
        """True if the request changed state, False if it was already done; else raise."""
        if root.get("status") == "success":
            return True
        if _only(root, ignorable):
            return False
        raise error_for(root, status_code=200, what=what)
