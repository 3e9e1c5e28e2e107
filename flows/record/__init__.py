"""Record: what happened, kept so that it can be trusted.

The store (:func:`open_store`, tables in :mod:`~flows.record.tables`, migrations in
:mod:`~flows.record.migrations`) on SQLite or PostgreSQL; the hash-chained
:class:`Ledger` of every action, decision and case change; each incident's case
(:class:`CaseBook`: status, assignee, notes, links, merges, closure with a disposition);
the clocks, SLAs and metrics (:func:`clocks_of`); the incident report
(:func:`publish_report`) and its Slack summary; the Prefect events automations hang
on (:mod:`~flows.record.events`).
"""

from __future__ import annotations

from flows.record import events
from flows.record.case_file import CaseFile, case_file, recorded_breaches
from flows.record.case_store import CaseBook
from flows.record.case_sweep import SlaNotice, auto_close_idle, sweep_slas
from flows.record.case_views import (
    CaseAssignment,
    CaseLink,
    CaseListing,
    CaseNote,
    CaseRecord,
    CaseTransition,
    case_touches,
)
from flows.record.cases import (
    AUTO_CLOSE_ACTOR,
    CORRELATING_STATUSES,
    FLOW_ACTOR,
    NOTE_MAX_CHARS,
    LinkKind,
    is_human,
)
from flows.record.correlation import (
    CORRELATION_ACTOR,
    matching_incidents,
    tenant_transaction,
)
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
from flows.record.intel_store import IntelRecords
from flows.record.ledger import Ledger, ledger_key
from flows.record.merging import Moved, move_incident_contents
from flows.record.metrics import (
    BUILT_IN,
    CLOCKS,
    IncidentClocks,
    automation,
    clocks_of,
    incident_clocks,
    period_report,
    summarise,
)
from flows.record.migrations import SchemaError
from flows.record.outbox import (
    START_LEASE,
    claim_pending,
    enqueue_starts,
    mark_failed,
    mark_started,
    pending_starts,
)
from flows.record.report import (
    forget_report_templates,
    md_escape,
    publish_artifacts,
    publish_report,
    render_html,
    render_markdown,
)
from flows.record.report_facts import executive_summary, in_effect_line
from flows.record.sla import SLA_CLOCKS, SlaClock, sla_attainment, sla_clocks
from flows.record.slack_summary import post_incident_summary, redraw_summary, summary_view
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
    CaseAssignmentRow,
    CaseLinkRow,
    CaseNoteRow,
    CaseTransitionRow,
    CursorRow,
    DeadLetterRow,
    IncidentEntityRow,
    IncidentIntelRow,
    IncidentRow,
    IncidentStartRow,
    IncidentSummaryRow,
    IncidentTriageRow,
    IntelCacheRow,
    LedgerCheckpointRow,
    LedgerEntryRow,
    SlackApprovalRow,
    SlaEventRow,
    StageEventRow,
)

__all__ = [
    "AUTO_CLOSE_ACTOR",
    "BUILT_IN",
    "CLOCKS",
    "CORRELATING_STATUSES",
    "CORRELATION_ACTOR",
    "FLOW_ACTOR",
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "NOTE_MAX_CHARS",
    "PLAYBOOK_ID_MAX",
    "SLA_CLOCKS",
    "START_LEASE",
    "ActionRow",
    "AlertRow",
    "ApprovalAttemptRow",
    "ApprovalRow",
    "ApprovalVoteRow",
    "Base",
    "BudgetClaimRow",
    "CaseAssignment",
    "CaseAssignmentRow",
    "CaseBook",
    "CaseFile",
    "CaseLink",
    "CaseLinkRow",
    "CaseListing",
    "CaseNote",
    "CaseNoteRow",
    "CaseRecord",
    "CaseTransition",
    "CaseTransitionRow",
    "CursorRow",
    "DeadLetterRow",
    "EntryKind",
    "InEffect",
    "IncidentClocks",
    "IncidentEntityRow",
    "IncidentIntelRow",
    "IncidentRow",
    "IncidentStartRow",
    "IncidentSummaryRow",
    "IncidentTriageRow",
    "IntelCacheRow",
    "IntelRecords",
    "InverseAction",
    "Ledger",
    "LedgerCheckpointRow",
    "LedgerEntry",
    "LedgerEntryRow",
    "LedgerHead",
    "LinkKind",
    "Moved",
    "SchemaError",
    "SlaClock",
    "SlaEventRow",
    "SlaNotice",
    "SlackApprovalRow",
    "StageEventRow",
    "Store",
    "Tamper",
    "VerifyReport",
    "auto_close_idle",
    "automation",
    "case_file",
    "case_touches",
    "chain_hash",
    "claim_pending",
    "clocks_of",
    "enqueue_starts",
    "events",
    "executive_summary",
    "exported_entry_hash",
    "forget_report_templates",
    "in_effect_line",
    "incident_clocks",
    "is_human",
    "ledger_key",
    "mark_failed",
    "mark_started",
    "matching_incidents",
    "md_escape",
    "move_incident_contents",
    "open_store",
    "pending_starts",
    "period_report",
    "post_incident_summary",
    "publish_artifacts",
    "publish_report",
    "recorded_breaches",
    "redraw_summary",
    "render_html",
    "render_markdown",
    "sla_attainment",
    "sla_clocks",
    "summarise",
    "summary_view",
    "sweep_slas",
    "tenant_transaction",
    "utc_iso",
]
