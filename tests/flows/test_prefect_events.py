"""An event becomes an incident only when every field it gives is what stanch can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flows.detect import finding_from_event, incident_from_event
from flows.errors import AlertRejected

EXAMPLE = Path(__file__).resolve().parents[2] / "playbooks" / "examples" / "siem-detection"


def event(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLE / "event.json").read_text())
    data.update(overrides)
    return data


def test_the_example_finding_is_what_the_example_event_becomes() -> None:
    """Given playbooks/examples/siem-detection/event.json,
    When it is turned into a finding,
    Then it is exactly lateral-smb.json, the alert the playbook's example plans from."""
    tenant, finding = finding_from_event(event())
    expected = json.loads((EXAMPLE / "lateral-smb.json").read_text())
    assert tenant == "demo"
    assert finding.model_dump(mode="json", exclude_none=True) == expected
    incident = incident_from_event("INC-20250319-0001", event())
    assert (incident.hostnames, incident.users) == (["WS-0117"], ["mgarcia@acme.example"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"resource": {"prefect.resource.id": "x", "stanch.tenant": "../acme"}},
            "resource.stanch.tenant",
        ),
        (
            {
                "resource": {
                    "prefect.resource.id": "x",
                    "stanch.tenant": "acme",
                    "stanch.severity": "dire",
                }
            },
            "resource.stanch.severity",
        ),
        ({"payload": {"hostnames": ["<!channel>"]}}, "payload.hostnames[0]"),
        ({"payload": {"ips": ["999.1.1.1"]}}, "payload.ips[0]"),
        ({"payload": {"sha256s": ["abc"]}}, "payload.sha256s[0]"),
        ({"payload": {"users": "mgarcia"}}, "payload.users"),
        ({"payload": {"hostnames": [{"name": "x"}]}}, "payload.hostnames[0]"),
        ({"payload": {"title": ["t"]}}, "payload.title"),
        ({"occurred": "yesterday"}, "occurred"),
        ({"event": ""}, "event"),
        ({"resource": None}, "resource"),
    ],
)
def test_a_hostile_or_broken_field_is_refused_by_name(change: dict[str, Any], field: str) -> None:
    """Given the example event with one field forged or broken,
    When it is turned into a finding,
    Then it is refused with that field named."""
    with pytest.raises(AlertRejected) as caught:
        finding_from_event(event(**change))
    assert caught.value.field == field


def test_entities_are_capped() -> None:
    """Given an event naming 500 hosts,
    When it becomes a finding,
    Then it carries the first 50: an event cannot make one incident of a whole fleet."""
    _, finding = finding_from_event(event(payload={"hostnames": [f"WS-{i}" for i in range(500)]}))
    assert len(finding.observables) == 50
