"""The layout holds: each package of ``flows/`` has a pinned public surface, code outside
a package imports only that surface, imports run one way with no circle, and the spine at
the top of ``flows/`` stays small.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ("flows", "stanch", "bench")

SURFACES: dict[str, list[str]] = {
    "flows.approval": [
        "AUTOMATION_REQUESTER",
        "EXPIRY_CHANNEL",
        "ApprovalContext",
        "ApprovalDecision",
        "ApprovalGate",
        "ApprovalOutcome",
        "ApprovalRequest",
        "ApprovalService",
        "CaseClickService",
        "DecisionSubmitter",
        "Handled",
        "PrefectPauseGate",
        "SlackPauseGate",
        "approval_context",
        "approval_id_for",
        "approval_view",
        "cli_refusal",
        "default_gate",
        "interaction_router",
        "new_approval_request",
        "pause_description",
        "pending_row",
        "post_and_bind",
        "run_sweeper",
        "self_approval",
        "sign_decision",
        "slack_approval_service",
        "slack_case_service",
        "submit_decision",
        "verify_decision",
        "wait_until_paused",
    ],
    "flows.detect": [
        "HANDLE_INCIDENT_DEPLOYMENT",
        "SOURCE_FORMATS",
        "TENANT_PATTERN",
        "BodyRejected",
        "EntityKind",
        "IngestResult",
        "Intake",
        "ItemResult",
        "Rejected",
        "StartIncident",
        "TriagePolicy",
        "UnknownSource",
        "check_payload",
        "entity_keys",
        "finding_from_event",
        "fleet_prevalence",
        "fingerprint",
        "incident_from_event",
        "intel_points",
        "joined_alerts",
        "merged_into",
        "load_alert_file",
        "normalise",
        "parse_finding",
        "poll_alerts",
        "split_batch",
    ],
    "flows.intel": [
        "Finding",
        "MAX_INDICATORS",
        "indicators_of",
        "intel_lines",
        "look_up",
        "with_intel",
    ],
    "flows.playbook": [
        "forget_loaded",
        "ACTIONS",
        "DEFAULT_SINCE_DAYS",
        "CacaoError",
        "CacaoImport",
        "CacaoIssue",
        "CacaoRule",
        "ErrorCode",
        "MutationRefused",
        "PlaybookCode",
        "PythonPlaybook",
        "StageContext",
        "define_playbook",
        "LoadedPlaybook",
        "Lookup",
        "MappingRow",
        "PlannedAction",
        "Playbook",
        "PlaybookError",
        "PlaybookIssue",
        "PlaybookLibrary",
        "PlaybookPlan",
        "PlaybookRunError",
        "Route",
        "StepNote",
        "adapter_lookup",
        "check_document",
        "decide",
        "export_document",
        "export_text",
        "hunt_call",
        "import_document",
        "load_library",
        "load_playbook",
        "load_playbooks",
        "parse_playbook",
        "plan_playbook",
        "playbook_files",
        "route",
    ],
    "flows.policy": [
        "CONTAINMENT_ACTIONS",
        "KNOWN_ACTIONS",
        "ActionCounter",
        "ActionRule",
        "ApprovalDefaults",
        "ApprovalTerms",
        "Approvers",
        "AutoCloseRule",
        "Budget",
        "Condition",
        "Policy",
        "PolicyDecision",
        "PolicyError",
        "PolicyErrorCode",
        "PolicyIssue",
        "Protected",
        "RoeDecision",
        "RulesFile",
        "RulesOfEngagement",
        "Sla",
        "SlaTargets",
        "TimeoutOutcome",
        "approval_terms",
        "count_recent_actions",
        "fail_safe_policy",
        "format_duration",
        "load_policy",
        "parse_duration",
        "parse_policy",
        "policy_for_tenant",
        "policy_or_fail_safe",
    ],
    "flows.record": [
        "forget_report_templates",
        "START_LEASE",
        "claim_pending",
        "enqueue_starts",
        "mark_failed",
        "mark_started",
        "pending_starts",
        "AUTO_CLOSE_ACTOR",
        "ActionRow",
        "AlertRow",
        "ApprovalAttemptRow",
        "ApprovalRow",
        "ApprovalVoteRow",
        "BUILT_IN",
        "Base",
        "CLOCKS",
        "CORRELATING_STATUSES",
        "CORRELATION_ACTOR",
        "matching_incidents",
        "tenant_transaction",
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
        "BudgetClaimRow",
        "CursorRow",
        "DeadLetterRow",
        "EntryKind",
        "FLOW_ACTOR",
        "GENESIS_HASH",
        "HASHED_FIELDS",
        "InEffect",
        "IncidentClocks",
        "IncidentEntityRow",
        "IncidentIntelRow",
        "IncidentRow",
        "IncidentSummaryRow",
        "IncidentStartRow",
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
        "NOTE_MAX_CHARS",
        "PLAYBOOK_ID_MAX",
        "SLA_CLOCKS",
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
        "clocks_of",
        "events",
        "executive_summary",
        "exported_entry_hash",
        "in_effect_line",
        "incident_clocks",
        "is_human",
        "ledger_key",
        "md_escape",
        "move_incident_contents",
        "open_store",
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
        "utc_iso",
    ],
    "flows.respond": [
        "BLOCK_TTL_SECONDS",
        "EXPIRY_AUTHORITY",
        "HUNT_SINCE_DAYS",
        "ROLLBACK_AUTHORITY",
        "STILL_IN_EFFECT",
        "TTL_ACTIONS",
        "ContainmentRolledBack",
        "Expiry",
        "Responder",
        "assess",
        "compensate",
        "containment_plans",
        "expire_due",
        "hunt_incident",
        "inverse_plans",
        "remediation_plans",
        "summarise_hunt",
        "undo_incident",
    ],
}
"""Each package's public surface. A change here is a change of what other code may use."""

