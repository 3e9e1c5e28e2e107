"""Policy validation errors: stable codes, and issues naming file, line and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from flows.errors import StanchError


class PolicyErrorCode(StrEnum):
    """Stable codes of policy validation errors (documented in ``policies/README.md``)."""

    NO_POLICY = "no-policy"
    BAD_TENANT = "bad-tenant"
    YAML_SYNTAX = "yaml-syntax"
    NOT_A_MAPPING = "not-a-mapping"
    DUPLICATE_KEY = "duplicate-key"
    UNKNOWN_FIELD = "unknown-field"
    MISSING_FIELD = "missing-field"
    INVALID_VALUE = "invalid-value"
    BAD_COUNT = "bad-count"
    BAD_CIDR = "bad-cidr"
    BAD_DURATION = "bad-duration"
    BAD_SEVERITY = "bad-severity"
    BAD_SLACK_ID = "bad-slack-id"
    UNKNOWN_CAPABILITY = "unknown-capability"
    UNKNOWN_ACTION = "unknown-action"
    UNKNOWN_GROUP = "unknown-group"
    EMPTY_CONDITION = "empty-condition"
    NO_APPROVERS = "no-approvers"
    NO_CLI_USERS = "no-cli-users"
    UNREACHABLE_APPROVALS = "unreachable-approvals"
    UNSAFE_TIMEOUT = "unsafe-timeout"
    TENANT_MISMATCH = "tenant-mismatch"


_CODES = frozenset(c.value for c in PolicyErrorCode)


# Errors ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyIssue:
    """One thing wrong with a policy file.

    Attributes:
        file: the file as it was named to the loader (``<inline>`` for text).
        line: 1-based line of the offending key or item; 0 when the file itself is the issue.
        field: dotted path of the field (``actions.edr.contain_host.budget.max``), or ``""``.
        code: a :class:`PolicyErrorCode` value.
        reason: what is wrong, in words a SOC lead can act on.
    """

    file: str
    line: int
    field: str
    code: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f"{self.field}: {self.reason}" if self.field else self.reason
        return f"{where}: {self.code}: {what}"


class PolicyError(StanchError):
    """A policy could not be loaded; ``issues`` lists every problem found, first one first.

    Attributes:
        issues: every problem, in file order.
        code: the first issue's code.
        file: the first issue's file.
        line: the first issue's line.
        field: the first issue's field.
        reason: the first issue's reason.
    """

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        if not issues:
            raise ValueError("PolicyError needs at least one issue")
        self.issues = tuple(issues)
        first = self.issues[0]
        self.code = first.code
        self.file = first.file
        self.line = first.line
        self.field = first.field
        self.reason = first.reason
        super().__init__("\n".join(str(i) for i in self.issues))
