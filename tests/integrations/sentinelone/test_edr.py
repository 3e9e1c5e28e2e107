"""SentinelOneEDR against the S1 simulator: lookup, network quarantine, blocklist, errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import respx
from pydantic import SecretStr

from integrations.capabilities import EDR, Containment
from integrations.errors import (
    AuthError,
    NotFoundError,
    RateLimited,
    RejectedError,
    VendorTimeout,
    VendorUnavailable,
)
from integrations.sentinelone import (
    SentinelOneEDR,
    SentinelOneSettings,
    SentinelOneSimulator,
    connect,
    id_filter,
)

SHA1 = "3395856ce81f2b7382dee72602f798b642f14140"
SHA256 = "e" * 64
ACTIONS = ("/web/api/v2.1/agents/actions/disconnect", "/web/api/v2.1/agents/actions/connect")


def action_requests(sim: SentinelOneSimulator) -> list[str]:
    return [r.path for r in sim.requests if r.path in ACTIONS]


async def test_adapter_implements_the_edr_protocol(edr: SentinelOneEDR) -> None:
    """Given the S1 adapter, When checked against the EDR protocol, Then it conforms."""
    assert isinstance(edr, EDR)
    assert edr.vendor == "sentinelone"


async def test_find_and_get_host(sim: SentinelOneSimulator, edr: SentinelOneEDR) -> None:
    """Given registered agents, When found by exact name, Then the right agent maps to Host;
    a name that only contains the wanted one does not match."""
    agent_id = sim.add_host("WS-01", local_ip="10.0.0.5", external_ip="203.0.113.9")
    sim.add_host("WS-010")

    host = await edr.find_host("ws-01")
    assert host is not None
    assert host.id == agent_id
    assert host.hostname == "WS-01"
    assert (host.platform, host.os_version) == ("windows", "Windows 11")
    assert (host.local_ip, host.external_ip) == ("10.0.0.5", "203.0.113.9")
    assert host.containment is Containment.NORMAL
    assert await edr.get_host(agent_id) == host
    assert await edr.find_host("WS-0") is None


async def test_find_host_prefers_the_live_agent(
    sim: SentinelOneSimulator, edr: SentinelOneEDR
) -> None:
    """Given a decommissioned agent and a live one with the same name, When found, Then the
    live agent wins."""
    old = sim.add_host("WS-01")
    sim.agents[old]["isDecommissioned"] = True
    live = sim.add_host("WS-01")
    host = await edr.find_host("WS-01")
    assert host is not None and host.id == live


async def test_get_host_unknown_raises_not_found(
    sim: SentinelOneSimulator, edr: SentinelOneEDR
) -> None:
    """Given no such agent, When get_host is called, Then NotFoundError."""
    sim.add_host("WS-01")
    with pytest.raises(NotFoundError):
        await edr.get_host("123456789012345678")


@pytest.mark.parametrize(
    "status",
    [
        ("connected", Containment.NORMAL),
        ("connecting", Containment.RELEASE_PENDING),
        ("disconnecting", Containment.CONTAINMENT_PENDING),
        ("disconnected", Containment.CONTAINED),
    ],
)
async def test_network_status_maps_to_containment(
    sim: SentinelOneSimulator, edr: SentinelOneEDR, status: tuple[str, Containment]
) -> None:
    """Given each documented networkStatus, When the host is read, Then containment maps."""
    agent_id = sim.add_host("WS-01")
    sim.agents[agent_id]["networkStatus"] = status[0]
    assert (await edr.get_host(agent_id)).containment is status[1]


async def test_contain_twice_then_settles(sim: SentinelOneSimulator, edr: SentinelOneEDR) -> None:
    """Given a connected agent, When contained twice, Then one disconnect is sent, the
    second call is unchanged, and the agent settles to disconnected."""
    agent_id = sim.add_host("WS-01")

    first = await edr.contain_host(agent_id, reason="alert")
    second = await edr.contain_host(agent_id, reason="alert")

    assert (first.changed, first.state) == (True, Containment.CONTAINMENT_PENDING)
    assert first.detail["network_status_before"] == "connected"
    assert (second.changed, second.state) == (False, Containment.CONTAINMENT_PENDING)
    assert action_requests(sim) == [ACTIONS[0]]
    await asyncio.sleep(0.06)
    assert (await edr.get_host(agent_id)).containment is Containment.CONTAINED
    third = await edr.contain_host(agent_id, reason="alert")
    assert (third.changed, third.state) == (False, Containment.CONTAINED)


async def test_release_after_contain(sim: SentinelOneSimulator, edr: SentinelOneEDR) -> None:
    """Given a disconnected agent, When released twice, Then one connect is sent and the
    agent settles to connected."""
    agent_id = sim.add_host("WS-01")
    sim.agents[agent_id]["networkStatus"] = "disconnected"

    first = await edr.release_host(agent_id, reason="clean")
    second = await edr.release_host(agent_id, reason="clean")

    assert (first.changed, first.state) == (True, Containment.RELEASE_PENDING)
    assert second.changed is False
    assert action_requests(sim) == [ACTIONS[1]]
    await asyncio.sleep(0.06)
    assert sim.network_status(agent_id) == "connected"


async def test_contain_sends_an_explicit_id_filter(settings: SentinelOneSettings) -> None:
    """Given S1's filter-selected actions, When contained, Then the body names exactly the
    agent id, and the ApiToken header is sent."""
    base = settings.base_url
    agent = {"id": "657613730168123595", "computerName": "WS-01", "networkStatus": "connected"}
    with respx.mock(assert_all_called=True) as mock:
        mock.get(f"{base}/web/api/v2.1/agents").respond(200, json={"data": [agent]})
        route = mock.post(f"{base}/web/api/v2.1/agents/actions/disconnect").respond(
            200, json={"data": {"affected": 1}}
        )
        async with connect(settings) as client:
            await SentinelOneEDR(client).contain_host(agent["id"], reason="alert")
    request = route.calls.last.request
    assert json.loads(request.content) == {"filter": {"ids": [agent["id"]]}, "data": {}}
    assert request.headers["Authorization"] == f"ApiToken {SentinelOneSimulator.api_token}"


@pytest.mark.parametrize("host_id", ["", " ", "1,2", "12 34"])
async def test_empty_or_multi_id_filter_is_refused_before_sending(
    sim: SentinelOneSimulator, edr: SentinelOneEDR, host_id: str
) -> None:
    """Given an id that would widen the filter (empty selects every agent), When contained or
    released, Then RejectedError and nothing is sent; no agent changes state."""
    agents = [sim.add_host("WS-01"), sim.add_host("WS-02")]
    with pytest.raises(RejectedError):
        await edr.contain_host(host_id, reason="alert")
    with pytest.raises(RejectedError):
        await edr.release_host(host_id, reason="alert")
    assert sim.requests == []
    assert [sim.network_status(a) for a in agents] == ["connected", "connected"]


def test_id_filter_refuses_an_empty_list() -> None:
    """Given no ids, When a filter is built, Then it is refused."""
    with pytest.raises(RejectedError):
        id_filter([])
    assert id_filter(["1", "2"]) == {"ids": ["1", "2"]}


async def test_simulator_empty_filter_acts_on_every_agent(sim: SentinelOneSimulator) -> None:
    """Given the documented danger, When the simulator gets an empty filter, Then it
    disconnects every agent (which is why the adapter refuses one)."""
    agents = [sim.add_host("WS-01"), sim.add_host("WS-02")]
    headers = {"Authorization": f"ApiToken {sim.api_token}"}
    async with sim.client(headers=headers) as http:
        response = await http.post(
            "/web/api/v2.1/agents/actions/disconnect", json={"filter": {}, "data": {}}
        )
    assert response.json() == {"data": {"affected": 2}}
    assert {sim.network_status(a) for a in agents} == {"disconnecting"}


async def test_block_and_unblock_hash_are_idempotent(
    sim: SentinelOneSimulator, edr: SentinelOneEDR
) -> None:
    """Given an empty blocklist, When a hash is blocked twice and unblocked twice, Then one
    tenant-wide black_hash item per OS is created, then removed; repeats are unchanged."""
    first = await edr.block_hash(SHA256.upper(), reason="malware")
    second = await edr.block_hash(SHA256, reason="malware")

    assert (first.changed, second.changed) == (True, False)
    items = list(sim.blocklist.values())
    assert sorted(i["osType"] for i in items) == ["linux", "macos", "windows"]
    assert {(i["type"], i["value"], i["description"]) for i in items} == {
        ("black_hash", SHA256, "malware")
    }
    assert all(i["scope"] == {"tenant": True} for i in items)
    assert set(second.detail["ids"].split(",")) == set(sim.blocklist)

    removed = await edr.unblock_hash(SHA256)
    again = await edr.unblock_hash(SHA256)
    assert (removed.changed, again.changed) == (True, False)
    assert sim.blocklist == {}


async def test_block_hash_fills_in_missing_os_types(
    sim: SentinelOneSimulator, client: httpx.AsyncClient, edr: SentinelOneEDR
) -> None:
    """Given a SHA-1 blocked on Windows only, When blocked, Then only macOS and Linux are added."""
    await SentinelOneEDR(client, blocklist_os_types=("windows",)).block_hash(SHA1, reason="x")
    receipt = await edr.block_hash(SHA1, reason="x")
    assert receipt.changed is True
    assert len(receipt.detail["ids"].split(",")) == 2
    assert len(sim.blocklist) == 3


async def test_block_hash_rejects_a_non_hash(
    sim: SentinelOneSimulator, edr: SentinelOneEDR
) -> None:
    """Given a value that is not a hex digest, When blocked, Then RejectedError, nothing sent."""
    with pytest.raises(RejectedError):
        await edr.block_hash("not-a-hash", reason="x")
    assert sim.requests == []


async def test_quarantine_and_kill_act_on_the_agents_threat(
    sim: SentinelOneSimulator, edr: SentinelOneEDR
) -> None:
    """Given a threat for a file on an agent, When quarantined and killed, Then mitigate is
    sent for that threat id only; a file with no threat raises NotFoundError."""
    agent_id = sim.add_host("WS-01")
    mine = sim.add_threat(
        {"threatInfo": {"sha1": SHA1}, "agentRealtimeInfo": {"agentId": agent_id}}
    )
    sim.add_threat({"threatInfo": {"sha1": SHA1}, "agentRealtimeInfo": {"agentId": "other"}})

    quarantined = await edr.quarantine_file(agent_id, SHA1, reason="alert")
    killed = await edr.kill_process(agent_id, SHA1, reason="alert")

    assert (quarantined.changed, quarantined.vendor_request_id) == (True, mine)
    assert killed.detail == {"threat_ids": mine, "affected": "1"}
    threat = next(t for t in sim.threats if t["id"] == mine)
    assert [m["action"] for m in threat["mitigationStatus"]] == ["quarantine", "kill"]
    with pytest.raises(NotFoundError):
        await edr.quarantine_file(agent_id, SHA256, reason="alert")


# Auth and transport failures ------------------------------------------------------------
async def test_bad_token_raises_auth_error(
    sim: SentinelOneSimulator, settings: SentinelOneSettings
) -> None:
    """Given a wrong API token, When called, Then AuthError with S1's error code."""
    sim.add_host("WS-01")
    bad = settings.model_copy(update={"api_token": SecretStr("wrong")})
    async with connect(bad, transport=sim.transport()) as client:
        with pytest.raises(AuthError) as info:
            await SentinelOneEDR(client).find_host("WS-01")
    assert (info.value.status_code, info.value.vendor_code) == (401, "4010010")