SPINE_LIMIT = 10
"""Modules at the top of ``flows/`` (``__init__.py`` included): the spine, not a heap."""


def _modules() -> Iterator[tuple[str, Path]]:
    for top in CODE:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "versions" in parts:
                continue  # Alembic revisions import only alembic and sqlalchemy
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def _imports(path: Path, *, top_level_only: bool) -> Iterator[tuple[int, str]]:
    """(line, module) of every ``flows``/``stanch`` import in ``path``.

    With ``top_level_only``, imports inside functions and ``if TYPE_CHECKING:`` are left
    out: they run later, or never, so they cannot make an import circle.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST] = list(tree.body) if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # ``from flows.record import events`` imports the module flows.record.events.
                submodule = f"{node.module}.{alias.name}"
                is_module = (ROOT / submodule.replace(".", "/")).with_suffix(".py").is_file()
                yield node.lineno, submodule if is_module else node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)


def _package_of(module: str) -> str | None:
    return next((p for p in SURFACES if module == p or module.startswith(p + ".")), None)


@pytest.mark.parametrize("package", sorted(SURFACES))
def test_package_surface_is_pinned(package: str) -> None:
    """Given a package of ``flows/``,
    When it is imported,
    Then its ``__all__`` is exactly the pinned surface, every name resolves, and its
    docstring says what the package is for."""
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(SURFACES[package])
    for name in module.__all__:
        assert getattr(module, name, None) is not None, f"{package}.{name} does not resolve"
    assert module.__doc__ and len(module.__doc__.split()) > 20


def test_callers_outside_a_package_use_only_its_surface() -> None:
    """Given every module of flows/, stanch/ and bench/,
    When one imports from a package of flows/ it does not belong to,
    Then it imports from the package itself, never from one of its modules."""
    reaching_in: list[str] = []
    for name, path in _modules():
        own = _package_of(name)
        for line, imported in _imports(path, top_level_only=False):
            target = _package_of(imported)
            if target is None or target == own or imported == target:
                continue
            parent, _, name = imported.rpartition(".")
            if parent == target and name in SURFACES[target]:
                continue  # a name of the surface that is also a module (flows.record.events)
            if imported.startswith(f"{target}.migrations"):
                continue  # Alembic's environment is loaded by file path, not imported
            reaching_in.append(f"{path.relative_to(ROOT)}:{line}: {imported}")
    assert reaching_in == []


def test_no_import_circle() -> None:
    """Given the module-level imports between stanch's own modules,
    When they are followed as a graph,
    Then there is no circle (a package's ``__init__`` counts as importing its modules)."""
    modules = dict(_modules())
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {
            imported for _, imported in _imports(path, top_level_only=True) if imported in modules
        }
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_layers_run_one_way() -> None:
    """Given integrations ← flows ← stanch,
    When a lower layer's modules are read,
    Then none imports a higher one (integrations imports no flows or stanch; flows no
    stanch)."""
    upward: list[str] = []
    for layer, forbidden in (("integrations", ("flows", "stanch")), ("flows", ("stanch",))):
        for path in sorted((ROOT / layer).rglob("*.py")):
            for line, imported in _imports(path, top_level_only=False):
                if imported.split(".")[0] in forbidden:
                    upward.append(f"{path.relative_to(ROOT)}:{line}: {imported}")
    assert upward == []


def test_the_spine_stays_small() -> None:
    """Given the top level of flows/,
    When its modules are counted,
    Then there are at most ten: everything else lives in a package by concern."""
    spine = sorted(p.name for p in (ROOT / "flows").glob("*.py"))
    assert len(spine) <= SPINE_LIMIT, spine
