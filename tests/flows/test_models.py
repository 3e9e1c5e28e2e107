"""The lifecycle's value objects: incident entities and the action plan's hash."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from flows.models import ActionResult, ActionStatus, Verdict
from integrations.ocsf import SeverityId
from tests.flows.factories import incident, plan


def test_plan_hash_is_sha256_of_sorted_compact_json() -> None:
    """Given a plan,
    When its hash is taken,
    Then it is the SHA-256 of its JSON with sorted keys and no whitespace."""
    p = plan()
    expected = json.dumps(p.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert p.canonical_json() == expected
    assert p.sha256 == hashlib.sha256(expected.encode()).hexdigest()


def test_plan_hash_ignores_parameter_order_but_not_values() -> None:
    """Given two plans with the same parameters in another order, and one with another value,
    When hashed,
    Then order does not matter and any changed value does."""
    a = plan(parameters={"reason": "r", "ttl_seconds": 60})
    b = plan(parameters={"ttl_seconds": 60, "reason": "r"})
    c = plan(parameters={"reason": "r", "ttl_seconds": 61})
    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256
    assert plan(target="aid-124").sha256 != a.sha256
    assert plan(tenant="other").sha256 != a.sha256


def test_plan_refuses_unknown_fields_and_bad_verbs() -> None:
    """Given plan input with an extra key or a verb that is not snake_case,
    When validated,
    Then it is rejected (a plan is exactly what gets approved)."""
    with pytest.raises(ValidationError, match="extra"):
        plan(extra="x")
    with pytest.raises(ValidationError, match="verb"):
        plan(verb="contain-host; rm")


def test_plan_naming_and_idempotency_key() -> None:
    """Given a plan, Then it reads like the playbook and keys on (incident, action, target)."""
    p = plan()
    assert p.action == "edr.contain_host"
    assert p.idempotency_key == "INC-20261121-0007:edr.contain_host:aid-123"


def test_incident_collects_entities_from_all_alerts() -> None:
    """Given the demo's ransomware and sign-in alerts,
    When the incident's entities are read,
    Then hosts, users, hashes, internet IPs and ATT&CK come from both alerts, de-duplicated."""
    inc = incident()
    assert inc.hostnames == ["WS-0042"]
    assert inc.users == ["jdoe@acme.example"]
    assert len(inc.sha256s) == 1 and len(inc.sha256s[0]) == 64
    assert inc.external_ips == ["203.0.113.66", "198.51.100.77"]
    assert inc.techniques == ["T1486", "T1071.001", "T1078"]
    assert inc.severity == SeverityId.CRITICAL
    assert inc.first_seen == min(a.occurred_at for a in inc.alerts)


def test_incident_ids_and_tenants_are_validated() -> None:
    """Given a malformed incident id or tenant, When an incident is built, Then it fails."""
    with pytest.raises(ValidationError, match="id"):
        incident(id="INC-7")
    with pytest.raises(ValidationError, match="tenant"):
        incident(tenant="Acme Corp")
    with pytest.raises(ValidationError, match="alerts"):
        incident(alerts=[])


def test_action_result_needs_a_real_hash() -> None:
    """Given a result whose plan hash is not 64 hex digits, When built, Then it is refused."""
    with pytest.raises(ValidationError, match="plan_sha256"):
        ActionResult(
            plan=plan(), plan_sha256="abc", verdict=Verdict.APPROVAL, status=ActionStatus.DENIED
        )
