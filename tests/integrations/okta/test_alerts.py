"""System Log normalisation to OCSF Detection Findings, and fetch_alerts against the simulator."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from integrations.ocsf import NormalizationError, ObservableType, SeverityId
from integrations.okta import OktaSimulator, OktaSystemLog, is_security_relevant, normalize_event
from tests.integrations.okta.conftest import RecordingTransport

SAMPLES = Path(__file__).resolve().parents[2] / "vendor_specs" / "samples" / "okta"


def _sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def high_risk_sign_in() -> dict[str, Any]:
    event: dict[str, Any] = _sample("system_log_spec_example_security_context_risk.json")
    return event


def routine_sign_in() -> dict[str, Any]:
    event: dict[str, Any] = _sample("system_log_spec_example_list.json")[0]
    return event


def _event(uuid: str, published: str, **fields: Any) -> dict[str, Any]:
    event = copy.deepcopy(routine_sign_in())
    event.update(uuid=uuid, published=published, **fields)
    return event


def test_high_risk_sign_in_is_a_high_severity_finding() -> None:
    """Given Okta's documented sign-in with securityContext.risk.level HIGH,
    When it is normalised,
    Then it is a Detection Finding (2004/2/Create/200401) of severity High, keyed by uuid,
    titled by displayMessage, naming the user, the source IP and its country."""
    event = high_risk_sign_in()
    finding = normalize_event(event)

    assert (finding.class_uid, finding.category_uid, finding.activity_id, finding.type_uid) == (
        2004,
        2,
        1,
        200401,
    )
    assert finding.severity_id is SeverityId.HIGH
    assert finding.severity == "High"
    assert finding.uid == "dc9fd3c0-598c-11ef-8478-2b7584bf8d5a"
    assert finding.title == "User login to Okta"
    assert finding.time == 1723564700353
    assert finding.actor is not None and finding.actor.user is not None
    assert finding.actor.user.name == "john.doe@example.com"
    assert finding.evidences[0].src_endpoint is not None
    assert finding.evidences[0].src_endpoint.ip == "10.0.0.1"
    assert finding.evidences[0].src_endpoint.location is not None
    assert finding.evidences[0].src_endpoint.location["desc"] == "United States"
    assert finding.observed(ObservableType.IP_ADDRESS) == ["10.0.0.1"]
    assert finding.observed(ObservableType.COUNTRY) == ["United States"]
    assert finding.observed(ObservableType.USER_NAME) == ["john.doe@example.com"]
    assert finding.finding_info.desc is not None
    assert "Suspected Session Hijacking" in finding.finding_info.desc
    assert finding.model_dump()["risk_level_id"] == 3
    assert finding.vendor == "Okta"
    assert finding.raw_data is not None and json.loads(finding.raw_data) == event


def test_routine_sign_in_is_informational() -> None:
    """Given the documented routine sign-in (severity INFO, no risk),
    When it is normalised,
    Then its severity is Informational and it is not security-relevant."""
    event = routine_sign_in()
    assert normalize_event(event).severity_id is SeverityId.INFORMATIONAL
    assert not is_security_relevant(event)


def test_third_party_sample_normalises_with_public_ip() -> None:
    """Given the System Log response captured by a third-party connector,
    When each event is normalised,
    Then each names its actor and its public client IP as an external IP."""
    events = _sample("system_log_response.json")
    findings = [normalize_event(e) for e in events]
    assert [f.external_ips() for f in findings] == [["8.8.8.8"], ["8.8.8.8"]]
    assert {f.observed(ObservableType.USER_NAME)[0] for f in findings} == {"example"}
    assert not any(is_security_relevant(e) for e in events)


@pytest.mark.parametrize(
    ("risk", "expected"),
    [
        ("{reasons=New Geo-Location, New Device, level=MEDIUM}", SeverityId.MEDIUM),
        ("{level=HIGH, reasons=Anomalous Location}", SeverityId.HIGH),
        ("{reasons=New IP, level=LOW}", SeverityId.LOW),
    ],
)
def test_debug_data_risk_string_sets_severity(risk: str, expected: SeverityId) -> None:
    """Given an event whose risk is only in debugContext.debugData.risk (a flat string),
    When it is normalised,
    Then the level in that string decides the severity."""
    event = _event("u-risk", "2024-08-13T15:58:20.353Z")
    event["debugContext"]["debugData"]["risk"] = risk
    assert normalize_event(event).severity_id is expected


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("DEBUG", SeverityId.INFORMATIONAL), ("WARN", SeverityId.MEDIUM), ("ERROR", SeverityId.HIGH)],
)
def test_log_severity_maps_per_ocsf_reference(severity: str, expected: SeverityId) -> None:
    """Given an event without risk and each Okta log severity,
    When it is normalised,
    Then severity follows the OCSF reference: DEBUG/INFO 1, WARN 3, ERROR 4."""
    event = _event("u-sev", "2024-08-13T15:58:20.353Z", severity=severity)
    assert normalize_event(event).severity_id is expected


@pytest.mark.parametrize(
    ("change", "relevant"),
    [
        ({"eventType": "security.threat.detected"}, True),
        ({"eventType": "user.account.lock"}, True),
        ({"eventType": "user.mfa.attempt_bypass"}, True),
        ({"securityContext": {"risk": {"level": "MEDIUM"}}}, True),
        ({"securityContext": {"risk": {"level": "LOW"}}}, False),
        (
            {"severity": "WARN", "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"}},
            False,
        ),
        ({"eventType": "group.user_membership.add"}, False),
    ],
)
def test_security_relevance_filter(change: dict[str, Any], relevant: bool) -> None:
    """Given a routine sign-in changed one way,
    When the security filter looks at it,
    Then only security event types and MEDIUM/HIGH risk count as alerts."""
    event = routine_sign_in() | change
    assert is_security_relevant(event) is relevant


def test_system_principal_actor_is_not_a_user_observable() -> None:
    """Given a threat detection whose actor is Okta's system principal,
    When it is normalised,
    Then no user name is offered to playbooks (there is no account to suspend)."""
    event = _event(
        "u-sys",
        "2024-08-13T15:58:20.353Z",
        eventType="security.threat.detected",
        actor={"id": "0oa1", "type": "SystemPrincipal", "alternateId": "system@okta.com"},
    )
    finding = normalize_event(event)
    assert finding.actor is None
    assert finding.observed(ObservableType.USER_NAME) == []
    assert finding.observed(ObservableType.IP_ADDRESS) == ["10.0.0.1"]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e.pop("uuid"), "uuid"),
        (lambda e: e.update(uuid=""), "uuid"),
        (lambda e: e.pop("eventType"), "eventType"),
        (lambda e: e.pop("published"), "published"),
        (lambda e: e.update(published="yesterday"), "published"),
        (lambda e: e["client"].update(ipAddress="not-an-ip"), "client.ipAddress"),
    ],
)
def test_malformed_event_names_the_failing_field(mutate: Any, field: str) -> None:
    """Given a System Log event with one required field missing or malformed,
    When it is normalised,
    Then NormalizationError names the vendor and that field."""
    event = high_risk_sign_in()
    mutate(event)
    with pytest.raises(NormalizationError) as caught:
        normalize_event(event)
    assert (caught.value.vendor, caught.value.field) == ("okta", field)


def test_non_object_event_is_rejected() -> None:
    """Given something that is not a JSON object,
    When it is normalised,
    Then NormalizationError says so."""
    with pytest.raises(NormalizationError, match="not a JSON object"):
        normalize_event(["not", "an", "event"])  # type: ignore[arg-type]


async def test_fetch_alerts_filters_paginates_and_respects_since(
    sim: OktaSimulator, client: httpx.AsyncClient, wire: RecordingTransport
) -> None:
    """Given a System Log with routine events, an old threat, and three recent alerts,
    When fetch_alerts(since) reads it one event per page,
    Then it follows Link rel="next" to the end and returns the three recent alerts only."""
    for event in _sample("system_log_response.json"):
        sim.add_log_event(event)  # routine, 2021
    sim.add_log_event(
        _event("old-threat", "2023-01-01T00:00:00.000Z", eventType="security.threat.detected")
    )
    sim.add_log_event(high_risk_sign_in())  # 2024-08-13T15:58:20.353Z
    sim.add_log_event(_event("routine", "2024-08-13T16:00:00.000Z"))
    sim.add_log_event(_event("lock", "2024-08-13T16:01:00.000Z", eventType="user.account.lock"))
    sim.add_log_event(
        _event("threat", "2024-08-13T16:02:00.000Z", eventType="security.threat.detected")
    )

    source = OktaSystemLog(client, page_size=1)
    findings = await source.fetch_alerts(datetime(2024, 8, 13, tzinfo=UTC))

    assert [f.uid for f in findings] == ["dc9fd3c0-598c-11ef-8478-2b7584bf8d5a", "lock", "threat"]
    log_calls = [r for r in wire.sent if r.url.path == "/api/v1/logs"]
    # Four events since the cut-off, one per page, then the empty page that ends the poll.
    assert len(log_calls) == 5
    assert log_calls[0].url.params["since"] == "2024-08-13T00:00:00.000Z"
    assert all("after" in r.url.params for r in log_calls[1:])
    assert source.rejected == []


async def test_fetch_alerts_keeps_malformed_alerts_for_inspection(
    sim: OktaSimulator, client: httpx.AsyncClient
) -> None:
    """Given a security-relevant event without a uuid next to a good one,
    When fetch_alerts runs,
    Then the good one is returned and the bad one is kept in rejected, naming uuid."""
    bad = _event("x", "2024-08-13T16:01:00.000Z", eventType="user.account.lock")
    del bad["uuid"]
    sim.add_log_event(bad)
    sim.add_log_event(high_risk_sign_in())

    source = OktaSystemLog(client)
    findings = await source.fetch_alerts(datetime(2024, 1, 1))  # naive = UTC

    assert [f.uid for f in findings] == ["dc9fd3c0-598c-11ef-8478-2b7584bf8d5a"]
    assert len(source.rejected) == 1
    assert source.rejected[0][1].field == "uuid"


async def test_fetch_alerts_stops_at_max_pages(
    sim: OktaSimulator, client: httpx.AsyncClient, wire: RecordingTransport
) -> None:
    """Given more pages than max_pages,
    When fetch_alerts runs,
    Then it reads exactly max_pages pages (a polling link never ends by itself)."""
    for n in range(5):
        sim.add_log_event(
            _event(f"t{n}", f"2024-08-13T16:0{n}:00.000Z", eventType="security.threat.detected")
        )
    findings = await OktaSystemLog(client, page_size=1, max_pages=3).fetch_alerts(
        datetime(2024, 1, 1, tzinfo=UTC)
    )
    assert [f.uid for f in findings] == ["t0", "t1", "t2"]
    assert sum(1 for r in wire.sent if r.url.path == "/api/v1/logs") == 3
