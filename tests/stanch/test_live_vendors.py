"""The demo incident in live mode against simulators served on loopback, then `stanch undo`.

The simulators answer every undocumented (``[U]``) case with their default, the strictest
reading (integrations/README.md lists them). The adapters reach them over real sockets
with the settings `stanch lab` prints; the vendors' own state is then compared with what
the report claims is in effect, after the run and after the undo.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from flows.models import ActionStatus, IncidentOutcome
from flows.record import Ledger, md_escape, open_store
from flows.respond import undo_incident
from flows.settings import load_settings
from flows.wiring import Lab, connect
from integrations.capabilities import Containment, UserStatus
from integrations.phrases import describe_action
from integrations.plugin import load_plugin
from integrations.simkit import Simulator
from stanch.demo import (
    C2_IP,
    HOSTNAME,
    RANSOMWARE_SHA256,
    SIGNIN_IP,
    USER,
    run_incident,
    scenario_alerts,
)
from stanch.lab import lab_environment
from tests.flows.test_lifecycle import approve

pytestmark = pytest.mark.usefixtures("prefect_server")

# Every vendor at least once: each case is an incident and an undo, some 30 s on two cores.
TRIOS = [
    ("crowdstrike", "okta", "fortigate"),
    ("defender", "entra", "panos"),
    ("sentinelone", "okta", "panos"),
]


@contextlib.contextmanager
def served(vendors: list[str]) -> Iterator[tuple[dict[str, Simulator], dict[str, str]]]:
    """The vendors' simulators on loopback ports (as `stanch lab` serves them), and the
    ``STANCH_<VENDOR>_*`` settings that point live mode at them."""
    simulators = {v: load_plugin(v).simulator() for v in vendors}
    sockets: dict[str, socket.socket] = {}
    env: dict[str, str] = {}
    for vendor in vendors:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets[vendor] = sock
        env.update(lab_environment(vendor, f"http://127.0.0.1:{sock.getsockname()[1]}"))
    servers = {
        v: uvicorn.Server(uvicorn.Config(simulators[v].app, log_level="critical", lifespan="off"))
        for v in vendors
    }

    async def serve() -> None:
        await asyncio.gather(*(servers[v].serve(sockets=[sockets[v]]) for v in vendors))

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not all(s.started for s in servers.values()):
        assert time.monotonic() < deadline, "the simulators did not start"
        time.sleep(0.05)
    try:
        yield simulators, env
    finally:
        for server in servers.values():
            server.should_exit = True
        thread.join(timeout=15)
        for sock in sockets.values():
            sock.close()


def hash_blocks(sim: Any) -> int:
    """How many hash blocks the EDR simulator holds (its IOC, indicator or blocklist table)."""
    for table in ("iocs", "indicators", "blocklist"):
        if hasattr(sim, table):
            return len(getattr(sim, table))
    raise AssertionError(f"{type(sim).__name__} has no hash block table")


async def vendor_state(settings: Any) -> dict[str, Any]:
    """What the vendors say now, read over the same loopback sockets."""
    async with connect(settings, Lab()) as live:
        host = await live.edr.find_host(HOSTNAME)
        user = await live.identity.find_user(USER)
        blocked = {b.ip for b in await live.firewall.list_blocked()}
    assert host is not None and user is not None
    return {"host": host.containment, "user": user, "blocked": blocked}


async def undo_with_analyst(incident_id: str) -> list[Any]:
    settings = load_settings()
    async with open_store(settings.store_url) as store:
        answered: set[str] = set()

        async def analyst() -> None:
            while True:
                for row in await store.approvals(incident_id=incident_id, status="pending"):
                    if row.id not in answered:
                        answered.add(row.id)
                        await approve(store, settings, row)
                await asyncio.sleep(0.2)

        helper = asyncio.create_task(analyst())
        try:
            return await undo_incident(incident_id)
        finally:
            helper.cancel()
            await asyncio.gather(helper, return_exceptions=True)


def seed(simulators: dict[str, Simulator], edr: str, identity: str) -> None:
    add_host: Callable[[str], Any] = simulators[edr].add_host  # type: ignore[attr-defined]
    add_user: Callable[[str], Any] = simulators[identity].add_user  # type: ignore[attr-defined]
    add_host(HOSTNAME)
    add_user(USER)


@pytest.mark.parametrize(("edr", "identity", "firewall"), TRIOS)
async def test_the_demo_incident_completes_live_and_undo_leaves_nothing_in_effect(
    monkeypatch: pytest.MonkeyPatch, edr: str, identity: str, firewall: str
) -> None:
    """Given live mode against documented-behaviour simulators on loopback,
    When the demo incident runs (an analyst approves containment),
    Then every stage completes, the report's "still in effect" list is exactly what the
    vendors show (host contained, user suspended, both C2 addresses blocked, the hash
    blocked); and after undo-incident, nothing is in effect and the vendors agree: host
    released, user active with the password expired, no block left."""
    with served([edr, identity, firewall]) as (simulators, env):
        # The demo tenant's own credentials, which its run uses (in live mode a tenant
        # never gets the provider's); the provider's are for this test's own look at the
        # vendors' state.
        for name, value in env.items():
            monkeypatch.setenv(name.replace("STANCH_", "STANCH_DEMO_", 1), value)
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("STANCH_MODE", "live")
        monkeypatch.setenv("STANCH_EDR", edr)
        monkeypatch.setenv("STANCH_IDENTITY", identity)
        monkeypatch.setenv("STANCH_FIREWALL", firewall)
        seed(simulators, edr, identity)
        settings = load_settings()
        alerts = scenario_alerts(datetime.now(UTC), edr=edr, identity=identity)

        outcome, _, error = await run_incident(settings, alerts, analyst_delay=0.1)

        assert error is None and isinstance(outcome, IncidentOutcome), error
        assert {s.stage.value: s.state for s in outcome.stages} == dict.fromkeys(
            ["detect", "investigate", "contain", "remediate", "report"], "completed"
        )
        assert {a.status for a in outcome.actions} == {ActionStatus.EXECUTED}
        claimed = set(outcome.in_effect)
        # As a person reads them; Defender names the machine by its DNS name, in lower case.
        vendor = {"edr": edr, "identity": identity, "firewall": firewall}
        expected = {
            describe_action(action, target, vendor[action.split(".")[0]])
            for action, target in (
                ("edr.contain_host", HOSTNAME),
                ("identity.suspend_user", USER),
                ("firewall.block_ip", C2_IP),
                ("firewall.block_ip", SIGNIN_IP),
                ("edr.block_hash", RANSOMWARE_SHA256[:16]),
            )
        }
        assert len(claimed) == len(expected), claimed
        for phrase in expected:
            assert any(c.lower().startswith(phrase.lower()) for c in claimed), (phrase, claimed)
        report = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
        section = report.split("**Still in effect.**", 1)[1].split("**What to do next.**", 1)[0]
        assert all(f"- {md_escape(line)}" in section for line in claimed)
        state = await vendor_state(settings)
        assert state["host"] == Containment.CONTAINED
        assert state["user"].status == UserStatus.SUSPENDED
        assert state["blocked"] >= {C2_IP, SIGNIN_IP}
        assert hash_blocks(simulators[edr]) >= 1  # SentinelOne blocks per OS: one each

        undone = await undo_with_analyst(outcome.incident.id)

        assert {a.status for a in undone} == {ActionStatus.EXECUTED}, [
            (a.plan.action, a.status, a.error) for a in undone
        ]
        async with open_store(settings.store_url) as store:
            assert await Ledger(store).in_effect(outcome.incident.id) == []
        state = await vendor_state(settings)
        assert state["host"] == Containment.NORMAL
        assert state["user"].status == UserStatus.ACTIVE
        assert state["blocked"] & {C2_IP, SIGNIN_IP} == set()
        assert hash_blocks(simulators[edr]) == 0
        expired = simulators[identity]
        if identity == "okta":
            assert expired.user_status(state["user"].id) == "PASSWORD_EXPIRED"  # type: ignore[attr-defined]
        else:
            assert expired.users[state["user"].id].force_change_password_next_sign_in  # type: ignore[attr-defined]
