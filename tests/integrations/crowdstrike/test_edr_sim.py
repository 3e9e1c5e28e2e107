"""CrowdStrikeEDR against the simulator: lookup, containment state machine, hash IOCs."""

from __future__ import annotations

import httpx
import pytest

from integrations.capabilities import EDR, Containment
from integrations.crowdstrike import CrowdStrikeEDR, connect
from integrations.crowdstrike.sim import CrowdStrikeSimulator
from integrations.errors import NotFoundError, RejectedError

from .conftest import FakeClock, lab_settings, operation

HASH = "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea"


def statuses(sim: CrowdStrikeSimulator, method: str, path: str) -> list[int]:
    return [r.status for r in sim.requests if (r.method, r.path) == (method, path)]


async def test_edr_satisfies_protocol(edr: CrowdStrikeEDR) -> None:
    """Given the adapter, when checked against the EDR protocol, then it conforms."""
    assert isinstance(edr, EDR)
    assert edr.vendor == "crowdstrike"


async def test_find_host_returns_seeded_host(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR
) -> None:
    """Given a seeded host, when found by exact name, then its record maps onto Host."""
    aid = sim.add_host("WS-0042", platform="Windows", local_ip="10.1.2.3", external_ip="192.0.2.9")
    host = await edr.find_host("WS-0042")
    assert host is not None
    assert (host.id, host.hostname, host.platform) == (aid, "WS-0042", "Windows")
    assert (host.local_ip, host.external_ip) == ("10.1.2.3", "192.0.2.9")
    assert host.containment is Containment.NORMAL
    assert host.last_seen is not None


async def test_find_host_unknown_is_none(sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR) -> None:
    """Given no host of that name, when looked up, then the result is None."""
    sim.add_host("WS-0042")
    assert await edr.find_host("WS-9999") is None
    assert set(statuses(sim, "GET", "/devices/queries/devices/v1")) == {200}


async def test_find_host_tries_case_variants(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR
) -> None:
    """Given FQL's case-sensitive match, when a lower-case name is asked, then upper case is
    tried next and finds the host."""
    aid = sim.add_host("WS-0042")
    host = await edr.find_host("ws-0042")
    assert host is not None and host.id == aid
    assert len(statuses(sim, "GET", "/devices/queries/devices/v1")) == 2


async def test_find_host_with_quote_cannot_inject(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR
) -> None:
    """Given a host whose name holds a quote, when found, then the quoted literal matches it
    and an injection attempt matches nothing."""
    aid = sim.add_host("O'BRIEN-PC")
    odd = await edr.find_host("O'BRIEN-PC")
    assert odd is not None and odd.id == aid
    sim.add_host("WS-0042")
    # Unquoted, this would be `hostname:'nope',hostname:'WS-0042'` (an OR) and match.
    assert await edr.find_host("nope',hostname:'WS-0042") is None


async def test_get_host_unknown_raises_not_found(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR
) -> None:
    """Given an unknown AID, when fetched, then the per-id 404 in a 200 body is NotFoundError."""
    with pytest.raises(NotFoundError) as caught:
        await edr.get_host("0" * 32)
    assert caught.value.vendor_code == "404"
    documented = operation("host_lookup", "GET", "/devices/entities/devices/v2")["success"]
    assert statuses(sim, "GET", "/devices/entities/devices/v2") == documented


async def test_contain_settle_and_idempotent_repeat(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR, sim_clock: FakeClock
) -> None:
    """Given a normal host, when contained twice around the sensor's acknowledgement, then
    the first call queues (202, pending), the host settles to contained, and the second
    call is an unchanged success."""
    aid = sim.add_host("WS-0042")
    first = await edr.contain_host(aid, reason="case 7")
    assert (first.changed, first.state, first.verb) == (True, "containment_pending", "contain_host")
    assert first.detail["reason"] == "case 7"
    assert (await edr.get_host(aid)).containment is Containment.CONTAINMENT_PENDING

    again_while_pending = await edr.contain_host(aid, reason="case 7")
    assert (again_while_pending.changed, again_while_pending.state) == (
        False,
        "containment_pending",
    )

    sim_clock.advance(0.6)
    assert (await edr.get_host(aid)).containment is Containment.CONTAINED
    second = await edr.contain_host(aid, reason="case 7")
    assert (second.changed, second.state) == (False, "contained")
    documented = operation("contain", "POST", "/devices/entities/devices-actions/v2")["success"]
    assert set(statuses(sim, "POST", "/devices/entities/devices-actions/v2")) == set(documented)


