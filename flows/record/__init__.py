"""Record: what happened, kept so that it can be trusted.

The store (:func:`open_store`, tables in :mod:`~flows.record.tables`, migrations in
:mod:`~flows.record.migrations`) on SQLite or PostgreSQL; the hash-chained
:class:`Ledger` of every action and decision; the clocks and metrics (:func:`clocks_of`);
the incident report (:func:`publish_report`) and its Slack summary.
"""

from __future__ import annotations

from flows.record.entries import (
    GENESIS_HASH,
    HASHED_FIELDS,
    EntryKind,
    InEffect,
    InverseAction,
    LedgerEntry,
    LedgerHead,
    Tamper,
    VerifyReport,
    chain_hash,
    exported_entry_hash,
    utc_iso,
)
from flows.record.ledger import Ledger, ledger_key
from flows.record.metrics import (
    BUILT_IN,
    CLOCKS,
    IncidentClocks,
    clocks_of,
    incident_clocks,
    period_report,
    summarise,
)
from flows.record.migrations import SchemaError
from flows.record.report import md_escape, publish_report, render_html, render_markdown
from flows.record.slack_summary import post_incident_summary, summary_view
from flows.record.store import Store, open_store
from flows.record.tables import (
    PLAYBOOK_ID_MAX,
    ActionRow,
    AlertRow,
    ApprovalAttemptRow,
    ApprovalRow,
    ApprovalVoteRow,
    Base,
    BudgetClaimRow,
    CursorRow,
    DeadLetterRow,
    IncidentEntityRow,
    IncidentRow,
    IncidentSummaryRow,
    IncidentTriageRow,
    LedgerEntryRow,
    SlackApprovalRow,
    StageEventRow,
)

__all__ = [
    "BUILT_IN",
    "CLOCKS",
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "PLAYBOOK_ID_MAX",
    "ActionRow",
    "AlertRow",
    "ApprovalAttemptRow",
    "ApprovalRow",
    "ApprovalVoteRow",
    "Base",
    "BudgetClaimRow",
    "CursorRow",
    "DeadLetterRow",
    "EntryKind",
    "InEffect",
    "IncidentClocks",
    "IncidentEntityRow",
    "IncidentRow",
    "IncidentSummaryRow",
    "IncidentTriageRow",
    "InverseAction",
    "Ledger",
    "LedgerEntry",
    "LedgerEntryRow",
    "LedgerHead",
    "SchemaError",
    "SlackApprovalRow",
    "StageEventRow",
    "Store",
    "Tamper",
    "VerifyReport",
    "chain_hash",
    "clocks_of",
    "exported_entry_hash",
    "incident_clocks",
    "ledger_key",
    "md_escape",
    "open_store",
    "period_report",
    "post_incident_summary",
    "publish_report",
    "render_html",
    "render_markdown",
    "summarise",
    "summary_view",
    "utc_iso",
]
