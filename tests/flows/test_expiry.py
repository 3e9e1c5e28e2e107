"""TTL expiry: expired blocks are lifted once, renewed or unexpired ones are left alone.

Real store (SQLite in a temp dir), the real execute-action task on the session's Prefect
server, and the FortiGate lab simulator with a clock the test moves; the sweep's own
clock is the ``now`` it is given.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from flows.models import ActionPlan, ActionResult, ActionStatus, Stage, Verdict, utcnow
from flows.record import Ledger, Store, open_store
from flows.respond import EXPIRY_AUTHORITY, Expiry, expire_due, inverse_plans, undo_incident
from flows.respond.expiry import expiring
from flows.settings import StanchSettings, load_settings
from flows.tasks import execute_action
from flows.wiring import connect, default_lab
from integrations.capabilities import Capability
from integrations.fortigate.sim import FortiGateSimulator
from tests.flows import factories

pytestmark = pytest.mark.usefixtures("prefect_server")

IP = "203.0.113.9"
CLEAR = "/api/v2/monitor/user/banned/clear_users"
_numbers = itertools.count(7000)


@dataclass
class Device:
    """The lab FortiGate and the offset of its clock from real time."""

    sim: FortiGateSimulator
    offset: float = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def clears(self) -> int:
        """``clear_users`` calls that reached the device (the mutating unblock)."""
        return sum(1 for r in self.sim.requests if r.method == "POST" and r.path == CLEAR)

    def banned(self) -> bool:
        return IP in self.sim.table()


@pytest.fixture
def device() -> Iterator[Device]:
    """The process-wide lab with a FortiGate whose clock the test can move."""
    lab = default_lab()
    lab.reset()
    moved = Device(FortiGateSimulator(clock=lambda: time.time() + moved.offset))
    lab.simulators["fortigate"] = moved.sim
    yield moved
    lab.reset()


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    """A store of this test's own, also the one the flows open (so no other test's blocks
    are swept)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'stanch.db'}"
    monkeypatch.setenv("STANCH_DATABASE_URL", url)
    async with open_store(url) as opened:
        yield opened


@pytest.fixture
def settings(store: Store) -> StanchSettings:
    return load_settings()


async def block(
    store: Store,
    settings: StanchSettings,
    *,
    ttl: int | None,
    tenant: str = "demo",
    ip: str = IP,
) -> ActionResult:
    """An incident of its own, stored, whose approved block of ``ip`` ran on the device."""
    incident = factories.incident(next(_numbers), tenant=tenant)
    await store.save_incident(incident)
    plan = ActionPlan(
        tenant=tenant,
        incident_id=incident.id,
        capability=Capability.FIREWALL,
        verb="block_ip",
        target=ip,
        target_label=ip,
        parameters={"ttl_seconds": ttl, "reason": f"stanch {incident.id}: C2"},
        stage=Stage.CONTAIN,
    )
    async with connect(settings, tenant=tenant) as integrations:
        return await execute_action.fn(
            plan,
            plan.sha256,
            integrations.firewall,
            store,
            verdict=Verdict.APPROVAL,
            approved_by=["cli:alice"],
        )


async def sweep(store: Store, settings: StanchSettings, **options: Any) -> list[Expiry]:
    """One expiry pass inside a flow run, as the sweep flow makes it (a task run that
    fails outside a flow run has nowhere to send its logs)."""

    @flow(name="expiry-pass")
    async def expiry_pass() -> list[Expiry]:
        return await expire_due(store, settings, **options)

    return await expiry_pass()


