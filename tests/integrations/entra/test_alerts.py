"""Risk detections: normalisation to OCSF 2004 and fetching with @odata.nextLink paging."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from integrations.capabilities import AlertSource
from integrations.entra import EntraRiskDetections, connect, normalize_detection
from integrations.entra.sim import EntraSimulator
from integrations.errors import PermanentError
from integrations.ocsf import NormalizationError, ObservableType, SeverityId
from tests.integrations.entra.support import lab

SAMPLES = Path(__file__).resolve().parents[2] / "vendor_specs" / "samples" / "entra"
SAMPLE_ITEMS: list[dict[str, Any]] = json.loads(
    (SAMPLES / "risk_detections_list_response.json").read_text()
)["value"]


def detection(**changes: Any) -> dict[str, Any]:
    """The documented sample detection with some fields changed (None deletes)."""
    payload = copy.deepcopy(SAMPLE_ITEMS[0])
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


@pytest.mark.parametrize("item", SAMPLE_ITEMS, ids=lambda i: str(i["id"]))
def test_every_sample_item_normalises(item: dict[str, Any]) -> None:
    """Given each documented sample detection, When normalised, Then a valid 2004 Create finding
    carries its id, type, user, time, severity and raw JSON."""
    finding = normalize_detection(item)

    assert (finding.class_uid, finding.category_uid) == (2004, 2)
    assert (finding.activity_id, finding.type_uid) == (1, 200401)
    assert finding.uid == item["id"]
    assert finding.title == item["riskEventType"]
    assert finding.actor is not None and finding.actor.user is not None
    assert finding.actor.user.name == item["userPrincipalName"]
    assert finding.actor.user.uid == item["userId"]
    detected = datetime.fromisoformat(item["detectedDateTime"])
    assert finding.time == int(detected.timestamp() * 1000)
    assert finding.raw_data is not None and json.loads(finding.raw_data) == item
    assert finding.metadata.version == "1.8.0"
    assert finding.vendor == "Microsoft"


def test_sample_severity_status_and_country() -> None:
    """Given the sample (medium, remediated, US), When normalised, Then severity 3, status 4
    (Resolved), and the country is an observable."""
    finding = normalize_detection(SAMPLE_ITEMS[0])

    assert finding.severity_id is SeverityId.MEDIUM
    assert finding.severity == "Medium"
    assert finding.status_id == 4
    assert finding.observed(ObservableType.COUNTRY) == ["US"]
    assert finding.observed(ObservableType.USER_NAME) == ["olack@test.com"]


def test_sample_invalid_ip_is_not_an_ip_observable() -> None:
    """Given the sample's ipAddress 123.456.7.89 (not an address), When normalised, Then it is
    kept in unmapped and never offered as an IP to block."""
    finding = normalize_detection(SAMPLE_ITEMS[0])

    assert finding.observed(ObservableType.IP_ADDRESS) == []
    assert finding.external_ips() == []
    assert finding.unmapped is not None
    assert finding.unmapped["entra"]["ipAddress"] == "123.456.7.89"


def test_valid_ip_and_location_land_in_evidence() -> None:
    """Given a detection from 203.0.113.7 in Seattle, When normalised, Then src_endpoint has the
    IP and location, and the IP is an external IP observable."""
    finding = normalize_detection(detection(ipAddress="203.0.113.7"))

    endpoint = finding.evidences[0].src_endpoint
    assert endpoint is not None and endpoint.ip == "203.0.113.7"
    assert endpoint.location == {"city": "Seattle", "region": "Washington", "country": "US"}
    assert finding.external_ips() == ["203.0.113.7"]
    assert finding.observed(ObservableType.COUNTRY) == ["US"]


@pytest.mark.parametrize(
    ("level", "severity_id"),
    [
        ("low", SeverityId.LOW),
        ("medium", SeverityId.MEDIUM),
        ("high", SeverityId.HIGH),
        ("hidden", SeverityId.UNKNOWN),
        ("none", SeverityId.UNKNOWN),
        ("unknownFutureValue", SeverityId.OTHER),
    ],
)
def test_severity_from_risk_level(level: str, severity_id: SeverityId) -> None:
    """Given each riskLevel, When normalised, Then severity_id follows the OCSF mapping table."""
    finding = normalize_detection(detection(riskLevel=level))

    assert finding.severity_id is severity_id
    if severity_id is SeverityId.OTHER:
        assert finding.severity == level


@pytest.mark.parametrize(
    ("state", "status_id"),
    [("atRisk", 1), ("confirmedCompromised", 2), ("remediated", 4), ("dismissed", 4)],
)
def test_status_from_risk_state(state: str, status_id: int) -> None:
    """Given each riskState, When normalised, Then status_id follows the OCSF mapping table."""
    assert normalize_detection(detection(riskState=state)).status_id == status_id


@pytest.mark.parametrize("field", ["id", "riskEventType", "detectedDateTime"])
def test_missing_required_field_is_named(field: str) -> None:
    """Given a detection without a required field, When normalised, Then NormalizationError
    names that field and the vendor."""
    with pytest.raises(NormalizationError) as caught:
        normalize_detection(detection(**{field: None}))

    assert caught.value.field == field
    assert caught.value.vendor == "entra"
    assert caught.value.reason == "missing"


def test_malformed_time_is_named() -> None:
    """Given detectedDateTime that is no date, When normalised, Then the field is named."""
    with pytest.raises(NormalizationError) as caught:
        normalize_detection(detection(detectedDateTime="yesterday"))

    assert caught.value.field == "detectedDateTime"


def test_wrong_type_risk_level_is_named() -> None:
    """Given riskLevel that is not a string, When normalised, Then riskLevel is named."""
    with pytest.raises(NormalizationError) as caught:
        normalize_detection(detection(riskLevel=3))

    assert caught.value.field == "riskLevel"


# Fetching -----------------------------------------------------------------------------------


def seed(sim: EntraSimulator, count: int, day: int = 5) -> list[str]:
    """Add ``count`` detections on 2024-03-{day}, one a minute."""
    return [
        sim.add_risk_detection(
            detection(id=f"det-{day}-{i}", detectedDateTime=f"2024-03-{day:02d}T10:{i:02d}:00Z")
        )
        for i in range(count)
    ]


async def test_fetch_follows_next_links_across_pages(sim: EntraSimulator) -> None:
    """Given 5 detections and a page size of 2, When fetched, Then 3 pages yield all 5 in order."""
    ids = seed(sim, 5)
    async with connect(lab(), transport=sim.transport()) as client:
        source = EntraRiskDetections(client, page_size=2)
        assert isinstance(source, AlertSource)
        findings = await source.fetch_alerts(datetime(2024, 3, 1, tzinfo=UTC))

    assert [f.uid for f in findings] == ids
    pages = [r for r in sim.requests if r.route == "/v1.0/identityProtection/riskDetections"]
    assert len(pages) == 3


async def test_fetch_filters_by_detected_time(
    sim: EntraSimulator, detections: EntraRiskDetections
) -> None:
    """Given detections on the 4th and 6th, When fetched since the 5th, Then only the 6th's."""
    seed(sim, 2, day=4)
    later = seed(sim, 3, day=6)

    findings = await detections.fetch_alerts(datetime(2024, 3, 5, tzinfo=UTC))

    assert [f.uid for f in findings] == later


