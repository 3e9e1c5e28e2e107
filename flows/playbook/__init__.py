"""YAML playbooks: schema, loader, sandboxed templates, the planner, routing and CACAO.

The lifecycle calls :func:`route` to pick a playbook for an incident and
:func:`plan_playbook` to turn it into :class:`~flows.models.ActionPlan` objects per stage;
:func:`decide` applies the tenant's policy, tightened by ``approval: required`` steps.
:func:`export_document` and :func:`import_document` carry playbooks to and from OASIS
CACAO 2.0 documents.
"""

from __future__ import annotations

from flows.playbook.cacao import (
    CacaoError,
    CacaoImport,
    CacaoIssue,
    CacaoRule,
    MappingRow,
    check_document,
    export_document,
    export_text,
    import_document,
)
from flows.playbook.engine import (
    Lookup,
    PlannedAction,
    PlaybookPlan,
    PlaybookRunError,
    StepNote,
    adapter_lookup,
    decide,
    plan_playbook,
)
from flows.playbook.loader import (
    LoadedPlaybook,
    PlaybookError,
    PlaybookIssue,
    load_playbook,
    load_playbooks,
    parse_playbook,
    playbook_files,
)
from flows.playbook.routing import Route, route
from flows.playbook.schema import ACTIONS, ErrorCode, Playbook

__all__ = [
    "ACTIONS",
    "CacaoError",
    "CacaoImport",
    "CacaoIssue",
    "CacaoRule",
    "ErrorCode",
    "LoadedPlaybook",
    "Lookup",
    "MappingRow",
    "PlannedAction",
    "Playbook",
    "PlaybookError",
    "PlaybookIssue",
    "PlaybookPlan",
    "PlaybookRunError",
    "Route",
    "StepNote",
    "adapter_lookup",
    "check_document",
    "decide",
    "export_document",
    "export_text",
    "import_document",
    "load_playbook",
    "load_playbooks",
    "parse_playbook",
    "plan_playbook",
    "playbook_files",
    "route",
]