async def test_rate_limit_raises_rate_limited(settings: SentinelOneSettings) -> None:
    """Given a limit of one call a minute, When a second call is made, Then RateLimited
    (S1 sends no Retry-After, so retry_after is None)."""
    sim = SentinelOneSimulator(rate_limit_per_minute=1)
    agent_id = sim.add_host("WS-01")
    async with connect(settings, transport=sim.transport()) as client:
        edr = SentinelOneEDR(client)
        await edr.get_host(agent_id)
        with pytest.raises(RateLimited) as info:
            await edr.get_host(agent_id)
    assert info.value.retry_after is None
    assert info.value.vendor_code == "4290010"


async def test_retry_after_header_is_honoured(
    sim: SentinelOneSimulator, edr: SentinelOneEDR
) -> None:
    """Given a 429 carrying Retry-After: 12, When called, Then retry_after == 12."""
    sim.fail_next(status=429, headers={"Retry-After": "12"})
    with pytest.raises(RateLimited) as info:
        await edr.find_host("WS-01")
    assert info.value.retry_after == 12


async def test_server_error_raises_vendor_unavailable(
    sim: SentinelOneSimulator, edr: SentinelOneEDR
) -> None:
    """Given a 502 in S1's envelope, When called, Then VendorUnavailable with its message."""
    body = json.dumps({"errors": [{"code": 5000010, "title": "Server Error", "detail": None}]})
    sim.fail_next(status=502, body=body.encode())
    with pytest.raises(VendorUnavailable) as info:
        await edr.find_host("WS-01")
    assert info.value.vendor_code == "5000010"
    assert "Server Error" in str(info.value)


async def test_hang_with_short_timeout_raises_vendor_timeout(
    sim: SentinelOneSimulator, settings: SentinelOneSettings
) -> None:
    """Given a console that hangs, When the client timeout is short, Then VendorTimeout."""
    sim.hang_next(seconds=5)
    fast = settings.model_copy(update={"timeout_seconds": 0.1})
    async with connect(fast, transport=sim.transport()) as client:
        with pytest.raises(VendorTimeout):
            await SentinelOneEDR(client).find_host("WS-01")
