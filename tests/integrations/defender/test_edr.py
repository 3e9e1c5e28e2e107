"""DefenderEDR against the Defender simulator: lookup, isolation, indicators, errors."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import httpx
import pytest
import respx
from pydantic import SecretStr

from integrations.capabilities import EDR, Containment
from integrations.defender import (
    DefenderClient,
    DefenderEDR,
    DefenderSettings,
    DefenderSimulator,
    connect,
)
from integrations.errors import (
    AuthError,
    NotFoundError,
    RateLimited,
    RejectedError,
    UnsupportedError,
    VendorTimeout,
    VendorUnavailable,
)

SHA256 = "a" * 63 + "b"
SHA1 = "3395856ce81f2b7382dee72602f798b642f14140"


def token_for(sim: DefenderSimulator) -> dict[str, str]:
    """An Authorization header the simulator accepts, for requests made outside the adapter."""
    sim.tokens["test-token"] = float("inf")
    return {"Authorization": "Bearer test-token"}


class RacingTransport(httpx.AsyncBaseTransport):
    """Lets another analyst isolate the machine just before the adapter's own isolate."""

    def __init__(self, sim: DefenderSimulator) -> None:
        self.sim = sim
        self.inner = sim.transport()
        self.raced = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/isolate") and not self.raced:
            self.raced = True
            rival = httpx.Request(
                "POST",
                request.url,
                json={"Comment": "another analyst", "IsolationType": "Full"},
                headers=token_for(self.sim),
            )
            response = await self.inner.handle_async_request(rival)
            await response.aread()
            assert response.status_code == 201
        return await self.inner.handle_async_request(request)


def isolations(sim: DefenderSimulator, machine_id: str) -> list[str]:
    return [
        a.id for a in sim.actions.values() if a.machine_id == machine_id and a.type == "Isolate"
    ]


async def test_adapter_implements_the_edr_protocol(edr: DefenderEDR) -> None:
    """Given the Defender adapter, When checked against the EDR protocol, Then it conforms."""
    assert isinstance(edr, EDR)
    assert edr.vendor == "defender"


