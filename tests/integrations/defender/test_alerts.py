"""DefenderAlerts: paging against the simulator, and normalisation of MDE alert payloads."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import respx

from integrations.capabilities import AlertSource
from integrations.defender import (
    DefenderAlerts,
    DefenderSettings,
    DefenderSimulator,
    connect,
    normalize_alert,
)
from integrations.ocsf import NormalizationError, ObservableType, SeverityId
from tests.integrations.documented import SPECS

SAMPLE = SPECS / "samples" / "defender" / "alerts_list_response.json"
SHA256 = "de96a6e69944335375dc1ac238336066889d9ffc7d73628ef4fe1b1b160ab32c"


def sample_alerts() -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = json.loads(SAMPLE.read_text())["value"]
    return alerts


def current_alert(**overrides: Any) -> dict[str, Any]:
    """An alert in the current documented shape (computerDnsName, MITRE, evidence)."""
    alert: dict[str, Any] = {
        "id": "da637472900382838869_1364969609",
        "incidentId": 1126093,
        "severity": "High",
        "status": "New",
        "detectionSource": "WindowsDefenderAtp",
        "detectorId": "17e10bbc-3a68-474a-8aad-faef14d43952",
        "category": "Execution",
        "title": "Suspicious PowerShell download",
        "description": "PowerShell downloaded a payload",
        "alertCreationTime": "2024-05-01T10:00:00.1234567Z",
        "firstEventTime": "2024-05-01T09:59:00Z",
        "lastEventTime": "2024-05-01T09:59:30Z",
        "lastUpdateTime": "2024-05-01T10:01:00Z",
        "machineId": "111e6dd8c833c8a052ea231ec1b19adaf497b625",
        "computerDnsName": "ws-01.contoso.com",
        "aadTenantId": "a839b112-1253-6432-9bf6-94542403f21c",
        "mitreTechniques": ["T1059.001", "T1105"],
        "relatedUser": {"userName": "alice", "domainName": "CONTOSO"},
        "evidence": [
            {
                "entityType": "Process",
                "processId": 4780,
                "processCommandLine": "powershell.exe -nop -c iex(...)",
                "fileName": "powershell.exe",
                "filePath": "C:\\\\Windows\\\\System32\\\\WindowsPowerShell\\\\v1.0",
                "sha256": SHA256,
                "accountName": "alice",
            },
            {"entityType": "Ip", "ipAddress": "198.51.100.23"},
        ],
    }
    alert.update(overrides)
    return alert


def test_every_sample_alert_normalises() -> None:
    """Given the documented sample page, When each alert is normalised, Then each becomes a
    Detection Finding keeping uid, title, severity, machine and the raw JSON."""
    alerts = sample_alerts()
    findings = [normalize_alert(a) for a in alerts]

    assert [f.uid for f in findings] == [a["id"] for a in alerts]
    assert [f.title for f in findings] == [a["title"] for a in alerts]
    assert [f.severity_id for f in findings] == [SeverityId.MEDIUM, SeverityId.LOW, SeverityId.LOW]
    for finding, alert in zip(findings, alerts, strict=True):
        assert finding.class_uid == 2004 and finding.type_uid == 200401
        assert finding.status_id == 1
        assert finding.device is not None and finding.device.uid == alert["machineId"]
        created = datetime.fromisoformat(alert["alertCreationTime"])
        assert finding.time == int(created.timestamp() * 1000)  # OCSF time is milliseconds
        assert json.loads(finding.raw_data or "") == alert
        assert finding.metadata.product.vendor_name == "Microsoft"


def test_current_shape_maps_device_mitre_evidence_and_user() -> None:
    """Given an alert with device, MITRE techniques and evidence, When normalised, Then the
    host, techniques, hash, IP and user are where stanch reads them."""
    finding = normalize_alert(current_alert())

    assert finding.severity_id is SeverityId.HIGH
    assert finding.device is not None and finding.device.hostname == "ws-01.contoso.com"
    attacks = finding.finding_info.attacks
    assert [a.technique.uid for a in attacks if a.technique] == ["T1059", "T1105"]
    assert attacks[0].sub_technique is not None and attacks[0].sub_technique.uid == "T1059.001"
    assert finding.observed(ObservableType.HOSTNAME) == ["ws-01.contoso.com"]
    assert finding.observed(ObservableType.HASH) == [SHA256]
    assert finding.external_ips() == ["198.51.100.23"]
    assert finding.actor is not None and finding.actor.user is not None
    assert finding.actor.user.name == "alice"
    assert finding.metadata.tenant_uid == "a839b112-1253-6432-9bf6-94542403f21c"
    assert finding.finding_info.types == ["Execution"]


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("UnSpecified", SeverityId.UNKNOWN),
        ("Informational", SeverityId.INFORMATIONAL),
        ("Low", SeverityId.LOW),
        ("Medium", SeverityId.MEDIUM),
        ("High", SeverityId.HIGH),
        ("Severe", SeverityId.OTHER),
    ],
)
def test_severity_follows_the_documented_mapping(severity: str, expected: SeverityId) -> None:
    """Given each MDE severity, When normalised, Then severity_id follows section 8; an
    unknown value is Other with the source word kept."""
    finding = normalize_alert(current_alert(severity=severity))
    assert finding.severity_id is expected
    if expected is SeverityId.OTHER:
        assert finding.severity == "Severe"


def test_resolved_alert_is_a_close_activity() -> None:
    """Given a resolved alert, When normalised, Then activity Close and status Resolved."""
    finding = normalize_alert(current_alert(status="Resolved"))
    assert (finding.activity_id, finding.type_uid, finding.status_id) == (3, 200403, 4)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": None}, "id"),
        ({"alertCreationTime": None}, "alertCreationTime"),
        ({"alertCreationTime": "yesterday"}, "alertCreationTime"),
        ({"severity": None}, "severity"),
        ({"evidence": "not a list"}, "evidence"),
        ({"mitreTechniques": "T1059"}, "mitreTechniques"),
        ({"evidence": [{"detectionStatus": "Detected"}]}, "evidence[0].entityType"),
    ],
)
def test_malformed_alert_names_the_failing_field(change: dict[str, Any], field: str) -> None:
    """Given an alert with one broken field, When normalised, Then NormalizationError names it."""
    alert = current_alert()
    alert.update(change)
    with pytest.raises(NormalizationError) as info:
        normalize_alert(alert)
    assert (info.value.vendor, info.value.field) == ("defender", field)


async def test_fetch_alerts_pages_with_skip(sim: DefenderSimulator, alerts: DefenderAlerts) -> None:
    """Given seven new alerts and one older than since, When fetched with pages of three, Then
    all seven arrive in order over three $skip pages, with evidence expanded."""
    assert isinstance(alerts, AlertSource)
    sim.add_alert(current_alert(id="old", alertCreationTime="2024-04-30T23:59:59Z"))
    for n in range(7):
        sim.add_alert(current_alert(id=f"a{n}", alertCreationTime=f"2024-05-01T10:0{n}:00Z"))

    findings = await alerts.fetch_alerts(datetime(2024, 5, 1, tzinfo=UTC))

    assert [f.uid for f in findings] == [f"a{n}" for n in range(7)]
    assert all(f.observed(ObservableType.HASH) == [SHA256] for f in findings)
    pages = [r for r in sim.requests if r.route == "/api/alerts"]
    assert len(pages) == 3


async def test_fetch_alerts_empty(alerts: DefenderAlerts) -> None:
    """Given no alerts, When fetched, Then an empty list after one request."""
    assert await alerts.fetch_alerts(datetime(2024, 5, 1, tzinfo=UTC)) == []


async def test_fetch_alerts_follows_next_link(settings: DefenderSettings) -> None:
    """Given a page carrying @odata.nextLink, When fetched, Then the link is followed as given."""
    base = settings.base_url
    first, second = current_alert(id="p1"), current_alert(id="p2")
    link = f"{base}/api/alerts?$skip=1&$top=1&$filter=alertCreationTime ge 2024-05-01T00:00:00Z"
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{settings.login_url}/{settings.tenant_id}/oauth2/v2.0/token").respond(
            200, json={"access_token": "t", "expires_in": 3599}
        )
        route = mock.get(f"{base}/api/alerts").mock(
            side_effect=[
                respx.MockResponse(200, json={"value": [first], "@odata.nextLink": link}),
                respx.MockResponse(200, json={"value": [second]}),
            ]
        )
        async with connect(settings) as client:
            findings = await DefenderAlerts(client, page_size=1).fetch_alerts(
                datetime(2024, 5, 1, tzinfo=UTC)
            )
    assert [f.uid for f in findings] == ["p1", "p2"]
    assert route.calls[1].request.url.params["$skip"] == "1"
    assert route.calls[0].request.url.params["$filter"] == (
        "alertCreationTime ge 2024-05-01T00:00:00Z"
    )


async def test_fetch_alerts_raises_on_a_malformed_alert(
    sim: DefenderSimulator, alerts: DefenderAlerts
) -> None:
    """Given a stored alert lacking severity, When fetched, Then NormalizationError names it."""
    broken = copy.deepcopy(current_alert(id="bad"))
    del broken["severity"]
    sim.add_alert(broken)
    with pytest.raises(NormalizationError) as info:
        await alerts.fetch_alerts(datetime(2024, 5, 1, tzinfo=UTC))
    assert info.value.field == "severity"
