"""What an alert is, for de-duplication (its fingerprint) and for correlation (its entities)."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from enum import StrEnum
from typing import Any

from flows.detect.normalise import canonical_json
from integrations.ocsf import DetectionFinding, ObservableType

# Producers that must fill the required uid but have none put one of these in it.
_PLACEHOLDER_UIDS = frozenset({"", "-", "0", "none", "null", "n/a", "unknown"})
_CONTENT_FIELDS = {
    "class_uid",
    "activity_id",
    "severity_id",
    "time",
    "message",
    "finding_info",
    "device",
    "actor",
    "evidences",
    "observables",
}


def fingerprint(source: str, finding: DetectionFinding) -> str:
    """The alert's identity for de-duplication, as 64 hex digits.

    The vendor's finding uid when it has a real one (product + uid), so a re-sent or
    re-polled alert is the same alert whichever way it came in (a webhook in the vendor's
    format, a poller's OCSF); otherwise a SHA-256 of the canonical JSON of the fields that
    say what happened (not status, raw data or processing metadata), with ``source``.
    """
    uid = finding.finding_info.uid.strip()
    product = finding.metadata.product
    material: list[Any]
    if uid.lower() not in _PLACEHOLDER_UIDS:
        material = ["uid", product.uid or product.name or source, uid]
    else:
        content = finding.model_dump(mode="json", exclude_none=True, include=_CONTENT_FIELDS)
        content["finding_info"].pop("uid", None)
        material = ["content", source, product.uid or product.name, content]
    return hashlib.sha256(canonical_json(material)).hexdigest()


class EntityKind(StrEnum):
    """The entity types correlation joins alerts on."""

    HOST = "host"
    USER = "user"
    HASH = "hash"
    IP = "ip"


# Built-in accounts appear in unrelated alerts on every host; joining on them would fold a
# tenant's whole day into one incident.
_GENERIC_USERS = frozenset(
    {"system", "root", "local service", "network service", "administrator", "-", "n/a"}
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _host_key(hostname: str) -> str | None:
    name = hostname.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(name)
    except ValueError:
        # EDRs disagree on FQDN versus short name for the same machine.
        return name.split(".", 1)[0] or None
    return name


def _user_key(login: str) -> str | None:
    name = login.strip().lower()
    name = name.rsplit("\\", 1)[-1]  # DOMAIN\user and user are the same account
    return None if not name or name in _GENERIC_USERS else name


# RFC 5737 / 3849 documentation ranges stand in for internet addresses in samples and
# tests, as in DetectionFinding.external_ips.
_DOCUMENTATION_NETS = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


@functools.lru_cache(maxsize=65536)
def _public_ip(value: str) -> str | None:
    # DetectionFinding.external_ips parses its networks on every call, which costs more
    # than the rest of correlation together; the same test with the networks parsed once.
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if address.is_global or any(
        address.version == net.version and address in net for net in _DOCUMENTATION_NETS
    ):
        return str(address)
    return None


def entity_keys(finding: DetectionFinding) -> list[tuple[EntityKind, str]]:
    """The normalised (kind, value) pairs an alert can be correlated on, in a stable order.

    Hosts are lower-case short names, users lower-case without a ``DOMAIN\\`` prefix (and
    built-in accounts are left out), hashes lower-case SHA-256, IPs public addresses only.
    """
    keys: dict[tuple[EntityKind, str], None] = {}
    for hostname in finding.observed(ObservableType.HOSTNAME):
        if (host := _host_key(hostname)) is not None:
            keys[(EntityKind.HOST, host)] = None
    for login in finding.observed(ObservableType.USER_NAME):
        if (user := _user_key(login)) is not None:
            keys[(EntityKind.USER, user)] = None
    for digest in finding.observed(ObservableType.HASH):
        if _SHA256.match(digest.lower()):
            keys[(EntityKind.HASH, digest.lower())] = None
    for ip in finding.observed(ObservableType.IP_ADDRESS):
        if (address := _public_ip(ip)) is not None:
            keys[(EntityKind.IP, address)] = None
    return list(keys)
