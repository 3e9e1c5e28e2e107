"""Advanced-hunting KQL for an indicator, built from typed, validated parts only.

The query text never contains caller text except an :class:`Indicator` value, which is
already in its kind's strict form (hex digits, a dotted quad, a strict domain); the
literal helper refuses quotes and backslashes anyway, so no value can end a string.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from integrations.hunting import Indicator, IndicatorKind

# Which table and column hold each kind of indicator. File hashes are in the file
# events; addresses and names a device contacted are in the network events.
COLUMNS: dict[IndicatorKind, tuple[str, str, str]] = {
    IndicatorKind.SHA256: ("DeviceFileEvents", "SHA256", "=="),
    IndicatorKind.MD5: ("DeviceFileEvents", "MD5", "=="),
    IndicatorKind.IPV4: ("DeviceNetworkEvents", "RemoteIP", "=="),
    # RemoteUrl may carry a scheme or path for web traffic; =~ matches the bare name
    # case-insensitively, which is how MDE records DNS-resolved connections.
    IndicatorKind.DOMAIN: ("DeviceNetworkEvents", "RemoteUrl", "=~"),
}

_SAFE = re.compile(r"^[0-9A-Za-z.\-]+$")


def kql_string(value: str) -> str:
    """``value`` as a KQL string literal; refuses anything but letters, digits, ``.`` and ``-``.

    Raises:
        ValueError: the value holds any other character.
    """
    if not _SAFE.fullmatch(value):
        raise ValueError("refusing to quote a value with characters outside [0-9A-Za-z.-]")
    return f'"{value}"'


def kql_datetime(moment: datetime) -> str:
    """``moment`` as a KQL ``datetime()`` literal, in UTC."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"datetime({utc.strftime('%Y-%m-%dT%H:%M:%SZ')})"


def hunt_query(indicator: Indicator, since: datetime) -> str:
    """The KQL that lists each device that saw ``indicator`` since ``since``, with times."""
    table, column, op = COLUMNS[indicator.kind]
    return (
        f"{table}"
        f" | where Timestamp > {kql_datetime(since)}"
        f" | where {column} {op} {kql_string(indicator.value)}"
        " | summarize FirstSeen = min(Timestamp), LastSeen = max(Timestamp)"
        " by DeviceId, DeviceName"
    )
