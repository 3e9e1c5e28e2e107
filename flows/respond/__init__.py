"""Respond: the plans that contain and remediate, carried out on authority, and undone.

:mod:`~flows.respond.builtin` plans the built-in response when no playbook matches;
:class:`Responder` puts each plan to policy and approval and executes what is authorised
(containment all-or-none, compensated by :func:`compensate`); :func:`expire_due` lifts
blocks whose time-to-live has passed; :func:`undo_incident` reverses what is in effect.
"""

from __future__ import annotations

from flows.respond.builtin import BLOCK_TTL_SECONDS, assess, containment_plans, remediation_plans
from flows.respond.compensation import ROLLBACK_AUTHORITY, STILL_IN_EFFECT, compensate
from flows.respond.executor import ContainmentRolledBack, Responder
from flows.respond.expiry import EXPIRY_AUTHORITY, TTL_ACTIONS, Expiry, expire_due
from flows.respond.hunting import HUNT_SINCE_DAYS, hunt_incident, summarise_hunt
from flows.respond.undo import inverse_plans, undo_incident

__all__ = [
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
]
