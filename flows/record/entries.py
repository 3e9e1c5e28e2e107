"""Ledger entries: their fields, canonical form and chain hash; heads, reports, inverses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
)

from flows.models import ActionPlan, Stage
from flows.record.tables import LedgerEntryRow
from integrations.capabilities import Capability

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry."""


class EntryKind(StrEnum):
    """What a ledger entry records."""

    ACTION = "action"
    DECISION = "decision"
    CASE = "case"


class Tamper(StrEnum):
    """How a stored chain was found broken."""

    EDITED = "edited"
    DELETED = "deleted"
    REORDERED = "reordered"
    FORGED = "forged"


_TABLE = LedgerEntryRow.__table__
_COLUMNS: tuple[str, ...] = tuple(c.name for c in _TABLE.columns)
_JSON_COLUMNS = frozenset(c.name for c in _TABLE.columns if isinstance(c.type, JSON))

HASHED_FIELDS: tuple[str, ...] = tuple(
    c for c in _COLUMNS if c not in ("prev_hash", "entry_hash", "entry_mac")
)
"""The fields whose canonical JSON an entry's hash covers (all but the hashes and the MAC)."""


# Canonical form ---------------------------------------------------------------------------
def utc_iso(at: datetime) -> str:
    """``2026-11-21T10:15:00.123456Z``: UTC, microseconds always, ``Z`` suffix.

    A naive datetime is taken as UTC: SQLite hands back what stanch wrote (UTC) without
    its offset, PostgreSQL hands it back aware, and both must print the same.
    """
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8 as-is: the bytes that get hashed."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``prev_hash`` (ASCII hex) followed by the canonical JSON of ``fields``.

    Args:
        prev_hash: the previous entry's ``entry_hash`` (:data:`GENESIS_HASH` for the first).
        fields: the entry's :data:`HASHED_FIELDS`, JSON-ready (``recorded_at`` as
            :func:`utc_iso` text); other keys are ignored.
    """
    content = {name: fields.get(name) for name in HASHED_FIELDS}
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(content)).hexdigest()


def exported_entry_hash(entry: Mapping[str, Any]) -> str:
    """Recompute the hash of one entry from :meth:`Ledger.export` output.

    Lets a reader of an exported record check each entry without the database: the
    result must equal ``entry["entry_hash"]``.
    """
    return chain_hash(str(entry["prev_hash"]), entry)


def _record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row (driver values, JSON possibly still text) as a JSON-ready dict.

    Raises:
        ValueError: a JSON column or ``recorded_at`` does not parse (the row was edited).
    """
    record: dict[str, Any] = {}
    for name in _COLUMNS:
        value = raw[name]
        if name in _JSON_COLUMNS and isinstance(value, str | bytes):
            value = json.loads(value)
        elif name == "recorded_at":
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            if not isinstance(value, datetime):
                raise ValueError(f"recorded_at is {type(value).__name__}, not a datetime")
            value = utc_iso(value)
        record[name] = value
    return record