async def test_release_contained_host(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR, sim_clock: FakeClock
) -> None:
    """Given a contained host, when released, then it goes through release_pending to normal
    and a second release changes nothing."""
    aid = sim.add_host("WS-0042")
    await edr.contain_host(aid, reason="r")
    sim_clock.advance(1)
    released = await edr.release_host(aid, reason="false positive")
    assert (released.changed, released.state, released.verb) == (
        True,
        "release_pending",
        "release_host",
    )
    assert sim.host_status(aid) == "lift_containment_pending"
    sim_clock.advance(1)
    assert (await edr.get_host(aid)).containment is Containment.NORMAL
    again = await edr.release_host(aid, reason="false positive")
    assert (again.changed, again.state) == (False, "normal")


async def test_contain_unknown_host_raises_not_found(edr: CrowdStrikeEDR) -> None:
    """Given an unknown AID, when contained, then the per-id 404 inside the 202 body is
    NotFoundError, not success."""
    with pytest.raises(NotFoundError):
        await edr.contain_host("f" * 32, reason="r")


async def test_block_and_unblock_hash_idempotent(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR
) -> None:
    """Given no IOC, when a hash is blocked twice and unblocked twice, then one prevent IOC
    exists after blocking and none after, and each repeat reports changed=False."""
    first = await edr.block_hash(HASH.upper(), reason="playbook ransomware-1")
    assert (first.changed, first.target, first.state) == (True, HASH, "blocked")
    (ioc,) = sim.iocs.values()
    assert (ioc["type"], ioc["value"], ioc["action"]) == ("sha256", HASH, "prevent")
    assert ioc["applied_globally"] is True and ioc["platforms"]
    assert first.vendor_request_id == ioc["id"]

    second = await edr.block_hash(HASH, reason="playbook ransomware-1")
    assert second.changed is False
    assert len(sim.iocs) == 1
    create = operation("ioc_create", "POST", "/iocs/entities/indicators/v1")
    # The duplicate was refused with a documented error status, then confirmed by search.
    assert statuses(sim, "POST", "/iocs/entities/indicators/v1") == [201, 400]
    assert 400 in create["errors"]

    removed = await edr.unblock_hash(HASH)
    assert (removed.changed, removed.state) == (True, "unblocked")
    assert sim.iocs == {}
    again = await edr.unblock_hash(HASH)
    assert again.changed is False


@pytest.mark.parametrize("status", [400, 409])
async def test_a_duplicate_hash_block_is_already_done_under_both_readings(
    sim_clock: FakeClock, status: int
) -> None:
    """Given Falcon refusing a duplicate IOC with 400 or with 409 (undocumented which),
    When a hash is blocked twice,
    Then the second block reports changed=False under both: the adapter looks the hash up
    instead of reading the error."""
    sim = CrowdStrikeSimulator(clock=sim_clock, duplicate_ioc_status=status)
    async with connect(lab_settings(), sim.transport()) as http:
        edr = CrowdStrikeEDR(http)
        assert (await edr.block_hash(HASH, reason="r")).changed is True
        assert (await edr.block_hash(HASH, reason="r")).changed is False
    assert statuses(sim, "POST", "/iocs/entities/indicators/v1") == [201, status]
    assert len(sim.iocs) == 1


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "a" * 63, "a" * 65, "a" * 32 + " " * 32])
async def test_bad_sha256_rejected_before_any_call(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR, bad: str
) -> None:
    """Given a malformed SHA-256, when blocked or unblocked, then RejectedError is raised
    and nothing is sent."""
    with pytest.raises(RejectedError):
        await edr.block_hash(bad, reason="r")
    with pytest.raises(RejectedError):
        await edr.unblock_hash(bad)
    assert sim.requests == []


async def test_block_hash_refuses_to_trust_an_allow_ioc(
    sim: CrowdStrikeSimulator, edr: CrowdStrikeEDR, client: httpx.AsyncClient
) -> None:
    """Given an existing "allow" IOC for the hash, when the hash is blocked, then the call is
    rejected instead of reporting it already blocked."""
    indicator = {
        "type": "sha256",
        "value": HASH,
        "action": "allow",
        "platforms": ["windows"],
        "applied_globally": True,
    }
    created = await client.post("/iocs/entities/indicators/v1", json={"indicators": [indicator]})
    assert created.status_code == 201
    with pytest.raises(RejectedError, match="allow"):
        await edr.block_hash(HASH, reason="r")
    assert [i["action"] for i in sim.iocs.values()] == ["allow"]
