"""The alert as an OCSF 1.8.0 Detection Finding (class_uid 2004), and the entities it names.

Only the attributes stanch reads are typed; the many other OCSF attributes are kept as
given (``extra="allow"``) so nothing a vendor sent is lost. The schema is OCSF's
Detection Finding, https://schema.ocsf.io/1.8.0/classes/detection_finding.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

OCSF_VERSION = "1.8.0"
DETECTION_FINDING_CLASS_UID = 2004
FINDINGS_CATEGORY_UID = 2


STATUS_CAPTIONS: dict[int, str] = {
    0: "Unknown",
    1: "New",
    2: "In Progress",
    3: "Suppressed",
    4: "Resolved",
    5: "Archived",
    6: "Deleted",
    99: "Other",
}
"""OCSF ``status_id`` captions, for the ``status`` sibling attribute."""


def iso_to_millis(value: object, *, vendor: str, field: str) -> int:
    """An ISO 8601 date-time as OCSF ``timestamp_t`` (milliseconds since the epoch).

    A value without an offset is taken as UTC, which is what the vendors' APIs send.

    Raises:
        NormalizationError: naming ``field`` when the value is missing or not ISO 8601.
    """
    if not isinstance(value, str) or not value:
        reason = "missing" if value in (None, "") else f"expected an ISO 8601 string, got {value!r}"
        raise NormalizationError(vendor, field, reason)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise NormalizationError(vendor, field, f"not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class SeverityId(IntEnum):
    """OCSF ``severity_id``."""

    UNKNOWN = 0
    INFORMATIONAL = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5
    FATAL = 6
    OTHER = 99


class ObservableType(IntEnum):
    """The OCSF observable ``type_id`` values stanch acts on."""

    HOSTNAME = 1
    IP_ADDRESS = 2
    USER_NAME = 4
    EMAIL_ADDRESS = 5
    URL_STRING = 6
    FILE_NAME = 7
    HASH = 8
    COMMAND_LINE = 13
    COUNTRY = 14


class _Open(BaseModel):
    """An OCSF object: typed where stanch reads it, every other attribute kept."""

    model_config = ConfigDict(extra="allow", frozen=True)


class Product(_Open):
    name: str | None = None
    vendor_name: str | None = None
    uid: str | None = None
    version: str | None = None

    @model_validator(mode="after")
    def _named(self) -> Product:
        if not (self.name or self.uid):
            raise ValueError("metadata.product needs at least one of name, uid")
        return self


class Metadata(_Open):
    version: str
    product: Product
    profiles: list[str] = Field(default_factory=list)
    uid: str | None = None
    tenant_uid: str | None = None
    log_name: str | None = None


class Technique(_Open):
    uid: str
    name: str | None = None


class Attack(_Open):
    tactic: Technique | None = None
    technique: Technique | None = None
    sub_technique: Technique | None = None
    version: str | None = None


class FindingInfo(_Open):
    uid: str = Field(min_length=1)
    title: str | None = None
    desc: str | None = None
    types: list[str] = Field(default_factory=list)
    attacks: list[Attack] = Field(default_factory=list)
    src_url: str | None = None


class OperatingSystem(_Open):
    name: str
    type_id: int


class Device(_Open):
    type_id: int = 0
    uid: str | None = None
    hostname: str | None = None
    name: str | None = None
    ip: str | None = None
    os: OperatingSystem | None = None


class Fingerprint(_Open):
    algorithm_id: int
    value: str
    algorithm: str | None = None


class File(_Open):
    name: str
    type_id: int = 0
    path: str | None = None
    hashes: list[Fingerprint] = Field(default_factory=list)


class User(_Open):
    name: str | None = None
    uid: str | None = None
    email_addr: str | None = None


class Process(_Open):
    pid: int | None = None
    name: str | None = None
    cmd_line: str | None = None
    file: File | None = None
    user: User | None = None


class NetworkEndpoint(_Open):
    ip: str | None = None
    port: int | None = None
    hostname: str | None = None
    domain: str | None = None
    location: dict[str, Any] | None = None


class Evidence(_Open):
    process: Process | None = None
    file: File | None = None
    user: User | None = None
    device: Device | None = None
    src_endpoint: NetworkEndpoint | None = None
    dst_endpoint: NetworkEndpoint | None = None


class Observable(_Open):
    type_id: int
    name: str | None = None
    value: str | None = None
    type: str | None = None


class Actor(_Open):
    user: User | None = None


class DetectionFinding(_Open):
    """One alert, normalised to OCSF Detection Finding.

    Validation enforces the class's required attributes and its fixed identity
    (class 2004 in category 2, ``type_uid == class_uid * 100 + activity_id``).
    """

    class_uid: Literal[2004]
    category_uid: Literal[2]
    activity_id: int = Field(ge=0)
    type_uid: int
    severity_id: SeverityId
    # At most the end of year 9999: datetime (occurred_at) and every store column take it.
    time: int = Field(description="milliseconds since the epoch", ge=0, le=253_402_300_799_999)
    metadata: Metadata
    finding_info: FindingInfo
    message: str | None = None
    severity: str | None = None
    status_id: int | None = None
    device: Device | None = None
    actor: Actor | None = None
    evidences: list[Evidence] = Field(default_factory=list)
    observables: list[Observable] = Field(default_factory=list)
    unmapped: dict[str, Any] | None = None
    raw_data: str | None = None

    @model_validator(mode="after")
    def _type_uid(self) -> DetectionFinding:
        expected = self.class_uid * 100 + self.activity_id
        if self.type_uid != expected:
            raise ValueError(
                f"type_uid must be class_uid*100 + activity_id = {expected}, got {self.type_uid}"
            )
        return self

    @property
    def uid(self) -> str:
        """The vendor's id for this finding."""
        return self.finding_info.uid

    @property
    def title(self) -> str:
        """A one-line description: the finding title, else the message, else the uid."""
        return self.finding_info.title or self.message or self.finding_info.uid

    @property
    def vendor(self) -> str:
        """The product vendor's name as the source gave it."""
        product = self.metadata.product
        return product.vendor_name or product.name or product.uid or "unknown"

    @property
    def occurred_at(self) -> datetime:
        """``time`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time / 1000, tz=UTC)

    def observed(self, kind: ObservableType) -> list[str]:
        """Distinct values of one observable type, from ``observables`` and typed objects."""
        values: list[str] = [
            o.value for o in self.observables if o.type_id == kind and o.value is not None
        ]
        values.extend(self._from_objects(kind))
        seen: dict[str, None] = {}
        for value in values:
            seen.setdefault(value, None)
        return list(seen)

    def _from_objects(self, kind: ObservableType) -> list[str]:
        devices = [self.device] + [e.device for e in self.evidences]
        users = [self.actor.user if self.actor else None]
        files: list[File | None] = []
        endpoints: list[NetworkEndpoint | None] = []
        for e in self.evidences:
            users.append(e.user)
            files.append(e.file)
            endpoints.extend([e.src_endpoint, e.dst_endpoint])
            if e.process is not None:
                users.append(e.process.user)
                files.append(e.process.file)
        if kind is ObservableType.HOSTNAME:
            return [d.hostname for d in devices if d is not None and d.hostname]
        if kind is ObservableType.USER_NAME:
            return [u.name for u in users if u is not None and u.name]
        if kind is ObservableType.HASH:
            return [
                h.value
                for f in files
                if f is not None
                for h in f.hashes
                if h.algorithm_id == 3  # SHA-256: the only hash every EDR can block
            ]
        if kind is ObservableType.IP_ADDRESS:
            return [n.ip for n in endpoints if n is not None and n.ip]
        return []

    def external_ips(self) -> list[str]:
        """Public IP addresses the finding names (candidates for a firewall block)."""
        public: list[str] = []
        for value in self.observed(ObservableType.IP_ADDRESS):
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                continue
            if address.is_global or _is_documentation(address):
                public.append(value)
        return public


def _is_documentation(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # RFC 5737 / 3849 ranges stand in for internet addresses in samples, demos and tests.
    docs = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
    return any(address in ipaddress.ip_network(net) for net in docs)


class NormalizationError(ValueError):
    """A vendor payload could not be turned into a Detection Finding.

    Attributes:
        vendor: the source vendor.
        field: the dotted path of the vendor field that failed (``device.hostname``).
        reason: why it failed.
    """

    def __init__(self, vendor: str, field: str, reason: str) -> None:
        super().__init__(f"{vendor}: {field}: {reason}")
        self.vendor = vendor
        self.field = field
        self.reason = reason


def finding_from(vendor: str, event: dict[str, Any]) -> DetectionFinding:
    """Validate a normaliser's OCSF event; a failure names the OCSF field that failed.

    Raises:
        NormalizationError: with the dotted path of the first failing attribute.
    """
    try:
        return DetectionFinding.model_validate(event)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "$"
        raise NormalizationError(vendor, where, first["msg"]) from exc


def required_str(payload: dict[str, Any], field: str, *, vendor: str) -> str:
    """A non-empty string field of a vendor payload.

    Raises:
        NormalizationError: the field is missing, empty or not a string.
    """
    value = payload.get(field)
    if value is None:
        raise NormalizationError(vendor, field, "missing")
    if not isinstance(value, str) or not value.strip():
        raise NormalizationError(vendor, field, f"expected a non-empty string, got {value!r}")
    return value
