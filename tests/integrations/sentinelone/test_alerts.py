"""SentinelOneAlerts: cursor paging against the simulator, and threat normalisation."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from integrations.capabilities import AlertSource
from integrations.ocsf import NormalizationError, ObservableType, SeverityId
from integrations.sentinelone import SentinelOneAlerts, SentinelOneSimulator, normalize_threat
from tests.integrations.documented import SPECS

SAMPLE = SPECS / "samples" / "sentinelone" / "threats_list_response.json"


def sample_threats() -> list[dict[str, Any]]:
    threats: list[dict[str, Any]] = json.loads(SAMPLE.read_text())["data"]
    return threats


def threat(**info: Any) -> dict[str, Any]:
    """The second sample threat with ``threatInfo`` fields overridden."""
    payload = copy.deepcopy(sample_threats()[1])
    payload["threatInfo"].update(info)
    return payload


def test_every_sample_threat_normalises() -> None:
    """Given the documented sample, When each threat is normalised, Then each keeps uid,
    title, severity (malicious -> High), agent, SHA-1 and the raw JSON."""
    threats = sample_threats()
    findings = [normalize_threat(t) for t in threats]

    assert [f.uid for f in findings] == [t["id"] for t in threats]
    assert [f.title for f in findings] == [t["threatInfo"]["threatName"] for t in threats]
    for finding, source in zip(findings, threats, strict=True):
        assert finding.severity_id is SeverityId.HIGH
        assert (finding.activity_id, finding.status_id) == (3, 4)  # resolved in the sample
        assert finding.device is not None
        assert finding.device.hostname == "EC2AMAZ-AJ0KANC"
        assert finding.device.uid == "657613730168123595"
        assert finding.device.os is not None and finding.device.os.type_id == 100
        assert finding.observed(ObservableType.HOSTNAME) == ["EC2AMAZ-AJ0KANC"]
        file = finding.evidences[0].file
        assert file is not None
        assert [h.value for h in file.hashes] == [source["threatInfo"]["sha1"]]
        assert file.path == source["threatInfo"]["filePath"]
        assert json.loads(finding.raw_data or "") == source
        assert finding.metadata.product.vendor_name == "SentinelOne"


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [
        ("malicious", SeverityId.HIGH),
        ("suspicious", SeverityId.MEDIUM),
        (None, SeverityId.UNKNOWN),
        ("n/a", SeverityId.UNKNOWN),
        ("weird", SeverityId.OTHER),
    ],
)
def test_severity_follows_confidence_level(confidence: str | None, expected: SeverityId) -> None:
    """Given each confidenceLevel, When normalised, Then severity follows section 8."""
    assert normalize_threat(threat(confidenceLevel=confidence)).severity_id is expected


def test_unresolved_threat_with_sha256_and_technique() -> None:
    """Given an unresolved threat with a SHA-256 and a MITRE technique, When normalised, Then
    it is a new Create finding whose hash stanch can block."""
    payload = threat(incidentStatus="unresolved", sha256="ab" * 32)
    payload["indicators"] = [
        {"tactics": [{"name": "Execution", "techniques": [{"name": "T1059.001"}]}]}
    ]
    finding = normalize_threat(payload)
    assert (finding.activity_id, finding.status_id) == (1, 1)
    assert finding.observed(ObservableType.HASH) == ["ab" * 32]
    (attack,) = finding.finding_info.attacks
    assert attack.technique is not None and attack.technique.uid == "T1059"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda t: t.pop("id"), "id"),
        (lambda t: t.pop("threatInfo"), "threatInfo"),
        (lambda t: t["threatInfo"].pop("createdAt"), "threatInfo.createdAt"),
        (lambda t: t["threatInfo"].update(createdAt="later"), "threatInfo.createdAt"),
        (lambda t: t["threatInfo"].update(confidenceLevel=3), "threatInfo.confidenceLevel"),
        (lambda t: t.update(agentRealtimeInfo="WS-01"), "agentRealtimeInfo"),
    ],
)
def test_malformed_threat_names_the_failing_field(mutate: Any, field: str) -> None:
    """Given a threat with one broken field, When normalised, Then NormalizationError names it."""
    payload = threat()
    mutate(payload)
    with pytest.raises(NormalizationError) as info:
        normalize_threat(payload)
    assert (info.value.vendor, info.value.field) == ("sentinelone", field)


async def test_fetch_alerts_follows_the_cursor(
    sim: SentinelOneSimulator, alerts: SentinelOneAlerts
) -> None:
    """Given five new threats and one older than since, When fetched with pages of two, Then
    all five arrive in order over three cursor pages."""
    assert isinstance(alerts, AlertSource)
    sim.add_threat(threat(createdAt="2024-04-30T00:00:00Z") | {"id": "old"})
    for n in range(5):
        sim.add_threat(threat(createdAt=f"2024-05-01T10:0{n}:00.000000Z") | {"id": f"t{n}"})

    findings = await alerts.fetch_alerts(datetime(2024, 5, 1, tzinfo=UTC))

    assert [f.uid for f in findings] == [f"t{n}" for n in range(5)]
    pages = [r for r in sim.requests if r.route == "/web/api/v2.1/threats"]
    assert len(pages) == 3


async def test_fetch_alerts_excludes_the_since_instant(
    sim: SentinelOneSimulator, alerts: SentinelOneAlerts
) -> None:
    """Given a threat created exactly at since, When fetched, Then createdAt__gt leaves it out."""
    sim.add_threat(threat(createdAt="2024-05-01T00:00:00.000000Z"))
    assert await alerts.fetch_alerts(datetime(2024, 5, 1, tzinfo=UTC)) == []


async def test_simulator_rejects_a_bad_cursor(sim: SentinelOneSimulator) -> None:
    """Given a cursor S1 never issued, When listed, Then 400 in the errors envelope."""
    headers = {"Authorization": f"ApiToken {sim.api_token}"}
    async with sim.client(headers=headers) as http:
        response = await http.get("/web/api/v2.1/threats", params={"cursor": "nope"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["title"] == "Validation Error"
