"""Errors raised by the orchestration layer.

The tree::

    StanchError                     anything stanch itself refuses or cannot do
    ├── ConfigurationError          settings name an unknown vendor, or credentials are missing
    ├── AlertRejected               an alert payload failed validation (names the field)
    ├── PlanMismatch                the plan about to run is not the plan that was approved
    └── ApprovalError               an approval decision is unknown, stale, or not authentic
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