def after(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


async def in_effect(store: Store, incident_id: str) -> list[str]:
    return [e.entry.action or "" for e in await Ledger(store).in_effect(incident_id)]


# expiry ------------------------------------------------------------------------------------
async def test_an_expired_block_is_lifted_once_under_the_expiry_authority(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a 1 h block executed on the FortiGate,
    When the sweep runs an hour and a second later, and then again,
    Then the first pass lifts it with one clear_users call, recorded in the store and the
    ledger as executed by the expiry's authority, the ledger no longer shows it in effect
    and undo finds nothing to do; the second pass sends no request at all."""
    blocked = await block(store, settings, ttl=3600)
    incident_id = blocked.plan.incident_id
    assert blocked.status == ActionStatus.EXECUTED and device.banned()

    expired = await sweep(store, settings, now=after(3601))

    assert [(e.incident_id, e.action, e.target, e.status) for e in expired] == [
        (incident_id, "firewall.unblock_ip", IP, ActionStatus.EXECUTED)
    ]
    assert device.clears() == 1 and not device.banned()
    rows = {row.action: row for row in await store.actions(incident_id)}
    assert rows["firewall.unblock_ip"].status == "executed"
    assert rows["firewall.unblock_ip"].result is not None
    assert rows["firewall.unblock_ip"].result["approved_by"] == [EXPIRY_AUTHORITY]
    entry = (await Ledger(store).entries(incident_id))[-1]
    assert (entry.verb, entry.status, entry.approvers) == (
        "unblock_ip",
        "executed",
        [EXPIRY_AUTHORITY],
    )
    assert (await Ledger(store).verify()).ok
    assert await in_effect(store, incident_id) == []
    assert await expiring(store) == []

    requests = len(device.sim.requests)
    assert await sweep(store, settings, now=after(7200)) == []
    assert len(device.sim.requests) == requests

    incident = factories.incident(int(incident_id.rsplit("-", 1)[1]))
    assert await inverse_plans(store, incident) == []
    assert await undo_incident(incident_id) == []
    assert len(device.sim.requests) == requests


async def test_a_block_before_its_expiry_is_untouched(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a 1 h block, When the sweep runs a second before the hour,
    Then nothing is sent to the device and the block is still in effect."""
    blocked = await block(store, settings, ttl=3600)
    requests = len(device.sim.requests)

    assert await sweep(store, settings, now=after(3595)) == []

    assert len(device.sim.requests) == requests and device.banned()
    assert await in_effect(store, blocked.plan.incident_id) == ["firewall.block_ip"]
    [pending] = await expiring(store)
    assert pending.expires_at is not None
    recorded = (await Ledger(store).entries(blocked.plan.incident_id))[-1].recorded_at
    assert pending.expires_at == recorded + timedelta(seconds=3600)


async def test_a_block_without_ttl_never_expires(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a block with no TTL (until lifted), When the sweep runs a year later,
    Then it is left alone."""
    await block(store, settings, ttl=None)
    requests = len(device.sim.requests)
    assert await sweep(store, settings, now=after(365 * 86400)) == []
    assert len(device.sim.requests) == requests and device.banned()


async def test_a_renewal_in_another_incident_holds_the_block_until_it_expires(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a 1 min block that the device has since lifted, and a later incident that
    blocked the same address again for an hour,
    When the sweep runs after the first block's TTL, Then nothing is touched;
    When it runs after the renewal's TTL, Then the address is unblocked with one
    clear_users call: the renewal's incident executed, the first one already done."""
    first = await block(store, settings, ttl=60)
    device.advance(120)
    renewal = await block(store, settings, ttl=3600)
    assert renewal.status == ActionStatus.EXECUTED
    requests = len(device.sim.requests)

    assert await sweep(store, settings, now=after(120)) == []
    assert len(device.sim.requests) == requests and device.banned()
    ends = {x.expires_at for x in await expiring(store)}
    assert len(ends) == 1 and None not in ends

    expired = await sweep(store, settings, now=after(3700))

    assert [(e.incident_id, e.status) for e in expired] == [
        (renewal.plan.incident_id, ActionStatus.EXECUTED),
        (first.plan.incident_id, ActionStatus.ALREADY_DONE),
    ]
    assert device.clears() == 1 and not device.banned()
    assert await in_effect(store, renewal.plan.incident_id) == []
    requests = len(device.sim.requests)
    assert await sweep(store, settings, now=after(7200)) == []
    assert len(device.sim.requests) == requests


async def test_a_block_held_by_another_without_ttl_is_not_lifted(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a 1 min block the device has lifted, then a block of the same address with
    no TTL, When the sweep runs an hour later, Then neither is touched."""
    await block(store, settings, ttl=60)
    device.advance(120)
    await block(store, settings, ttl=None)
    requests = len(device.sim.requests)

    assert await sweep(store, settings, now=after(3600)) == []
    assert len(device.sim.requests) == requests and device.banned()
    assert [x.expires_at for x in await expiring(store)] == [None]


async def test_the_same_address_in_another_tenant_is_not_a_renewal(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given blocks of one address in two tenants, one expired and one not,
    When the sweep runs, Then only the expired tenant's block is undone; with a tenant
    filter, only that tenant is looked at."""
    acme = await block(store, settings, ttl=60, tenant="acme")
    device.advance(120)
    globex = await block(store, settings, ttl=3600, tenant="globex")

    assert await sweep(store, settings, now=after(120), tenant="globex") == []
    expired = await sweep(store, settings, now=after(120))

    assert [(e.tenant, e.incident_id) for e in expired] == [("acme", acme.plan.incident_id)]
    assert await in_effect(store, globex.plan.incident_id) == ["firewall.block_ip"]


async def test_a_block_the_device_already_lifted_is_recorded_and_not_retried(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a 1 min block that FortiOS expired on its own,
    When the sweep runs, Then the unblock is recorded as already done without a
    clear_users call; When it runs again, Then no request is sent."""
    blocked = await block(store, settings, ttl=60)
    device.advance(61)

    expired = await sweep(store, settings, now=after(61))

    assert [e.status for e in expired] == [ActionStatus.ALREADY_DONE]
    assert device.clears() == 0
    entry = (await Ledger(store).entries(blocked.plan.incident_id))[-1]
    assert (entry.verb, entry.status) == ("unblock_ip", "already_done")
    assert await expiring(store) == []
    requests = len(device.sim.requests)
    assert await sweep(store, settings, now=after(600)) == []
    assert len(device.sim.requests) == requests


async def test_in_effect_drops_a_block_whose_unblock_was_already_done(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a block the device expired and the sweep recorded as already unblocked,
    Then the ledger no longer shows it in effect."""
    blocked = await block(store, settings, ttl=60)
    device.advance(61)
    await sweep(store, settings, now=after(61))
    assert await in_effect(store, blocked.plan.incident_id) == []


# failures ----------------------------------------------------------------------------------
async def test_a_refused_unblock_is_recorded_as_failed_and_retried_on_the_next_pass(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given an expired block and a device that refuses the next request (403),
    When the sweep runs, Then the unblock is recorded as failed (store and ledger) and the
    block stays in effect; When it runs again, Then the unblock is executed once."""
    blocked = await block(store, settings, ttl=60)
    incident_id = blocked.plan.incident_id
    device.sim.fail_next(1, status=403)

    first = await sweep(store, settings, now=after(61))

    assert [e.status for e in first] == [ActionStatus.FAILED]
    assert first[0].error and "403" in first[0].error
    rows = {row.action: row for row in await store.actions(incident_id)}
    assert rows["firewall.unblock_ip"].status == "failed"
    entry = (await Ledger(store).entries(incident_id))[-1]
    assert (entry.verb, entry.status, entry.approvers) == (
        "unblock_ip",
        "failed",
        [EXPIRY_AUTHORITY],
    )
    assert await in_effect(store, incident_id) == ["firewall.block_ip"]
    assert device.clears() == 0 and device.banned()

    second = await sweep(store, settings, now=after(120))

    assert [e.status for e in second] == [ActionStatus.EXECUTED]
    assert device.clears() == 1 and not device.banned()
    assert await in_effect(store, incident_id) == []


async def test_a_vendor_outage_past_the_retries_is_recorded_as_failed(
    store: Store, settings: StanchSettings, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an expired block and a device answering 503 to every attempt,
    When the sweep runs (Prefect's retries without their backoff delay),
    Then each attempt reached the device, the failure is recorded once in the store and the
    ledger, and the next pass unblocks it."""
    import flows.respond.expiry

    monkeypatch.setattr(
        flows.respond.expiry, "execute_action", execute_action.with_options(retry_delay_seconds=0)
    )
    blocked = await block(store, settings, ttl=60)
    incident_id = blocked.plan.incident_id
    before = len(device.sim.requests)
    device.sim.fail_next(4, status=503)

    [failed] = await sweep(store, settings, now=after(61))

    assert failed.status == ActionStatus.FAILED
    assert [r.status for r in device.sim.requests[before:]] == [503] * 4
    rows = {row.action: row for row in await store.actions(incident_id)}
    # Each Prefect retry claimed the action again; the failure is stored once, at the end.
    assert (rows["firewall.unblock_ip"].status, rows["firewall.unblock_ip"].attempts) == (
        "failed",
        4,
    )
    failures = [e for e in await Ledger(store).entries(incident_id) if e.status == "failed"]
    assert len(failures) == 1
    [done] = await sweep(store, settings, now=after(120))
    assert done.status == ActionStatus.EXECUTED and device.clears() == 1


async def test_a_tenant_whose_firewall_is_not_configured_is_reported_not_recorded(
    store: Store, device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given an expired block and live mode without vendor settings,
    When the sweep runs, Then the expiry is reported failed naming the missing setting,
    nothing is written to the ledger, and the block is still due."""
    blocked = await block(store, load_settings(), ttl=60)
    entries = len(await Ledger(store).entries())
    for name in [n for n in os.environ if n.startswith("STANCH_") and n.count("_") >= 2]:
        if name.split("_")[1] in {"CROWDSTRIKE", "OKTA", "FORTIGATE"}:
            monkeypatch.delenv(name)

    [failed] = await sweep(store, StanchSettings(mode="live"), now=after(61))

    assert failed.status == ActionStatus.FAILED
    assert (
        failed.error and "has no crowdstrike credentials of its own: STANCH_DEMO_" in failed.error
    )
    assert len(await Ledger(store).entries()) == entries
    assert await in_effect(store, blocked.plan.incident_id) == ["firewall.block_ip"]


async def test_a_naive_clock_is_refused(store: Store, settings: StanchSettings) -> None:
    """Given a naive datetime, When asked to expire, Then it says the clock must be UTC."""
    with pytest.raises(ValueError, match="timezone-aware"):
        await expire_due(store, settings, now=datetime(2026, 11, 21, 12, 0))


# the plan ----------------------------------------------------------------------------------
async def test_the_expiry_plan_is_the_plan_undo_would_build(
    store: Store, settings: StanchSettings, device: Device
) -> None:
    """Given a block in effect, Then the expiry's inverse plan is byte for byte the plan
    undo-incident builds for it (one idempotency key: neither can undo it twice)."""
    blocked = await block(store, settings, ttl=3600)
    [item] = await expiring(store)
    number = int(blocked.plan.incident_id.rsplit("-", 1)[1])

    [undo_plan] = await inverse_plans(store, factories.incident(number))

    assert item.effect.inverse_plan() == undo_plan
    assert item.effect.inverse_plan().sha256 == undo_plan.sha256