# Public values ----------------------------------------------------------------------------
class LedgerEntry(BaseModel):
    """One ledger entry.

    Attributes:
        seq: position in the chain, from 1, unique and gap-free per store.
        kind: ``action`` (a vendor call or its refusal), ``decision`` (an approval) or
            ``case`` (a change to the incident's case: status, assignee, note, link).
        capability, verb, target, target_label, parameters: the action's plan (``None``
            and ``{}`` for decisions).
        plan_sha256: the hash of the plan that was executed (actions).
        plan_sha256s: the plans a decision answered (decisions).
        approval_id: the approval request a decision answers, when known.
        approvers: who authorised the action, who decided, or who changed the case.
        verdict: policy's verdict for an action (``unattended``, ``approval`` ...).
        vendor, vendor_request_id: which adapter acted and the vendor's id for the call.
        status: an :class:`ActionStatus` value, the decision's status, or the case
            status after the change.
        reason: the approver's words (decisions); the note, summary or reason (cases).
        error: why an action failed or was refused.
        idempotency_key: ``incident:capability.verb:target`` for actions; the approval
            for decisions.
        inverse_action: ``<capability>.<verb>`` that undoes the action, ``None`` if
            irreversible.
        recorded_at: when the ledger wrote the entry, UTC.
        prev_hash: the previous entry's ``entry_hash``.
        entry_hash: :func:`chain_hash` of ``prev_hash`` and the other fields.
    """

    model_config = ConfigDict(frozen=True)

    seq: int
    kind: EntryKind
    incident_id: str
    tenant: str
    capability: str | None
    verb: str | None
    target: str | None
    target_label: str | None
    parameters: dict[str, Any] = Field(default_factory=dict)
    plan_sha256: str | None
    plan_sha256s: list[str] = Field(default_factory=list)
    approval_id: str | None
    approvers: list[str] = Field(default_factory=list)
    verdict: str | None
    vendor: str | None
    vendor_request_id: str | None
    status: str
    reason: str | None
    error: str | None
    idempotency_key: str | None
    inverse_action: str | None
    recorded_at: datetime
    prev_hash: str
    entry_hash: str

    @property
    def action(self) -> str | None:
        """``edr.contain_host`` for actions, ``None`` for decisions."""
        if self.capability is None or self.verb is None:
            return None
        return f"{self.capability}.{self.verb}"

    @property
    def label(self) -> str:
        """How a person recognises the entry: ``INC-…, edr.contain_host WS-0042``."""
        return _label(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready, in the form that is hashed (``recorded_at`` in ``Z``)."""
        record = self.model_dump(mode="python")
        record["kind"] = self.kind.value
        record["recorded_at"] = utc_iso(self.recorded_at)
        return record

    def canonical_bytes(self) -> bytes:
        """The canonical JSON of :data:`HASHED_FIELDS` (what follows ``prev_hash``)."""
        record = self.to_json()
        return canonical_json({name: record[name] for name in HASHED_FIELDS})

    def computed_hash(self) -> str:
        """The hash these fields should have; equals ``entry_hash`` unless tampered with."""
        return chain_hash(self.prev_hash, self.to_json())


def _label(record: Mapping[str, Any]) -> str:
    incident = record.get("incident_id")
    if record.get("kind") == EntryKind.DECISION.value:
        return f"{incident}, decision {record.get('approval_id')} {record.get('status')}"
    if record.get("kind") == EntryKind.CASE.value:
        return f"{incident}, case {record.get('verb')} ({record.get('status')})"
    target = record.get("target_label") or record.get("target")
    return f"{incident}, {record.get('capability')}.{record.get('verb')} {target}"


class LedgerHead(BaseModel):
    """The last entry's position and hash: keep it elsewhere to detect a cut-off tail.

    Its text form ``<seq>:<entry_hash>`` is what ``stanch ledger verify --anchor`` takes.
    """

    model_config = ConfigDict(frozen=True)

    seq: int = Field(ge=0)
    entry_hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    def __str__(self) -> str:
        return f"{self.seq}:{self.entry_hash}"

    @classmethod
    def parse(cls, value: str) -> LedgerHead:
        """Read ``<seq>:<entry_hash>``.

        Raises:
            ValueError: not in that form.
        """
        seq, sep, entry_hash = value.partition(":")
        if not sep or not seq.isdigit():
            raise ValueError(f"expected <seq>:<sha256>, got {value!r}")
        return cls(seq=int(seq), entry_hash=entry_hash)


class VerifyReport(BaseModel):
    """The result of walking the chain.

    Attributes:
        ok: the chain is intact (and matches the anchor, if one was given).
        entries: how many entries are stored.
        head: the last stored entry (``seq`` 0 and the genesis hash when empty).
        broken_seq: the first entry, by sequence number, that is not as it was written.
        problem: how it broke.
        label: incident and action of the broken entry, when it is still there to read.
        detail: the evidence (``hash mismatch``, ``gap in sequence: entry 6 follows entry 4`` ...).
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    entries: int
    head: LedgerHead
    broken_seq: int | None = None
    problem: Tamper | None = None
    label: str | None = None
    detail: str = ""

    @property
    def message(self) -> str:
        """One line for a person: ``ledger OK: …`` or ``entry 7 (…) was edited: …``."""
        if self.ok:
            return f"ledger OK: {self.entries} entries, head {self.head.entry_hash}"
        named = f"entry {self.broken_seq}"
        if self.label is not None:
            named += f" ({self.label})"
        problem = self.problem.value if self.problem is not None else "broken"
        return f"{named} was {problem}: {self.detail}"


class InverseAction(BaseModel):
    """What undoes an action: the fields of the inverse :class:`ActionPlan`.

    ``parameters`` holds only what the inverse verb takes, with a reason that points back
    at the ledger entry being reversed.
    """

    model_config = ConfigDict(frozen=True)

    capability: str
    verb: str
    target: str
    target_label: str
    parameters: dict[str, str | int | bool | None]


class InEffect(BaseModel):
    """An executed, reversible action whose inverse has not run since, and that inverse."""

    model_config = ConfigDict(frozen=True)

    entry: LedgerEntry
    inverse: InverseAction

    def inverse_plan(self) -> ActionPlan:
        """The plan that undoes this action. Undo, TTL expiry and a containment rollback
        all build it here, so they share one idempotency key and none undoes it twice."""
        return ActionPlan(
            tenant=self.entry.tenant,
            incident_id=self.entry.incident_id,
            capability=Capability(self.inverse.capability),
            verb=self.inverse.verb,
            target=self.inverse.target,
            target_label=self.inverse.target_label,
            parameters=self.inverse.parameters,
            stage=Stage.REMEDIATE,
        )
