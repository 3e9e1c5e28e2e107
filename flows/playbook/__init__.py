"""Playbooks, YAML and Python: schema, loaders, sandboxed templates, the planner, routing, CACAO.

The lifecycle calls :func:`load_playbooks` for the library (``<id>.yaml`` and ``<id>.py``),
:func:`route` to pick a playbook for an incident and :func:`plan_playbook` to turn it into
:class:`~flows.models.ActionPlan` objects per stage; :func:`decide` applies the tenant's
policy, tightened by ``approval: required`` steps. A Python playbook declares itself with
:func:`define_playbook` and plans through a read-only :class:`StageContext`.
:func:`export_document` and :func:`import_document` carry YAML playbooks to and from OASIS
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
from flows.playbook.cache import forget_loaded
from flows.playbook.engine import (
    Lookup,
    PlannedAction,
    PlaybookPlan,
    PlaybookRunError,
    StepNote,
    adapter_lookup,
    decide,
)
from flows.playbook.hunting import DEFAULT_SINCE_DAYS, hunt_call
from flows.playbook.library import (
    PlaybookLibrary,
    load_library,
    load_playbook,
    load_playbooks,
    plan_playbook,
    playbook_files,
)
from flows.playbook.loader import LoadedPlaybook, PlaybookError, PlaybookIssue, parse_playbook
from flows.playbook.python import (
    MutationRefused,
    PlaybookCode,
    PythonPlaybook,
    StageContext,
    define_playbook,
)
from flows.playbook.routing import Route, route
from flows.playbook.schema import ACTIONS, ErrorCode, Playbook

__all__ = [
    "ACTIONS",
    "DEFAULT_SINCE_DAYS",
    "CacaoError",
    "CacaoImport",
    "CacaoIssue",
    "CacaoRule",
    "ErrorCode",
    "LoadedPlaybook",
    "Lookup",
    "MappingRow",
    "MutationRefused",
    "PlannedAction",
    "Playbook",
    "PlaybookCode",
    "PlaybookError",
    "PlaybookIssue",
    "PlaybookLibrary",
    "PlaybookPlan",
    "PlaybookRunError",
    "PythonPlaybook",
    "Route",
    "StageContext",
    "StepNote",
    "adapter_lookup",
    "check_document",
    "decide",
    "define_playbook",
    "export_document",
    "export_text",
    "forget_loaded",
    "hunt_call",
    "import_document",
    "load_library",
    "load_playbook",
    "load_playbooks",
    "parse_playbook",
    "plan_playbook",
    "playbook_files",
    "route",
]
