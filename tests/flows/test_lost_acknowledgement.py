"""A vendor that acted but whose answer was lost: stanch still owns, reports and undoes it.

Each test runs handle-incident on the session's Prefect server against the lab simulators
with a fault injected, then undo-incident (what `stanch undo` runs), and compares the
vendor's state with what the store, the ledger and the report claim.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flows.models import ActionResult, ActionStatus, IncidentOutcome
from flows.record import ApprovalRow, Ledger, Store, md_escape, open_store
from flows.respond import undo_incident
from flows.settings import StanchSettings, load_settings
from flows.wiring import default_lab
from integrations.crowdstrike import CrowdStrikeSimulator
from integrations.fortigate import FortiGateSimulator
from integrations.okta import OktaSimulator
from integrations.phrases import describe_action
from tests.flows.test_lifecycle import approve, new_incident, run

pytestmark = pytest.mark.usefixtures("prefect_server")

HOST, USER = "WS-0042", "jdoe@acme.example"
C2 = ("203.0.113.66", "198.51.100.77")


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


@pytest.fixture(autouse=True)
def fresh_lab() -> None:
    default_lab().reset()


def crowdstrike() -> CrowdStrikeSimulator:
    sim = default_lab().simulator("crowdstrike")
    assert isinstance(sim, CrowdStrikeSimulator)
    return sim


def okta() -> OktaSimulator:
    sim = default_lab().simulator("okta")
    assert isinstance(sim, OktaSimulator)
    return sim


def fortigate() -> FortiGateSimulator:
    sim = default_lab().simulator("fortigate")
    assert isinstance(sim, FortiGateSimulator)
    return sim


def aid_of(sim: CrowdStrikeSimulator, hostname: str) -> str:
    [aid] = [a for a, h in sim.hosts.items() if h["hostname"] == hostname]
    return aid


def user_id_of(sim: OktaSimulator, login: str) -> str:
    account = sim._by_login(login)
    assert account is not None
    return account.id


async def undo(store: Store, incident_id: str) -> list[str]:
    """Run undo-incident with an analyst approving; return ``verb target status`` lines."""
    settings = load_settings()
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
        undone = await undo_incident(incident_id)
    finally:
        helper.cancel()
        await asyncio.gather(helper, return_exceptions=True)
    return [f"{a.plan.verb} {a.plan.target_label} {a.status.value}" for a in undone]


async def still_in_effect(store: Store, incident_id: str) -> set[str]:
    return {
        f"{e.entry.verb} {e.entry.target_label}" for e in await Ledger(store).in_effect(incident_id)
    }


def own_containment(outcome: IncidentOutcome) -> list[ActionResult]:
    """The containment of the incident's own host (not of the hosts its hunt found)."""
    return [
        a for a in outcome.actions if a.plan.verb == "contain_host" and a.plan.target_label == HOST
    ]


def reported(outcome: IncidentOutcome, action: str) -> list[str]:
    """The outcome's "still in effect" lines for ``action`` (``edr.contain_host WS-0042``),
    as a person reads them (``Isolate host WS-0042 (CrowdStrike), until undone …``)."""
    verb_target = action.split(" ", 1)
    vendors = {a.vendor for a in outcome.actions if a.plan.action == verb_target[0]}
    phrases = {describe_action(verb_target[0], verb_target[1], v or "") for v in vendors}
    return [line for line in outcome.in_effect if any(line.startswith(p) for p in phrases)]


async def assert_reported_in_effect(outcome: IncidentOutcome, action: str) -> None:
    """The report's "still in effect" section names ``action`` (``edr.contain_host
    WS-0042``) in its readable form."""
    [line] = reported(outcome, action)
    report = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    still = report.split("**Still in effect.**", 1)[1].split("**What to do next.**", 1)[0]
    assert f"- {md_escape(line)}" in still


async def test_a_lost_contain_acknowledgement_is_owned_reported_and_undone(store: Store) -> None:
    """Given CrowdStrike containing the host but its 202 lost (a 503 comes back instead),
    When the contain step retries and the vendor answers the documented 409 "already
    contained",
    Then the action is recorded executed by stanch (not already_done), is in effect and in
    the report, and undo-incident releases the host at the vendor."""
    incident = new_incident()
    crowdstrike().lose_next(1, path_prefix="/devices/entities/devices-actions")
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome

    sim = crowdstrike()
    aid = aid_of(sim, HOST)
    posts = [r for r in sim.requests if r.path.startswith("/devices/entities/devices-actions")]
    # The incident's host twice (the first answer lost), each host its hunt found once.
    hosts = [a for a in outcome.actions if a.plan.verb == "contain_host"]
    assert [(r.status, r.lost) for r in posts] == [(202, True)] + [(202, False)] * len(hosts)
    assert sim.host_status(aid) == "contained"
    [contain] = own_containment(outcome)
    assert contain.status == ActionStatus.EXECUTED
    assert contain.receipt is not None and contain.receipt.changed
    await assert_reported_in_effect(outcome, f"edr.contain_host {HOST}")
    assert f"contain_host {HOST}" in await still_in_effect(store, incident.id)

    undone = await undo(store, incident.id)

    assert f"release_host {HOST} executed" in undone
    assert sim.host_status(aid) == "normal"
    assert await still_in_effect(store, incident.id) == set()


