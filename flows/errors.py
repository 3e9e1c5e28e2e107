"""Errors raised by the orchestration layer.

The tree::

    StanchError                     anything stanch itself refuses or cannot do
    ├── ConfigurationError          settings name an unknown vendor, or credentials are missing
    ├── AlertRejected               an alert payload failed validation (names the field)
    ├── PlanMismatch                the plan about to run is not the plan that was approved
    ├── ApprovalError               an approval decision is unknown, stale, or not authentic
    └── CaseError                   a case change was refused; nothing was changed
        ├── UnknownIncident         no such incident (for this tenant)
        ├── CaseInputError          a field of the change is missing or invalid (names it)
        └── CaseConflict            the case's state forbids the change (closing a closed case)
"""

from __future__ import annotations


class StanchError(Exception):
    """Base of stanch's own errors."""


class ConfigurationError(StanchError):
    """The configuration cannot work; the message names the setting."""


class AlertRejected(StanchError):
    """An alert payload did not validate.

    Attributes:
        field: dotted path of the first failing field.
        reason: why it failed.
    """

    def __init__(self, field: str, reason: str, *, source: str = "alert") -> None:
        super().__init__(f"{source}: {field}: {reason}")
        self.field = field
        self.reason = reason
        self.source = source


class PlanMismatch(StanchError):
    """The executor was handed a plan whose hash differs from the approved one."""


class ApprovalError(StanchError):
    """An approval decision could not be applied (unknown, already decided, forged)."""


class CaseError(StanchError):
    """A change to an incident's case was refused; the store and the ledger are unchanged."""


class UnknownIncident(CaseError):
    """No incident with that id, or not one of the caller's tenant's."""

    def __init__(self, incident_id: str) -> None:
        super().__init__(f"no incident {incident_id}")
        self.incident_id = incident_id


class CaseInputError(CaseError):
    """A field of the change is missing or invalid.

    Attributes:
        field: the field, as the caller named it (``disposition``, ``text`` ...).
        reason: what is wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CaseConflict(CaseError):
    """The case's current state does not allow the change (it is closed, merged ...)."""
