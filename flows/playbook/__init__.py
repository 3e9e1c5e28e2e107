"""YAML playbooks: schema, loader, sandboxed templates, the planner and routing.

The lifecycle calls :func:`route` to pick a playbook for an incident and
:func:`plan_playbook` to turn it into :class:`~flows.models.ActionPlan` objects per stage;
:func:`decide` applies the tenant's policy, tightened by ``approval: required`` steps.
"""

from __future__ import annotations

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
    PlaybookLibrary,
    load_library,
    load_playbook,
    load_playbooks,
    parse_playbook,
    playbook_files,
)
from flows.playbook.routing import Route, route
from flows.playbook.schema import ACTIONS, ErrorCode, Playbook

__all__ = [
    "ACTIONS",
    "ErrorCode",
    "LoadedPlaybook",
    "Lookup",
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
    "decide",
    "load_library",
    "load_playbook",
    "load_playbooks",
    "parse_playbook",
    "plan_playbook",
    "playbook_files",
    "route",
]