async def test_find_host_by_dns_name(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given an onboarded machine, When found by name in any case, Then its fields map to Host."""
    machine_id = sim.add_host("WS-01.contoso.com", local_ip="10.0.0.5", external_ip="203.0.113.9")
    sim.add_host("ws-02.contoso.com")

    host = await edr.find_host("WS-01.contoso.com")

    assert host is not None
    assert host.id == machine_id
    assert host.hostname == "ws-01.contoso.com"
    assert host.platform == "Windows10"
    assert (host.local_ip, host.external_ip) == ("10.0.0.5", "203.0.113.9")
    assert host.containment is Containment.NORMAL


async def test_find_host_escapes_quotes_for_odata(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given a name with a quote, When found, Then the OData literal is escaped and it matches."""
    machine_id = sim.add_host("o'brien-pc")

    host = await edr.find_host("o'brien-pc")

    assert host is not None and host.id == machine_id
    assert await edr.find_host("o'") is None


async def test_find_host_unknown_or_empty_tenant_is_none(
    sim: DefenderSimulator, edr: DefenderEDR
) -> None:
    """Given no machines (MDE answers 404) and then one, When an unknown name is looked up,
    Then the result is None both times."""
    assert await edr.find_host("ghost") is None
    assert sim.requests[-1].status == 404
    sim.add_host("ws-01")
    assert await edr.find_host("ghost") is None


async def test_get_host_unknown_raises_not_found(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given no such machine, When get_host is called, Then NotFoundError carries MDE's code."""
    sim.add_host("ws-01")
    with pytest.raises(NotFoundError) as info:
        await edr.get_host("0" * 40)
    assert info.value.vendor_code == "ResourceNotFound"


async def test_contain_twice_second_is_unchanged(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given a normal machine, When contained twice, Then the first isolates and waits for
    Succeeded, and the second reports changed=False without a new action."""
    machine_id = sim.add_host("ws-01")

    first = await edr.contain_host(machine_id, reason="alert 1234")
    second = await edr.contain_host(machine_id, reason="alert 1234")

    assert first.changed is True
    assert first.state == Containment.CONTAINED
    assert first.vendor_request_id == isolations(sim, machine_id)[0]
    assert first.detail["action_status"] == "Succeeded"
    assert second.changed is False
    assert second.state == Containment.CONTAINED
    assert len(isolations(sim, machine_id)) == 1
    assert sim.is_isolated(machine_id)
    assert (await edr.get_host(machine_id)).containment is Containment.CONTAINED


async def test_contain_reports_pending_then_state_settles(
    settings: DefenderSettings,
) -> None:
    """Given a slow action and a polling budget shorter than it, When contained, Then the
    receipt says containment_pending, and the host reads contained once the action settles."""
    sim = DefenderSimulator(settle_seconds=0.4)
    machine_id = sim.add_host("ws-01")
    short = settings.model_copy(update={"action_timeout_seconds": 0.05})
    async with connect(short, transport=sim.transport()) as client:
        edr = DefenderEDR(client)
        receipt = await edr.contain_host(machine_id, reason="alert")
        assert receipt.changed is True
        assert receipt.state == Containment.CONTAINMENT_PENDING
        assert (await edr.get_host(machine_id)).containment is Containment.CONTAINMENT_PENDING
        await asyncio.sleep(0.45)
        assert (await edr.get_host(machine_id)).containment is Containment.CONTAINED


async def test_polling_settings_travel_with_the_client(settings: DefenderSettings) -> None:
    """Given action_timeout_seconds=0 in settings, When contained, Then the adapter does not
    poll the action at all (the settings reached it through the client)."""
    sim = DefenderSimulator(settle_seconds=0.4)
    machine_id = sim.add_host("ws-01")
    no_wait = settings.model_copy(update={"action_timeout_seconds": 0.0})
    async with connect(no_wait, transport=sim.transport()) as client:
        receipt = await DefenderEDR(client).contain_host(machine_id, reason="alert")
    assert receipt.state == Containment.CONTAINMENT_PENDING
    assert not [r for r in sim.requests if r.route == "/api/machineactions/{id}"]


async def test_release_after_contain(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given a contained machine, When released twice, Then the first unisolates and the
    second is unchanged."""
    machine_id = sim.add_host("ws-01")
    await edr.contain_host(machine_id, reason="alert")

    first = await edr.release_host(machine_id, reason="clean")
    second = await edr.release_host(machine_id, reason="clean")

    assert (first.changed, first.state) == (True, Containment.NORMAL)
    assert first.detail["action_type"] == "Unisolate"
    assert (second.changed, second.state) == (False, Containment.NORMAL)
    assert not sim.is_isolated(machine_id)


async def test_release_never_contained_is_unchanged(
    sim: DefenderSimulator, edr: DefenderEDR
) -> None:
    """Given a machine never isolated, When released, Then nothing is sent and changed=False."""
    machine_id = sim.add_host("ws-01")
    receipt = await edr.release_host(machine_id, reason="clean")
    assert (receipt.changed, receipt.state) == (False, Containment.NORMAL)
    assert not sim.actions


async def test_isolate_in_flight_is_adopted_not_repeated(
    sim: DefenderSimulator, edr: DefenderEDR
) -> None:
    """Given another analyst's isolation still pending, When contained, Then the adapter polls
    that action to completion instead of sending a second isolate."""
    machine_id = sim.add_host("ws-01")
    sim.set_offline(machine_id)
    async with sim.client(headers=token_for(sim)) as other:
        rival = await other.post(f"/api/machines/{machine_id}/isolate", json={"Comment": "x"})
    sim.set_offline(machine_id, False)

    receipt = await edr.contain_host(machine_id, reason="alert")

    assert receipt.changed is False
    assert receipt.state == Containment.CONTAINED
    assert receipt.vendor_request_id == rival.json()["id"]
    assert isolations(sim, machine_id) == [rival.json()["id"]]


@pytest.mark.parametrize("duplicate", ["refused", "returned"])
async def test_active_request_already_exists_is_polled(
    settings: DefenderSettings, duplicate: Literal["refused", "returned"]
) -> None:
    """Given a rival isolation sent between the adapter's read and its write, When MDE
    answers 400 ActiveRequestAlreadyExists or (the other documented answer) returns the
    pending rival action, Then under both the adapter polls the rival action to Succeeded
    and does not claim it as its own (changed=False)."""
    sim = DefenderSimulator(settle_seconds=0.2, duplicate_action=duplicate)
    machine_id = sim.add_host("ws-01")
    transport = RacingTransport(sim)
    async with connect(settings, transport=transport) as client:
        receipt = await DefenderEDR(client).contain_host(machine_id, reason="alert")

    assert transport.raced
    refused = [r for r in sim.requests if r.route == "/api/machines/{id}/isolate"]
    assert [r.status for r in refused] == [201, 400 if duplicate == "refused" else 201]
    assert receipt.changed is False
    assert receipt.state == Containment.CONTAINED
    assert receipt.vendor_request_id == isolations(sim, machine_id)[0]
    assert len(isolations(sim, machine_id)) == 1


async def test_simulator_refuses_duplicate_isolation(sim: DefenderSimulator) -> None:
    """Given a pending isolation, When isolate is requested again, Then the simulator answers
    400 ActiveRequestAlreadyExists in MDE's error envelope."""
    machine_id = sim.add_host("ws-01")
    sim.set_offline(machine_id)
    async with sim.client(headers=token_for(sim)) as http:
        first = await http.post(f"/api/machines/{machine_id}/isolate", json={"Comment": "a"})
        second = await http.post(f"/api/machines/{machine_id}/isolate", json={"Comment": "b"})
    assert first.status_code == 201 and first.json()["status"] == "Pending"
    assert second.status_code == 400
    assert second.json()["error"]["code"] == "ActiveRequestAlreadyExists"


@pytest.mark.parametrize(
    "body",
    [{"comment": "lower-case key"}, {"Comment": "x", "isolationType": "Full"}],
)
async def test_simulator_body_keys_are_case_sensitive(
    sim: DefenderSimulator, body: dict[str, str]
) -> None:
    """Given a body with a wrong-case key, When isolate is requested, Then MDE's 400 is given."""
    machine_id = sim.add_host("ws-01")
    async with sim.client(headers=token_for(sim)) as http:
        response = await http.post(f"/api/machines/{machine_id}/isolate", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("InvalidRequestBody", "MissingRequiredParameter")
    assert not sim.actions


async def test_contain_and_release_send_exact_pascal_case_bodies(
    settings: DefenderSettings,
) -> None:
    """Given MDE's case-sensitive body parameters, When contain and release run, Then the
    JSON bodies are exactly {"Comment", "IsolationType"} and {"Comment"}."""
    base, login = settings.base_url, settings.login_url
    action = {"id": "act-1", "type": "Isolate", "status": "Succeeded", "machineId": "m1"}
    with respx.mock(assert_all_called=True) as mock:
        mock.post(f"{login}/{settings.tenant_id}/oauth2/v2.0/token").respond(
            200, json={"access_token": "t", "expires_in": 3599, "token_type": "Bearer"}
        )
        none, isolated = httpx.Response(200, json={"value": []}), {"value": [action]}
        # contain reads Isolate then Unisolate lists (both empty); release sees the isolation.
        mock.get(f"{base}/api/machineactions").mock(
            side_effect=[none, none, httpx.Response(200, json=isolated), none]
        )
        isolate = mock.post(f"{base}/api/machines/m1/isolate").respond(
            201, json={**action, "status": "Pending"}
        )
        unisolate = mock.post(f"{base}/api/machines/m1/unisolate").respond(
            201, json={**action, "id": "act-2", "type": "Unisolate", "status": "Pending"}
        )
        mock.get(f"{base}/api/machineactions/act-1").respond(200, json=action)
        mock.get(f"{base}/api/machineactions/act-2").respond(
            200, json={**action, "id": "act-2", "type": "Unisolate"}
        )
        async with connect(settings) as client:
            edr = DefenderEDR(client, isolation_type="Selective")
            await edr.contain_host("m1", reason="alert 1234")
            await edr.release_host("m1", reason="clean")

    assert json.loads(isolate.calls.last.request.content) == {
        "Comment": "alert 1234",
        "IsolationType": "Selective",
    }
    assert json.loads(unisolate.calls.last.request.content) == {"Comment": "clean"}
    assert isolate.calls.last.request.headers["Authorization"] == "Bearer t"


async def test_cancelled_action_leaves_host_normal(
    sim: DefenderSimulator, settings: DefenderSettings
) -> None:
    """Given an isolation cancelled before it ran, When the host is read, Then it is normal,
    and a new contain sends a fresh isolate."""
    machine_id = sim.add_host("ws-01")
    sim.set_offline(machine_id)
    quick = settings.model_copy(update={"action_timeout_seconds": 0.02})
    async with connect(quick, transport=sim.transport()) as client:
        edr = DefenderEDR(client)
        pending = await edr.contain_host(machine_id, reason="alert")
        assert pending.state == Containment.CONTAINMENT_PENDING
        async with sim.client(headers=token_for(sim)) as http:
            cancel = await http.post(
                f"/api/machineactions/{pending.vendor_request_id}/cancel", json={"Comment": "no"}
            )
        assert cancel.json()["status"] == "Cancelled"
        assert (await edr.get_host(machine_id)).containment is Containment.NORMAL
        sim.set_offline(machine_id, False)
        again = await DefenderEDR(client, action_timeout_seconds=2).contain_host(
            machine_id, reason="alert"
        )
    assert (again.changed, again.state) == (True, Containment.CONTAINED)
    assert len(isolations(sim, machine_id)) == 2


async def test_block_and_unblock_hash_are_idempotent(
    sim: DefenderSimulator, edr: DefenderEDR
) -> None:
    """Given no indicator, When a hash is blocked twice and unblocked twice, Then one
    FileSha256 BlockAndRemediate indicator is created, then removed, and repeats are
    unchanged."""
    first = await edr.block_hash(SHA256.upper(), reason="malware")
    second = await edr.block_hash(SHA256, reason="malware")

    assert (first.changed, second.changed) == (True, False)
    assert first.vendor_request_id == second.vendor_request_id
    (indicator,) = sim.indicators.values()
    assert indicator["indicatorValue"] == SHA256
    assert indicator["indicatorType"] == "FileSha256"
    assert indicator["action"] == "BlockAndRemediate"
    assert indicator["description"] == "malware"

    removed = await edr.unblock_hash(SHA256)
    again = await edr.unblock_hash(SHA256)
    assert (removed.changed, again.changed) == (True, False)
    assert removed.vendor_request_id == first.vendor_request_id
    assert not sim.indicators


async def test_block_hash_rejects_non_sha256_before_sending(
    sim: DefenderSimulator, edr: DefenderEDR
) -> None:
    """Given a SHA-1, When block_hash is called, Then RejectedError and no request is sent."""
    with pytest.raises(RejectedError):
        await edr.block_hash(SHA1, reason="x")
    assert sim.requests == []


async def test_quarantine_file_by_sha1(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given a machine, When a SHA-1 is quarantined, Then a StopAndQuarantineFile action with
    that hash runs to Succeeded; a SHA-256 is refused as unsupported."""
    machine_id = sim.add_host("ws-01")
    receipt = await edr.quarantine_file(machine_id, SHA1, reason="alert")
    assert (receipt.changed, receipt.state) == (True, "succeeded")
    action = sim.actions[str(receipt.vendor_request_id)]
    assert action.type == "StopAndQuarantineFile"
    assert action.related_file == {"fileIdentifier": SHA1, "fileIdentifierType": "Sha1"}
    with pytest.raises(UnsupportedError):
        await edr.quarantine_file(machine_id, SHA256, reason="alert")


async def test_run_scan_starts_an_action(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given a machine, When a scan is started twice quickly, Then one scan action exists and
    the second call reports it unchanged."""
    machine_id = sim.add_host("ws-01")
    sim.set_offline(machine_id)
    first = await edr.run_scan(machine_id)
    second = await edr.run_scan(machine_id, full=True)
    assert (first.changed, first.state) == (True, "pending")
    assert (second.changed, second.vendor_request_id) == (False, first.vendor_request_id)
    assert sim.actions[str(first.vendor_request_id)].scope == "Quick"


# Auth and transport failures ------------------------------------------------------------
async def test_token_is_fetched_once_for_concurrent_callers(
    sim: DefenderSimulator, client: DefenderClient, edr: DefenderEDR
) -> None:
    """Given a fresh client, When five lookups run at once, Then one token is fetched."""
    machine_id = sim.add_host("ws-01")
    hosts = await asyncio.gather(*(edr.get_host(machine_id) for _ in range(5)))
    assert {h.id for h in hosts} == {machine_id}
    assert client.token_cache.fetches == 1
    assert len([r for r in sim.requests if r.route == "/{tenantId}/oauth2/v2.0/token"]) == 1


async def test_revoked_token_is_refreshed_once(
    sim: DefenderSimulator, client: DefenderClient, edr: DefenderEDR
) -> None:
    """Given a token the API stops accepting, When called, Then a new token is fetched and the
    call succeeds."""
    machine_id = sim.add_host("ws-01")
    await edr.get_host(machine_id)
    sim.revoke_tokens()
    assert (await edr.get_host(machine_id)).id == machine_id
    assert client.token_cache.fetches == 2


@pytest.mark.parametrize(
    "update",
    [
        {"client_secret": SecretStr("wrong")},
        {"client_id": "someone-else"},
        {"tenant_id": "00000000-0000-0000-0000-000000000000"},
    ],
)
async def test_bad_credentials_raise_auth_error(
    sim: DefenderSimulator, settings: DefenderSettings, update: dict[str, object]
) -> None:
    """Given wrong credentials, When any call is made, Then AuthError (never a retryable error)."""
    sim.add_host("ws-01")
    bad = settings.model_copy(update=update)
    async with connect(bad, transport=sim.transport()) as client:
        with pytest.raises(AuthError):
            await DefenderEDR(client).find_host("ws-01")
    assert not [r for r in sim.requests if r.path.startswith("/api/")]


async def test_rate_limit_raises_rate_limited_with_retry_after(settings: DefenderSettings) -> None:
    """Given a limit of two calls a minute, When a third call is made, Then RateLimited
    carries the simulator's Retry-After seconds."""
    sim = DefenderSimulator(rate_limit_per_minute=2)
    machine_id = sim.add_host("ws-01")
    async with connect(settings, transport=sim.transport()) as client:
        edr = DefenderEDR(client)
        with pytest.raises(RateLimited) as info:
            await edr.get_host(machine_id)  # machine + two action lists = three calls
    assert info.value.vendor_code == "TooManyRequests"
    assert info.value.retry_after is not None and 1 <= info.value.retry_after <= 60
    limited = sim.requests[-1]
    assert limited.status == 429


async def test_retry_after_header_is_honoured(sim: DefenderSimulator, edr: DefenderEDR) -> None:
    """Given a 429 with Retry-After: 7, When called, Then RateLimited.retry_after == 7."""
    sim.add_host("ws-01")
    sim.fail_next(status=429, headers={"Retry-After": "7"}, path_prefix="/api/")
    with pytest.raises(RateLimited) as info:
        await edr.find_host("ws-01")
    assert info.value.retry_after == 7


async def test_server_error_raises_vendor_unavailable(
    sim: DefenderSimulator, edr: DefenderEDR
) -> None:
    """Given a 503 with MDE's envelope, When called, Then VendorUnavailable with its code."""
    sim.add_host("ws-01")
    body = json.dumps({"error": {"code": "InternalServerError", "message": "boom"}}).encode()
    sim.fail_next(status=503, body=body, path_prefix="/api/")
    with pytest.raises(VendorUnavailable) as info:
        await edr.find_host("ws-01")
    assert info.value.vendor_code == "InternalServerError"


async def test_hang_with_short_timeout_raises_vendor_timeout(
    sim: DefenderSimulator, settings: DefenderSettings
) -> None:
    """Given an API that hangs, When the client timeout is short, Then VendorTimeout."""
    sim.add_host("ws-01")
    sim.hang_next(seconds=5, path_prefix="/api/")
    fast = settings.model_copy(update={"timeout_seconds": 0.1})
    async with connect(fast, transport=sim.transport()) as client:
        with pytest.raises(VendorTimeout):
            await DefenderEDR(client).find_host("ws-01")
