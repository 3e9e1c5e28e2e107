"""The case rules: which status changes are allowed, what a closure needs, input limits.

Pure functions over values; :mod:`flows.record.case_store` applies them to the store
under the ledger's lock. Every refusal is a :class:`flows.errors.CaseError` naming the
field or the state that forbids the change.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

from flows.errors import CaseConflict, CaseInputError
from flows.models import CaseStatus, Disposition

FLOW_ORDER: tuple[CaseStatus, ...] = (
    CaseStatus.NEW,
    CaseStatus.INVESTIGATING,
    CaseStatus.CONTAINED,
    CaseStatus.REMEDIATED,
    CaseStatus.AWAITING_CLOSURE,
)
"""The statuses the flow moves a case through, in order; it never moves one backwards."""

CORRELATING_STATUSES: frozenset[str] = frozenset(s for s in CaseStatus if s != CaseStatus.CLOSED)
"""Statuses in which an incident still takes in new alerts: every one but closed (a
contained incident is still the same attack; a closed one is linked to, not reopened)."""

FLOW_ACTOR = "stanch:flow"
"""Who the record names for the flow's own status changes."""
AUTO_CLOSE_ACTOR = "policy:auto-close"
"""Who the record names for a closure the tenant's policy allowed."""
_MACHINE_PREFIXES = ("stanch", "policy:")

NOTE_MAX_CHARS = 10_000
SUMMARY_MAX_CHARS = 4_000
REASON_MAX_CHARS = 2_000
ASSIGNEE_MAX_CHARS = 200

_ASSIGNEE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]*$")
_INCIDENT_ID = re.compile(r"^INC-\d{8}-\d{4,}$")


class LinkKind(StrEnum):
    """How one incident points at another."""

    DUPLICATE_OF = "duplicate-of"
    RELATED = "related"
    MERGED_INTO = "merged-into"


def is_human(actor: str) -> bool:
    """Whether a change was made by a person (``cli:``, ``slack:``, ``api:``), not stanch."""
    return not actor.startswith(_MACHINE_PREFIXES)


def clean_text(field: str, value: object, limit: int) -> str:
    """``value`` as text fit to record: stripped, non-empty, at most ``limit`` characters.

    Control characters other than newline and tab are refused rather than stored: they
    would reach a terminal or Slack as they are.

    Raises:
        CaseInputError: not a string, empty, too long, or holding control characters.
    """
    if not isinstance(value, str):
        raise CaseInputError(field, "must be text")
    text = value.strip()
    if not text:
        raise CaseInputError(field, "is required and may not be empty")
    if len(text) > limit:
        raise CaseInputError(field, f"is {len(text)} characters long; at most {limit} are kept")
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise CaseInputError(field, "may not contain control characters")
    return text


def clean_assignee(value: object) -> str:
    """An assignee: a user name, ``slack:U…``, an e-mail address; one token, no spaces.

    Raises:
        CaseInputError: empty, too long, or not of that shape.
    """
    text = clean_text("assignee", value, ASSIGNEE_MAX_CHARS)
    if not _ASSIGNEE.fullmatch(text):
        raise CaseInputError(
            "assignee", "must be one word of letters, digits and . _ @ : + - (e.g. slack:U0123)"
        )
    return text


def parse_disposition(value: object) -> Disposition:
    """The disposition named by ``value``.

    Raises:
        CaseInputError: missing or not one of the four dispositions.
    """
    known = ", ".join(d.value for d in Disposition)
    if value is None or value == "":
        raise CaseInputError("disposition", f"is required; one of {known}")
    try:
        return Disposition(str(value))
    except ValueError:
        raise CaseInputError("disposition", f"{str(value)[:40]!r} is not one of {known}") from None


def check_incident_id(field: str, value: object) -> str:
    """An incident id of the form ``INC-<yyyymmdd>-<nnnn>``.

    Raises:
        CaseInputError: not of that form.
    """
    if not isinstance(value, str) or not _INCIDENT_ID.fullmatch(value):
        raise CaseInputError(field, "must be an incident id such as INC-20261121-0001")
    return value


def flow_may_advance(current: str, target: CaseStatus) -> bool:
    """Whether the flow may move a case from ``current`` to ``target``.

    Only forward along :data:`FLOW_ORDER`; a closed or reopened case belongs to the
    analysts, so a re-run of its flow leaves its status alone.
    """
    order = [s.value for s in FLOW_ORDER]
    return current in order and target in FLOW_ORDER and order.index(target) > order.index(current)


def check_close(
    incident_id: str, current: str, disposition: Disposition, duplicate_of: str | None
) -> None:
    """Whether a case may be closed with this disposition.

    Raises:
        CaseConflict: the case is already closed.
        CaseInputError: ``duplicate`` without the incident it duplicates, that incident
            being itself, or a duplicate-of given for another disposition.
    """
    if current == CaseStatus.CLOSED:
        raise CaseConflict(f"{incident_id} is already closed; reopen it first")
    if disposition == Disposition.DUPLICATE:
        if duplicate_of is None:
            raise CaseInputError("duplicate_of", "a duplicate names the incident it duplicates")
        check_incident_id("duplicate_of", duplicate_of)
        if duplicate_of == incident_id:
            raise CaseInputError("duplicate_of", "an incident cannot duplicate itself")
    elif duplicate_of is not None:
        raise CaseInputError("duplicate_of", "only a duplicate names the incident it duplicates")


def check_reopen(incident_id: str, current: str) -> None:
    """Whether a case may be reopened.

    Raises:
        CaseConflict: the case is not closed.
    """
    if current != CaseStatus.CLOSED:
        raise CaseConflict(f"{incident_id} is {current}, not closed: nothing to reopen")


def check_open(incident_id: str, current: str, change: str) -> None:
    """Whether ``change`` (assign, merge) may be made to a case in ``current`` status.

    Raises:
        CaseConflict: the case is closed.
    """
    if current == CaseStatus.CLOSED:
        raise CaseConflict(f"{incident_id} is closed; reopen it before you {change} it")
