"""A fault run: twenty incidents while about 30% of vendor calls fail, across all seven vendors.

Each vendor simulator's transport answers a seeded ~30% of requests with a 503, a 429 (with
``Retry-After``) or a read timeout. Whatever each incident's fate, nothing may be left in
effect that is neither intended (its containment held) nor named "still in effect after a
failed rollback" in its report and the ledger, and no compensating action may end
``started``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flows.models import Incident
from flows.record import Ledger, Store, in_effect_line, md_escape, open_store
from flows.respond import ROLLBACK_AUTHORITY, STILL_IN_EFFECT
from flows.settings import load_settings
from flows.wiring import default_lab
from integrations.plugin import VENDORS
from tests.flows import factories
from tests.flows.flowrun import REPO, run

pytestmark = pytest.mark.usefixtures("prefect_server")

FAULT_RATE = 0.3
INCIDENTS = 20
AT_ONCE = 5
SEED = 18
TENANTS = {
    "f-falcon": {"edr": "crowdstrike", "identity": "okta", "firewall": "fortigate"},
    "f-msft": {"edr": "defender", "identity": "entra", "firewall": "panos"},
    "f-s1": {"edr": "sentinelone", "identity": "okta", "firewall": "panos"},
    "f-mixed": {"edr": "crowdstrike", "identity": "entra", "firewall": "fortigate"},
}
INVERSE_VERBS = {"release_host", "unsuspend_user", "unblock_ip", "unblock_hash"}


class FaultyTransport(httpx.AsyncBaseTransport):
    """Answers a seeded share of requests with a 503, a 429 or a read timeout."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rng: random.Random) -> None:
        self.inner = inner
        self.rng = rng
        self.faults = 0
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.rng.random() < FAULT_RATE:
            self.faults += 1
            kind = self.rng.choice(("503", "429", "timeout"))
            if kind == "timeout":
                raise httpx.ReadTimeout("injected read timeout", request=request)
            headers = {"retry-after": "1"} if kind == "429" else {}
            return httpx.Response(int(kind), headers=headers, json={}, request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def faulty_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[FaultyTransport]:
    """Four tenants over all seven vendors, every action unattended, every vendor faulty."""
    policies = tmp_path / "policies"
    policies.mkdir()
    unattended = (REPO / "tests" / "stanch" / "unattended_policies" / "demo.yaml").read_text()
    (policies / "default.yaml").write_text(unattended.replace("tenant: demo\n", ""))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))
    monkeypatch.setenv("STANCH_TENANTS", json.dumps(TENANTS))
    lab = default_lab()
    lab.reset()
    rng = random.Random(SEED)
    transports: list[FaultyTransport] = []
    for vendor in VENDORS:
        simulator = lab.simulator(vendor)
        faulty = FaultyTransport(simulator.transport(), rng)
        transports.append(faulty)
        monkeypatch.setattr(simulator, "transport", lambda faulty=faulty: faulty)
    return transports


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


async def test_twenty_incidents_at_thirty_percent_faults_leave_nothing_unnamed(
    faulty_lab: list[FaultyTransport], store: Store
) -> None:
    """Given 30% of calls to every vendor failing transiently,
    When twenty incidents of four tenants run, five at a time,
    Then no compensating action is left started, and for every incident whose containment
    was rolled back, whatever is still in effect is named in its report and in the ledger
    as still in effect after a failed rollback."""
    tenants = list(TENANTS)
    incidents: list[Incident] = [
        factories.incident(9500 + i, tenant=tenants[i % len(tenants)]) for i in range(INCIDENTS)
    ]
    for start in range(0, INCIDENTS, AT_ONCE):
        await asyncio.gather(*(run(i, store, None) for i in incidents[start : start + AT_ONCE]))
    assert sum(t.faults for t in faulty_lab) > 0.2 * sum(t.calls for t in faulty_lab)
    assert all(t.calls for t in faulty_lab), "every vendor was called"

    ledger = Ledger(store)
    rolled_back = 0
    reports = load_settings().reports_dir
    for incident in incidents:
        rows = await store.actions(incident.id)
        started = [r.action for r in rows if r.status == "started"]
        assert not [a for a in started if a.partition(".")[2] in INVERSE_VERBS], incident.id
        events = {(e.stage, e.event) for e in await store.stage_events(incident.id)}
        if ("contain", "failed") not in events:
            continue  # containment held (or never ran): what is in effect is intended
        rolled_back += 1
        report = (reports / f"{incident.id}.md").read_text()
        entries = await ledger.entries(incident.id)
        for effect in await ledger.in_effect(incident.id):
            if effect.entry.verb in ("block_hash", "expire_password"):
                continue  # remediation does not run after a failed containment
            named = f"{effect.entry.capability}.{effect.entry.verb}"
            line = f"{in_effect_line(effect)} — {STILL_IN_EFFECT}"
            assert md_escape(line) in report, (
                incident.id,
                named,
            )
            assert any(
                e.target == effect.entry.target
                and e.status == "failed"
                and e.approvers == [ROLLBACK_AUTHORITY]
                and STILL_IN_EFFECT in (e.error or "")
                for e in entries
            ), (incident.id, named)
    assert rolled_back, "no containment was rolled back: the faults exercised nothing"
