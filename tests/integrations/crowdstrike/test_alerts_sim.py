"""CrowdStrikeAlerts against the simulator: time filter, offset pagination, envelopes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.capabilities import AlertSource
from integrations.crowdstrike import CrowdStrikeAlerts, CrowdStrikeSimulator

from .conftest import operation, sample

SAMPLE = sample("alerts_v2_entities_response.json")["resources"]


def alert(n: int, created: str) -> dict[str, Any]:
    return dict(
        SAMPLE[1],
        composite_id=f"cid:fcs:ioa-211:{n:04d}",
        created_timestamp=created,
        timestamp=created,
    )


async def test_fetch_alerts_pages_and_filters_by_time(
    sim: CrowdStrikeSimulator, client: httpx.AsyncClient
) -> None:
    """Given five alerts, one older than `since`, when fetched two per page, then the four
    newer ones come back oldest first after two query pages (total reached)."""
    sim.add_alert(alert(0, "2026-04-19T10:00:00Z"))
    for n, minute in enumerate(["40", "10", "30", "20"], start=1):
        sim.add_alert(alert(n, f"2026-04-20T10:{minute}:00Z"))
    source = CrowdStrikeAlerts(client, page_size=2)
    assert isinstance(source, AlertSource)
    findings = await source.fetch_alerts(datetime(2026, 4, 20, tzinfo=UTC))
    assert [f.uid[-4:] for f in findings] == ["0002", "0004", "0003", "0001"]
    queries = [r for r in sim.requests if r.path == "/alerts/queries/alerts/v2"]
    assert len(queries) == 2
    assert all(r.status == 200 for r in sim.requests if r.path != "/oauth2/token")


async def test_fetch_alerts_naive_since_is_utc(
    sim: CrowdStrikeSimulator, client: httpx.AsyncClient
) -> None:
    """Given a naive `since`, when fetched, then it is read as UTC."""
    sim.add_alert(alert(1, "2026-04-20T10:30:00Z"))
    source = CrowdStrikeAlerts(client)
    assert len(await source.fetch_alerts(datetime(2026, 4, 20, 10, 0))) == 1
    assert await source.fetch_alerts(datetime(2026, 4, 20, 11, 0)) == []


async def test_query_envelope_matches_documented_example(
    sim: CrowdStrikeSimulator, client: httpx.AsyncClient
) -> None:
    """Given a host, when queried by FQL hostname, then the envelope has the documented
    meta (with pagination), resources and errors keys."""
    aid = sim.add_host("WS-01")
    documented = operation("host_lookup", "GET", "/devices/queries/devices/v1")
    response = await client.get(
        "/devices/queries/devices/v1", params={"filter": "hostname:'WS-01'", "limit": 10}
    )
    assert response.status_code in documented["success"]
    body, example = response.json(), documented["example_response"]
    assert set(body) == set(example)
    assert set(body["meta"]) >= set(example["meta"])
    assert body["meta"]["pagination"] == {"offset": 0, "limit": 10, "total": 1}
    assert body["resources"] == [aid]
    assert body["errors"] == []
    assert "X-Ratelimit-Limit" in response.headers and "X-Ratelimit-Remaining" in response.headers


async def test_contain_body_matches_documented_example(
    sim: CrowdStrikeSimulator, client: httpx.AsyncClient
) -> None:
    """Given two hosts, one already contained, when both are contained in one request,
    then a single 202 carries the queued host in resources and a 409 for the other."""
    first, second = sim.add_host("A"), sim.add_host("B")
    url = "/devices/entities/devices-actions/v2"
    await client.post(url, params={"action_name": "contain"}, json={"ids": [second]})
    response = await client.post(
        url, params={"action_name": "contain"}, json={"ids": [first, second]}
    )
    documented = operation("contain", "POST", url)
    assert response.status_code in documented["success"]
    body = response.json()
    assert body["resources"] == [{"id": first, "path": ""}]
    assert [e["code"] for e in body["errors"]] == [409]
    assert second in body["errors"][0]["message"]
    assert set(body["resources"][0]) == set(documented["example_response"]["resources"][0])