async def test_fetch_nothing_new(detections: EntraRiskDetections) -> None:
    """Given no detections, When fetched, Then an empty list."""
    assert await detections.fetch_alerts(datetime(2024, 3, 5, tzinfo=UTC)) == []


async def test_fetch_raises_on_malformed_detection(sim: EntraSimulator) -> None:
    """Given one detection lacking riskEventType, When fetched, Then NormalizationError (no
    silent drop)."""
    sim.add_risk_detection(detection(id="bad", riskEventType=None))
    async with connect(lab(), transport=sim.transport()) as client:
        with pytest.raises(NormalizationError) as caught:
            await EntraRiskDetections(client).fetch_alerts(datetime(2018, 1, 1, tzinfo=UTC))

    assert caught.value.field == "riskEventType"


@respx.mock
async def test_next_link_to_foreign_host_is_refused() -> None:
    """Given a nextLink naming another host, When fetched, Then it is not followed (the bearer
    token must stay on Graph)."""
    respx.post(url__regex=r"https://login\.microsoftonline\.com/.*").respond(
        json={"access_token": "t", "expires_in": 3599, "token_type": "Bearer"}
    )
    respx.get(url__startswith="https://graph.microsoft.com/v1.0/identityProtection/").respond(
        json={"value": [], "@odata.nextLink": "https://evil.example/v1.0/steal"}
    )
    foreign = respx.get(url__startswith="https://evil.example/").respond(json={"value": []})
    async with connect(lab()) as client:
        with pytest.raises(PermanentError):
            await EntraRiskDetections(client).fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC))

    assert not foreign.called


async def test_page_size_bounds() -> None:
    """Given a page size Graph would refuse, When constructing, Then ValueError."""
    async with httpx.AsyncClient() as client:
        with pytest.raises(ValueError, match="page_size"):
            EntraRiskDetections(client, page_size=501)