async def test_a_failed_containment_poll_is_polled_again_not_contained_twice(
    store: Store,
) -> None:
    """Given CrowdStrike accepting the contain (202) and the first status poll answering 503,
    When the contain step runs,
    Then only the poll is repeated: one contain request, the action executed and in effect,
    and undo releases the host."""
    incident = new_incident()
    sim = crowdstrike()

    async def approve_then_break_the_poll(
        store: Store, settings: StanchSettings, row: ApprovalRow
    ) -> None:
        # Investigation is over: the next device read is the poll after the contain.
        sim.fail_next(1, status=503, path_prefix="/devices/entities/devices/v2")
        await approve(store, settings, row)

    outcome, _ = await run(incident, store, approve_then_break_the_poll)
    assert isinstance(outcome, IncidentOutcome), outcome

    aid = aid_of(sim, HOST)
    posts = [r for r in sim.requests if r.path.startswith("/devices/entities/devices-actions")]
    hosts = [a for a in outcome.actions if a.plan.verb == "contain_host"]
    assert [r.status for r in posts] == [202] * len(hosts), "each host contained once"
    polls = [r.status for r in sim.requests if r.path == "/devices/entities/devices/v2"]
    assert 503 in polls and polls[-1] == 200
    [contain] = own_containment(outcome)
    assert (contain.status, contain.receipt and contain.receipt.state) == (
        ActionStatus.EXECUTED,
        "contained",
    )
    await assert_reported_in_effect(outcome, f"edr.contain_host {HOST}")

    assert f"release_host {HOST} executed" in await undo(store, incident.id)
    assert sim.host_status(aid) == "normal"


async def test_a_lost_suspend_acknowledgement_is_owned_and_undone(store: Store) -> None:
    """Given Okta suspending the user but the answer lost (503),
    When the retry's pre-read finds the user SUSPENDED,
    Then the suspension is stanch's (executed, in effect, reported), and undo-incident
    unsuspends the user and then expires their password."""
    incident = new_incident()
    okta().lose_next(1, path_prefix="/api/v1/users/")
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome

    sim = okta()
    user_id = user_id_of(sim, USER)
    lost = [r for r in sim.requests if r.lost]
    assert [r.path.rsplit("/", 1)[-1] for r in lost] == ["suspend"]
    [suspend] = [a for a in outcome.actions if a.plan.verb == "suspend_user"]
    assert suspend.status == ActionStatus.EXECUTED
    await assert_reported_in_effect(outcome, f"identity.suspend_user {USER}")

    undone = await undo(store, incident.id)

    assert f"unsuspend_user {USER} executed" in undone
    assert f"expire_password {USER} executed" in undone
    assert sim.user_status(user_id) == "PASSWORD_EXPIRED"


async def test_a_lost_block_acknowledgement_is_owned_and_undone(store: Store) -> None:
    """Given FortiGate banning the first C2 address but the answer lost (503),
    When the retry's check finds the address banned,
    Then both blocks are stanch's (executed, in effect), and undo-incident lifts both."""
    incident = new_incident()
    fortigate().lose_next(1, path_prefix="/api/v2/monitor/user/banned/add_users")
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome

    sim = fortigate()
    assert [r.lost for r in sim.requests if r.path.endswith("/add_users")].count(True) == 1
    blocks = [a for a in outcome.actions if a.plan.verb == "block_ip"]
    assert {a.status for a in blocks} == {ActionStatus.EXECUTED}
    for ip in C2:
        await assert_reported_in_effect(outcome, f"firewall.block_ip {ip}")

    undone = await undo(store, incident.id)

    assert {f"unblock_ip {ip} executed" for ip in C2} <= set(undone)
    assert sim.table("root") == {}


async def test_state_that_existed_before_the_incident_stays_already_done(store: Store) -> None:
    """Given a host an admin contained before the incident (no fault anywhere),
    When the incident contains it,
    Then the vendor's 409 means already_done: not in effect, and undo-incident leaves the
    host contained, because stanch did not cause that state."""
    incident = new_incident()
    sim = crowdstrike()
    # The lab's fleet has the host already (its hunt telemetry); add it only if not.
    known = [a for a, h in sim.hosts.items() if h["hostname"] == HOST]
    aid = known[0] if known else sim.add_host(HOST)
    default_lab().provisioned.add(("host", "crowdstrike", HOST))
    sim.hosts[aid]["status"] = "contained"
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome

    contains = own_containment(outcome)
    assert len(contains) == 1, [(c.plan.stage, c.plan.target, c.status) for c in contains]
    [contain] = contains
    assert contain.status == ActionStatus.ALREADY_DONE
    assert reported(outcome, f"edr.contain_host {HOST}") == []

    undone = await undo(store, incident.id)

    assert not [line for line in undone if line.startswith(f"release_host {HOST} ")]
    assert sim.host_status(aid) == "contained"
