"""Detect: vendor alerts in, incidents out.

Alerts arrive by webhook (``stanch serve``), from alert files (``stanch run``) or from a
scheduled poller per source; each is normalised to an OCSF Detection Finding
(:func:`normalise`), fingerprinted for de-duplication and correlated into an incident by
the entities it names (:class:`Intake`), scored by triage (:class:`TriagePolicy`, and
:func:`intel_points` once threat intel is in), and a running incident flow takes in the
alerts that joined it since (:func:`joined_alerts`).
A Prefect event that a playbook's trigger names becomes an incident too
(:func:`incident_from_event`).
"""

from __future__ import annotations

from flows.detect.alerts import load_alert_file, parse_finding
from flows.detect.entities import EntityKind, entity_keys, fingerprint
from flows.detect.guard import BodyRejected, Rejected, check_payload, split_batch
from flows.detect.intake import TENANT_PATTERN, IngestResult, Intake, ItemResult, StartIncident
from flows.detect.joins import joined_alerts, merged_into
from flows.detect.normalise import SOURCE_FORMATS, UnknownSource, normalise
from flows.detect.pollers import HANDLE_INCIDENT_DEPLOYMENT, poll_alerts
from flows.detect.prefect_events import finding_from_event, incident_from_event
from flows.detect.triage import TriagePolicy, fleet_prevalence, intel_points

__all__ = [
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
    "fingerprint",
    "fleet_prevalence",
    "incident_from_event",
    "intel_points",
    "joined_alerts",
    "load_alert_file",
    "merged_into",
    "normalise",
    "parse_finding",
    "poll_alerts",
    "split_batch",
]
