"""What a hunt looks for and what it finds: typed, validated indicators and host sightings.

An indicator's value ends up inside a vendor query language (FQL, KQL, S1QL), so it is
checked here, strictly, before any adapter sees it: a hash is hex digits of the right
length, an address is what :mod:`ipaddress` accepts, a domain matches a strict
letters-digits-hyphens grammar. Anything else is refused with the reason.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class IndicatorKind(StrEnum):
    """The kinds of indicator every EDR adapter can hunt."""

    SHA256 = "sha256"
    MD5 = "md5"
    IPV4 = "ipv4"
    DOMAIN = "domain"


_HEX = {IndicatorKind.SHA256: 64, IndicatorKind.MD5: 32}
# RFC 1035 labels (letters, digits, inner hyphens), at least two labels, a letter TLD.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"^(?:{_LABEL}\.)+[a-z]{{2,63}}$")


class IndicatorError(ValueError):
    """An indicator that is not of its kind's strict form."""


class Indicator(BaseModel):
    """One indicator of compromise, in canonical form (hashes and domains in lower case)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: IndicatorKind
    value: str

    @classmethod
    def of(cls, kind: IndicatorKind | str, value: str) -> Indicator:
        """The indicator ``value`` of ``kind``, validated and canonical.

        Raises:
            IndicatorError: ``kind`` is unknown or ``value`` is not of its form.
        """
        try:
            chosen = IndicatorKind(kind)
        except ValueError as exc:
            kinds = ", ".join(k.value for k in IndicatorKind)
            raise IndicatorError(f"indicator kind {kind!r} is not one of {kinds}") from exc
        return cls(kind=chosen, value=_canonical(chosen, value))

    @classmethod
    def parse(cls, text: str) -> Indicator:
        """An indicator from bare text, its kind told by its form.

        Raises:
            IndicatorError: the text is no hash, IPv4 address or domain.
        """
        value = text.strip()
        for kind in (IndicatorKind.SHA256, IndicatorKind.MD5, IndicatorKind.IPV4):
            try:
                return cls.of(kind, value)
            except IndicatorError:
                continue
        try:
            return cls.of(IndicatorKind.DOMAIN, value)
        except IndicatorError:
            raise IndicatorError(
                f"{value[:80]!r} is not a SHA-256, an MD5, an IPv4 address or a domain"
            ) from None

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value}"


def _canonical(kind: IndicatorKind, value: str) -> str:
    text = value.strip()
    if kind in _HEX:
        if not re.fullmatch(rf"[0-9a-fA-F]{{{_HEX[kind]}}}", text):
            raise IndicatorError(f"{kind.value} must be {_HEX[kind]} hexadecimal digits")
        return text.lower()
    if kind is IndicatorKind.IPV4:
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError as exc:
            raise IndicatorError("ipv4 must be a dotted-quad IPv4 address") from exc
    lowered = text.lower().rstrip(".")
    if len(lowered) > 253 or not _DOMAIN.fullmatch(lowered):
        raise IndicatorError("domain must be letters, digits and hyphens in dot-separated labels")
    return lowered


class HostSighting(BaseModel):
    """One host on which an indicator was seen.

    ``first_seen``/``last_seen`` are the vendor's times for the indicator on that host;
    ``None`` when the vendor's API does not say (CrowdStrike's DevicesRanOn).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_id: str
    hostname: str
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class HuntResult(BaseModel):
    """The hosts of one EDR on which one indicator was seen since a moment.

    ``complete`` is ``False`` when the vendor did not finish (an asynchronous query
    past its bounded wait); ``note`` then says why, and ``hosts`` holds what was found.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    indicator: Indicator
    vendor: str
    since: datetime
    hosts: list[HostSighting] = Field(default_factory=list)
    complete: bool = True
    note: str | None = None

    @property
    def host_ids(self) -> list[str]:
        """The ids of the hosts found, in the order found."""
        return [h.host_id for h in self.hosts]
