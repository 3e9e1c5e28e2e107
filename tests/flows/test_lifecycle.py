"""The handle-incident flow end to end, on the real Prefect server and the lab simulators.

Each test runs the flow in-process against the session's Prefect server; an "analyst"
coroutine answers the approval through the same path the CLI uses (or forges one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.flow_runs import aresume_flow_run

from flows.approval import wait_until_paused
from flows.errors import ApprovalError
from flows.lifecycle import IncidentIncomplete
from flows.models import ActionStatus, Incident, IncidentOutcome
from flows.record import ApprovalRow, Ledger, Store, in_effect_line, md_escape, open_store
from flows.respond import STILL_IN_EFFECT, undo_incident
from flows.settings import StanchSettings, load_settings
from flows.wiring import connect, default_lab
from integrations.capabilities import Containment
from stanch.demo import provision_lab
from tests.flows import factories
from tests.flows.flowrun import approve, deny, forge, run

pytestmark = pytest.mark.usefixtures("prefect_server")

_numbers = iter(range(100, 10_000))


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


@pytest.fixture(autouse=True)
def fresh_lab() -> None:
    default_lab().reset()


def new_incident() -> Incident:
    return factories.incident(next(_numbers))


async def test_approved_incident_is_contained_remediated_and_reported(store: Store) -> None:
    """Given the demo incident and an analyst who approves,
    When handle-incident runs,
    Then all five stages complete, the host is really contained at the EDR, the user
    suspended at the IdP, the IPs blocked at the firewall, each action carries its approver
    and plan hash, and the report names them."""
    incident = new_incident()
    outcome, answered = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    assert [s.state for s in outcome.stages] == ["completed"] * 5
    assert outcome.playbook == "ransomware"
    assert not any(n.startswith("investigate hunt_hash") for n in outcome.playbook_notes)
    contained = [a for a in outcome.actions if a.plan.stage == "contain"]
    # The five the alerts call for, and the two other hosts the hunt found the hash on.
    assert len(contained) == 7
    not_executed = [a for a in outcome.actions if a.status != ActionStatus.EXECUTED]
    assert [(a.plan.action, a.status, a.error) for a in not_executed] == []
    assert [a.plan.action for a in contained if a.approved_by != ["cli:alice"]] == []
    assert all(a.plan_sha256 == a.plan.sha256 for a in outcome.actions)

    lab = default_lab()
    edr, idp, fw = (lab.simulator(v) for v in ("crowdstrike", "okta", "fortigate"))
    settings = load_settings()
    async with connect(settings) as live:
        host = await live.edr.find_host("WS-0042")
        user = await live.identity.find_user("jdoe@acme.example")
        blocked = {b.ip for b in await live.firewall.list_blocked()}
    assert host is not None and host.containment == Containment.CONTAINED
    assert user is not None and user.status == "suspended"
    assert blocked == {"203.0.113.66", "198.51.100.77"}
    assert edr.requests and idp.requests and fw.requests

    report = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    for action in outcome.actions:
        assert action.plan_sha256 in report
    assert "alice \\(cli\\)" in report  # who approved, as a person reads it (Markdown-escaped)
    [row] = await store.approvals(incident_id=incident.id)
    assert (row.status, row.decided_by) == ("approved", "cli:alice")
    assert outcome.clocks["acknowledge"] is not None
    assert outcome.clocks["contain"] is not None
    # The flow's part ends with the report: the case waits for a person to close it.
    assert outcome.clocks["resolve"] is None and outcome.case_status == "awaiting-closure"
    assert answered == [row.id]

    ledger = Ledger(store)
    entries = await ledger.export(incident.id)
    assert [e["kind"] for e in entries].count("action") == len(outcome.actions)
    assert [e["kind"] for e in entries].count("decision") == 1
    moves = [(e["parameters"]["from"], e["status"]) for e in entries if e["kind"] == "case"]
    assert moves == [
        ("new", "investigating"),
        ("investigating", "contained"),
        ("contained", "remediated"),
        ("remediated", "awaiting-closure"),
    ]
    assert all(e["approvers"] == ["stanch:flow"] for e in entries if e["kind"] == "case")
    assert (await ledger.verify()).ok
    undo = {(i.inverse.verb, i.inverse.target_label) for i in await ledger.in_effect(incident.id)}
    assert undo == {
        ("release_host", "WS-0042"),
        ("release_host", "WS-0107"),
        ("release_host", "SRV-FS01"),
        ("unsuspend_user", "jdoe@acme.example"),
        ("unblock_ip", "203.0.113.66"),
        ("unblock_ip", "198.51.100.77"),
        ("unblock_hash", incident.sha256s[0][:16]),
    }

    async with get_client() as client:
        flow_run = await client.read_flow_run(UUID(str(outcome.flow_run_id)))
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        )
    assert flow_run.name == f"{incident.id} ransomware on WS-0042"
    assert {f"tenant:{incident.tenant}", "severity:critical", "playbook:ransomware"} <= set(
        flow_run.tags
    )
    names = {t.name for t in tasks}
    assert {
        f"[detect] record {incident.id}",
        "[investigate] edr.find_host WS-0042 · crowdstrike",
        "[investigate] identity.find_user jdoe@acme.example · okta",
        "[contain] edr.contain_host WS-0042 · crowdstrike",
        "[contain] identity.suspend_user jdoe@acme.example · okta",
        "[contain] firewall.block_ip 203.0.113.66 · fortigate",
        f"[remediate] edr.block_hash {incident.sha256s[0][:16]} · crowdstrike",
        f"[report] write {incident.id}",
    } <= names
    assert {t.name: t.tags for t in tasks if t.tags} == {}


async def test_run_tags_are_the_flow_runs_and_no_task_run_takes_a_lease(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a caller that runs handle-incident inside ``with tags("caller:bench")`` (as a
    rerun does with its own tag),
    When the incident runs to its report,
    Then the flow run carries the caller's tag and tenant, severity and playbook, no task
    run carries any tag, and no request asks the Prefect server for a concurrency lease
    (Prefect takes one per task-run tag; on SQLite it often fails and costs a 2 s wait)."""
    from prefect import tags
    from prefect.client.base import PrefectHttpxAsyncClient

    paths: list[str] = []
    send = PrefectHttpxAsyncClient.send

    async def spy(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        paths.append(f"{request.method} {request.url.path}")
        return await send(self, request, *args, **kwargs)

    monkeypatch.setattr(PrefectHttpxAsyncClient, "send", spy)
    incident = factories.incident(next(_numbers), tenant="globex")
    with tags("caller:bench"):
        outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome

    async with get_client() as client:
        flow_run = await client.read_flow_run(UUID(str(outcome.flow_run_id)))
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        )
    assert set(flow_run.tags) == {
        "caller:bench",
        "tenant:globex",
        "severity:critical",
        "playbook:ransomware",
    }
    assert len(tasks) >= 10
    assert [(t.name, t.tags) for t in tasks if t.tags] == []
    assert paths, "the spy saw the Prefect client's requests"
    assert [p for p in paths if "concurrency" in p] == []


async def test_a_paused_run_checks_for_its_resume_as_often_as_configured(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given ``STANCH_APPROVAL_POLL_SECONDS=0.3`` and an analyst who approves 1.5 s after
    the request appears,
    When the run pauses for the decision,
    Then it reads its own state about every 0.3 s (not rounded up to whole seconds), so a
    click is noticed within a fraction of a second."""
    import time

    from prefect.client.base import PrefectHttpxAsyncClient

    monkeypatch.setenv("STANCH_APPROVAL_POLL_SECONDS", "0.3")
    flow_task = asyncio.current_task()
    reads: list[float] = []
    send = PrefectHttpxAsyncClient.send

    async def spy(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        # The paused flow polls GET /flow_runs/<id> from its own task (the analyst's
        # resume runs in another one).
        path = request.url.path
        own_state = path.startswith("/api/flow_runs/") and path.count("/") == 3
        if request.method == "GET" and own_state and asyncio.current_task() is flow_task:
            reads.append(time.monotonic())
        return await send(self, request, *args, **kwargs)

    async def approve_later(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
        await asyncio.sleep(1.5)
        await approve(store, settings, row)

    monkeypatch.setattr(PrefectHttpxAsyncClient, "send", spy)
    outcome, _ = await run(new_incident(), store, approve_later)
    assert isinstance(outcome, IncidentOutcome), outcome
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert len(gaps) >= 3, reads
    assert 0.25 < min(gaps) < 0.9, gaps


async def test_each_report_checks_the_ledger_since_the_last_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a store of its own and one incident run to its report (the ledger verified,
    its head kept as the mark),
    When the mark's entry is then edited in the database and a second incident runs,
    Then the second report says the ledger is NOT verified and names the edited entry,
    and the mark stays where it was."""
    from sqlalchemy import text

    monkeypatch.setenv("STANCH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'own.db'}")
    async with open_store(load_settings().store_url) as own:
        first, _ = await run(new_incident(), own, approve)
        assert isinstance(first, IncidentOutcome), first
        assert first.ledger["verified"] is True, first.ledger["message"]
        head = await Ledger(own).head()
        async with own.engine.begin() as conn:
            mark = (await conn.execute(text("SELECT seq FROM ledger_checkpoints"))).all()
            assert mark == [(head.seq,)]
            await conn.execute(
                text("UPDATE ledger_entries SET error = 'forged' WHERE seq = :seq"),
                {"seq": head.seq},
            )
        second, _ = await run(new_incident(), own, approve)
        assert isinstance(second, IncidentOutcome), second
        assert second.ledger["verified"] is False
        assert second.ledger["message"].startswith(f"entry {head.seq} (")
        report = await asyncio.to_thread(Path(second.report_paths["markdown"]).read_text)
        assert "**NOT VERIFIED**" in report
        async with own.engine.begin() as conn:
            mark = (await conn.execute(text("SELECT seq FROM ledger_checkpoints"))).all()
        assert mark == [(head.seq,)]


async def test_a_vendor_concurrency_limit_is_taken_only_when_asked_for(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given ``STANCH_VENDOR_CONCURRENCY='["crowdstrike"]'`` and the Prefect global limit
    ``vendor:crowdstrike`` created,
    When an incident runs, Then each CrowdStrike call (find the host, contain it, block the
    hash) holds a slot of that limit and no other vendor's call asks for one;
    When the limit does not exist, Then the CrowdStrike lookup fails naming the limit (it
    is not silently skipped) and nothing is contained."""
    import json

    from prefect.client.base import PrefectHttpxAsyncClient
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    leases: list[list[str]] = []
    send = PrefectHttpxAsyncClient.send

    async def spy(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.url.path.endswith("/increment-with-lease"):
            leases.append(json.loads(request.content)["names"])
        return await send(self, request, *args, **kwargs)

    monkeypatch.setattr(PrefectHttpxAsyncClient, "send", spy)
    monkeypatch.setenv("STANCH_VENDOR_CONCURRENCY", '["crowdstrike"]')
    async with get_client() as client:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name="vendor:crowdstrike", limit=2)
        )
    try:
        outcome, _ = await run(new_incident(), store, approve)
    finally:
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name("vendor:crowdstrike")
    assert isinstance(outcome, IncidentOutcome), outcome
    # One lease per CrowdStrike call (the lookup, the hunt, each containment, the hash
    # block), none for the other vendors.
    crowdstrike_actions = [a for a in outcome.actions if a.vendor == "crowdstrike"]
    assert len(crowdstrike_actions) >= 2
    assert len(leases) > len(crowdstrike_actions)
    assert leases == [["vendor:crowdstrike"]] * len(leases)

    leases.clear()
    edr = default_lab().simulator("crowdstrike")
    contained_before = [r for r in edr.requests if "devices-actions" in r.path]
    incident = new_incident()
    missing, _ = await run(incident, store, approve)
    assert isinstance(missing, IncidentIncomplete)
    report = load_settings().reports_dir / f"{incident.id}.json"
    stages = {
        s["stage"]: s for s in json.loads(await asyncio.to_thread(report.read_text))["stages"]
    }
    assert stages["investigate"]["state"] == "failed"
    assert "vendor:crowdstrike" in stages["investigate"]["note"]
    assert [r for r in edr.requests if "devices-actions" in r.path] == contained_before


async def test_denied_containment_is_not_sent_to_any_vendor(store: Store) -> None:
    """Given an analyst who denies,
    When handle-incident runs,
    Then every containment plan is recorded as denied with the reason, the EDR never
    receives a containment request, and the host is not contained."""
    incident = new_incident()
    outcome, _ = await run(incident, store, deny)
    assert isinstance(outcome, IncidentOutcome), outcome
    contain = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contain and all(a.status == ActionStatus.DENIED for a in contain)
    assert all("false positive" in (a.error or "") for a in contain)
    edr = default_lab().simulator("crowdstrike")
    assert not [r for r in edr.requests if "devices-actions" in r.path]
    [row] = await store.approvals(incident_id=incident.id)
    assert (row.status, row.decided_by) == ("denied", "cli:bob")
    # Nothing was contained: the contain clock stays empty and says why; the case still
    # goes on to wait for an analyst's closure (never "resolved" by the report).
    assert outcome.clocks["contain"] is None
    assert outcome.clock_notes["contain"] == "containment denied"
    assert outcome.clocks["acknowledge"] is not None  # bob's denial was a human touch
    assert outcome.case_status == "awaiting-closure"
    case_row = await store.get_incident(incident.id)
    assert case_row is not None and case_row.status == "awaiting-closure"


async def test_a_forged_resume_is_an_attempt_and_the_run_waits_for_a_real_decision(
    store: Store,
) -> None:
    """Given someone resuming the paused run through the Prefect API with a decision
    that is well-formed but not signed with the stanch key,
    When the flow checks it,
    Then it approves nothing and denies nothing: the attempt is kept in the store and the
    ledger, the approval stays pending and the run pauses again; the analyst's real
    approval then contains the incident."""
    incident = new_incident()
    seen: list[str] = []

    async def forge_then_approve(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
        await forge(store, settings, row)
        for _ in range(150):
            if await store.attempts(row.id):
                break
            await asyncio.sleep(0.2)
        current = await store.get_approval(row.id)
        assert current is not None
        seen.append(current.status)
        await approve(store, settings, row)

    outcome, _ = await run(incident, store, forge_then_approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    assert seen == ["pending"], "the forgery decided the request"
    contain = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contain and all(a.status == ActionStatus.EXECUTED for a in contain)
    assert all(a.approved_by == ["cli:alice"] for a in contain)
    [row] = await store.approvals(incident_id=incident.id)
    assert (row.status, row.decided_by) == ("approved", "cli:alice")
    [attempt] = await store.attempts(row.id)
    assert attempt.claimed_by == "unverified:mallory"
    assert "signature does not verify" in attempt.problem
    decisions = [e for e in await Ledger(store).entries(incident.id) if e.kind == "decision"]
    assert [(e.status, e.approvers) for e in decisions] == [
        ("unverified", ["unverified:mallory"]),
        ("approved", ["cli:alice"]),
    ]


async def test_a_run_forced_to_running_without_a_decision_goes_back_to_waiting(
    store: Store,
) -> None:
    """Given someone forcing the paused run to Running through the Prefect API (no input),
    When the flow finds no decision,
    Then it does not crash and does not deny: it records the attempt, pauses again, and
    the real approval then contains the incident."""
    from prefect.states import Running

    incident = new_incident()

    async def force_then_approve(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
        assert row.flow_run_id is not None
        await wait_until_paused(UUID(row.flow_run_id))
        async with get_client() as client:
            await client.set_flow_run_state(UUID(row.flow_run_id), Running(), force=True)
        for _ in range(150):
            if await store.attempts(row.id):
                break
            await asyncio.sleep(0.2)
        await approve(store, settings, row)

    outcome, _ = await run(incident, store, force_then_approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    contain = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contain and all(a.status == ActionStatus.EXECUTED for a in contain)
    [row] = await store.approvals(incident_id=incident.id)
    [attempt] = await store.attempts(row.id)
    assert row.status == "approved"
    assert attempt.problem.startswith("resumed without a decision")


async def test_transient_vendor_fault_is_retried_once_and_succeeds(store: Store) -> None:
    """Given the EDR answering the first containment call with 503,
    When the contain task runs,
    Then Prefect retries it (transient), the second call succeeds, and the action is done."""
    incident = new_incident()
    edr = default_lab().simulator("crowdstrike")
    edr.fail_next(1, status=503, path_prefix="/devices/entities/devices-actions")
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    calls = [r.status for r in edr.requests if r.path.startswith("/devices/entities/devices-act")]
    hosts = [a for a in outcome.actions if a.plan.verb == "contain_host"]
    # The incident's host and the others its hunt found: one retry in all.
    assert calls == [503] + [202] * len(hosts), calls
    assert hosts and all(h.status == ActionStatus.EXECUTED for h in hosts)


async def test_permanent_vendor_fault_is_not_retried_and_fails_the_run(store: Store) -> None:
    """Given FortiGate answering 429 (an auth lockout, never retried) to the block,
    When the contain stage runs,
    Then each block is tried exactly once, recorded as failed, the report is still written,
    and the flow run ends Failed instead of claiming success."""
    incident = new_incident()
    fw = default_lab().simulator("fortigate")
    fw.fail_next(10, status=429, path_prefix="/api/v2/monitor/user/banned")
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentIncomplete)
    rows = {r.action: r for r in await store.actions(incident.id)}
    assert rows["firewall.block_ip"].status == "failed"
    assert rows["edr.contain_host"].status == "executed"
    blocks = [r for r in fw.requests if r.path.startswith("/api/v2/monitor/user/banned")]
    assert len(blocks) == 2  # one attempt per IP, no retries
    settings = load_settings()
    assert (settings.reports_dir / f"{incident.id}.md").exists()


async def test_a_contain_stage_that_fails_half_way_rolls_its_containment_back(
    store: Store,
) -> None:
    """Given FortiGate refusing every block (a permanent fault) while the EDR and the IdP
    accept their containment,
    When the contain stage runs in its transaction,
    Then the failed blocks roll the stage back: the host is released and the user
    unsuspended by the rollback hooks, each compensation is recorded in the store and the
    ledger on the transaction's authority, nothing is left in effect, remediation does not
    run, and the run ends Failed with its report written."""
    incident = new_incident()
    fw = default_lab().simulator("fortigate")
    fw.fail_next(10, status=429, path_prefix="/api/v2/monitor/user/banned")
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentIncomplete)

    rows = {r.action: r for r in await store.actions(incident.id)}
    assert rows["edr.contain_host"].status == "executed"
    assert rows["identity.suspend_user"].status == "executed"
    for undone in ("edr.release_host", "identity.unsuspend_user"):
        assert rows[undone].status == "executed", undone
        assert rows[undone].result is not None
        assert rows[undone].result["approved_by"] == ["policy:rollback"]
    assert not {"edr.block_hash", "identity.expire_password"} & set(rows), "remediation ran"
    ledger = Ledger(store)
    assert await ledger.in_effect(incident.id) == []
    assert (await ledger.verify()).ok

    async with connect(load_settings()) as live:
        host = await live.edr.find_host("WS-0042")
        user = await live.identity.find_user("jdoe@acme.example")
    assert host is not None and host.containment == Containment.NORMAL
    assert user is not None and user.status == "active"
    events = [(e.stage, e.event) for e in await store.stage_events(incident.id)]
    assert ("contain", "failed") in events and ("remediate", "started") not in events


async def test_a_rollback_that_cannot_undo_names_what_is_still_in_effect(
    store: Store,
) -> None:
    """Given FortiGate refusing every block (so containment rolls back) and Okta answering
    every unsuspend with 503,
    When the contain stage rolls back,
    Then the host is released, the unsuspension is retried (not tried once) and then
    recorded failed, never left started, and the suspension is named "still in effect
    after a failed rollback" in the report and in the ledger."""
    incident = new_incident()
    settings = load_settings()
    provision_lab(default_lab(), settings, incident)
    okta = default_lab().simulator("okta")
    [user_id] = [u for u in okta._users if okta._users[u].profile["login"] == incident.users[0]]
    okta.fail_next(50, status=503, path_prefix=f"/api/v1/users/{user_id}/lifecycle/unsuspend")
    default_lab().simulator("fortigate").fail_next(
        10, status=429, path_prefix="/api/v2/monitor/user/banned"
    )
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentIncomplete)

    rows = {r.action: r for r in await store.actions(incident.id)}
    assert rows["edr.release_host"].status == "executed"
    assert rows["identity.unsuspend_user"].status == "failed"
    unsuspends = [r for r in okta.requests if r.path.endswith("/lifecycle/unsuspend")]
    assert len(unsuspends) > 1, "retried, not tried once"
    report = (settings.reports_dir / f"{incident.id}.md").read_text()
    [effect] = await Ledger(store).in_effect(incident.id)
    assert (effect.entry.verb, effect.entry.target_label) == ("suspend_user", incident.users[0])
    line = f"{in_effect_line(effect)} — {STILL_IN_EFFECT}"
    assert line.startswith(f"Suspend user {incident.users[0]} (Okta)"), line
    assert md_escape(line) in report
    [failed] = [
        e
        for e in await Ledger(store).entries(incident.id)
        if e.verb == "unsuspend_user" and e.status == "failed"
    ]
    assert failed.approvers == ["policy:rollback"] and STILL_IN_EFFECT in (failed.error or "")


async def test_rerunning_an_incident_does_not_repeat_vendor_actions(store: Store) -> None:
    """Given an incident already handled,
    When handle-incident runs again for the same incident,
    Then every action is replayed from the store and no mutating call reaches a vendor."""
    incident = new_incident()
    first, _ = await run(incident, store, approve)
    assert isinstance(first, IncidentOutcome)
    lab = default_lab()
    before = {v: len(s.requests) for v, s in lab.simulators.items()}
    second, _ = await run(incident, store, approve)
    assert isinstance(second, IncidentOutcome), second
    mutating = [
        r
        for v, s in lab.simulators.items()
        for r in s.requests[before[v] :]
        if r.method in ("POST", "PATCH", "DELETE")
        and "token" not in r.path
        and "check" not in r.path
    ]
    assert mutating == []
    assert {a.status for a in second.actions} == {ActionStatus.EXECUTED}
    async with get_client() as client:
        runs = await client.read_flow_runs()
    names = [r.name for r in runs]
    assert names.count(f"{incident.id} {incident.title}") == 2


async def test_undo_reverses_what_is_in_effect_through_approval(store: Store) -> None:
    """Given an incident whose containment and remediation ran,
    When undo-incident runs and the analyst approves the inverse plans,
    Then the host is released, the user unsuspended and then their password expired, the
    blocks lifted, nothing is left in effect, and the ledger still verifies."""
    incident = new_incident()
    outcome, _ = await run(incident, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome

    settings = load_settings()
    answered: list[str] = []

    async def analyst() -> None:
        while True:
            for row in await store.approvals(incident_id=incident.id, status="pending"):
                if row.id not in answered:
                    answered.append(row.id)
                    await approve(store, settings, row)
            await asyncio.sleep(0.2)

    helper = asyncio.create_task(analyst())
    try:
        undone = await undo_incident(incident.id)
    finally:
        helper.cancel()
        await asyncio.gather(helper, return_exceptions=True)

    contained = [a for a in outcome.actions if a.plan.verb == "contain_host"]
    assert len(contained) >= 2, "the host and those the hunt found"
    assert sorted(a.plan.verb for a in undone) == sorted(
        [
            "expire_password",
            *["release_host"] * len(contained),
            "unblock_hash",
            "unblock_ip",
            "unblock_ip",
            "unsuspend_user",
        ]
    )
    # Okta expires an active account's password only: the expiry ran after the unsuspend.
    verbs = [a.plan.verb for a in undone]
    assert verbs.index("expire_password") > verbs.index("unsuspend_user")
    assert all(a.status == ActionStatus.EXECUTED for a in undone)
    # Policy pre-authorises the password expiry (it only tightens); the rest was approved.
    assert {a.plan.verb: a.approved_by for a in undone}["expire_password"] == ["policy:unattended"]
    assert all(a.approved_by == ["cli:alice"] for a in undone if a.plan.verb != "expire_password")
    assert len(answered) == 1
    async with connect(settings) as live:
        user = await live.identity.find_user("jdoe@acme.example")
        assert await live.firewall.list_blocked() == []
    assert user is not None and user.status == "active"
    assert user.vendor_status == "PASSWORD_EXPIRED"
    ledger = Ledger(store)
    assert await ledger.in_effect(incident.id) == []
    assert (await ledger.verify()).ok


@pytest.fixture
def budget_of_one_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default policy, but containment runs unattended within a budget of one an hour."""
    policies = tmp_path / "policies"
    policies.mkdir()
    default = (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
    rule = "  edr.contain_host:\n    approvals: 1\n"
    assert rule in default
    budgeted = (
        "  edr.contain_host:\n    unattended_from: informational\n    budget: {max: 1, per: 1h}\n"
    )
    (policies / "default.yaml").write_text(default.replace(rule, budgeted))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))
    return policies


@pytest.mark.usefixtures("budget_of_one_policies")
async def test_a_rerun_replays_done_actions_without_asking_policy_again(store: Store) -> None:
    """Given a tenant whose budget allows one unattended host containment an hour, and an
    incident whose run used it,
    When the incident runs again,
    Then what ran is replayed, not put to policy again: the containment does not count
    against its own budget, nobody is asked, the store keeps it executed and the ledger
    gains no refusal."""
    # A tenant of its own: other tests' containments must not spend this budget.
    incident = factories.incident(next(_numbers), tenant="budget-of-one")
    first, answered_first = await run(incident, store, approve)
    assert isinstance(first, IncidentOutcome), first
    [host] = [
        a
        for a in first.actions
        if a.plan.verb == "contain_host" and a.plan.target_label == incident.hostnames[0]
    ]
    assert host.approved_by == ["policy:unattended"]
    requests_before = len(await store.approvals(incident_id=incident.id))

    second, answered_second = await run(incident, store, approve)
    assert isinstance(second, IncidentOutcome), second
    assert answered_second == []
    assert len(await store.approvals(incident_id=incident.id)) == requests_before
    rows = await store.actions(incident.id)
    assert {r.status for r in rows} == {"executed"}
    entries = await Ledger(store).entries(incident.id)
    assert not [e for e in entries if e.status in ("denied", "forbidden")]
    assert answered_first, "the first run asked about the rest of the containment"


@pytest.fixture
def ui_enabled_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default policy with the Prefect UI approval channel switched on."""
    policies = tmp_path / "policies"
    policies.mkdir()
    default = (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
    assert "prefect_ui: false" in default
    (policies / "default.yaml").write_text(default.replace("prefect_ui: false", "prefect_ui: true"))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))
    return policies


@pytest.mark.usefixtures("ui_enabled_policies")
async def test_prefect_ui_resume_approves_where_policy_enables_that_channel(
    store: Store,
) -> None:
    """Given a tenant policy that enables the Prefect UI channel,
    When someone resumes the paused run from the Prefect UI form (no signature),
    Then the containment runs, recorded as approved through prefect-ui by the typed name.
    (Without that policy the same resume is refused: see the forged-resume test.)"""

    async def from_the_ui(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
        assert row.flow_run_id is not None
        await wait_until_paused(UUID(row.flow_run_id))
        await aresume_flow_run(
            UUID(row.flow_run_id),
            run_input={
                "approval_id": row.id,
                "approved": list(row.plans["sha256s"]),
                "denied": [],
                "approver": "carol",
                "channel": "prefect-ui",
                "reason": "checked in the UI",
                "decided_at": "2026-11-21T00:00:00Z",
            },
        )

    outcome, _ = await run(new_incident(), store, from_the_ui)
    assert isinstance(outcome, IncidentOutcome), outcome
    contain = [a for a in outcome.actions if a.plan.stage == "contain"]
    assert contain and all(a.status == ActionStatus.EXECUTED for a in contain)
    assert all(a.approved_by == ["prefect-ui:carol"] for a in contain)


REPO = Path(__file__).resolve().parents[2]
BROKEN_PLAYBOOK = """\
id: broken
version: 1
title: A playbook that names an action stanch does not have
owner: soc-leads
trigger:
  min_severity: low
steps:
  contain:
    - id: nuke
      action: edr.nuke_from_orbit
      args:
        host_id: "{{ incident.id }}"
"""


async def _events(name: str, resource: str) -> list[Any]:
    """The Prefect events of that name about that resource (they are stored in the background)."""
    async with get_client() as client:
        for _ in range(50):
            response = await client._client.post(
                "/events/filter",
                json={"filter": {"event": {"name": [name]}, "resource": {"id": [resource]}}},
            )
            found = response.json().get("events", [])
            if found:
                return list(found)
            await asyncio.sleep(0.2)
    return []


async def test_a_broken_playbook_beside_a_good_one_is_skipped_and_reported(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a playbooks directory with the ransomware playbook and a broken one
    When the demo incident runs
    Then it routes to ransomware and completes; the broken playbook is named (file and
    line) in the outcome and the report, and a stanch.playbook.invalid Prefect event
    says so."""
    library = tmp_path / "playbooks"
    library.mkdir()
    (library / "ransomware.yaml").write_text((REPO / "playbooks" / "ransomware.yaml").read_text())
    (library / "broken.yaml").write_text(BROKEN_PLAYBOOK)
    monkeypatch.setenv("STANCH_PLAYBOOKS_DIR", str(library))

    outcome, _ = await run(new_incident(), store, approve)

    assert isinstance(outcome, IncidentOutcome), outcome
    assert outcome.playbook == "ransomware"
    assert [s.state for s in outcome.stages] == ["completed"] * 5
    [warning] = outcome.warnings
    assert f"{library / 'broken.yaml'}:10: unknown-action" in warning
    report = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    assert "broken\\.yaml" in report and "was skipped" in report  # Markdown-escaped
    [event] = await _events("stanch.playbook.invalid", "stanch.playbook.broken")
    assert event["payload"]["file"] == str(library / "broken.yaml")


async def test_a_policy_that_does_not_load_means_approval_for_everything(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the tenant's own policy file that does not validate (policy would otherwise
    let the remediation run unattended) beside a default.yaml that does,
    When the demo incident runs
    Then it does not fail and nothing runs unattended: every action, remediation
    included, was approved by an approver default.yaml names, and the report says why."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text(
        "version: 1\napprovers: {cli: true, cli_users: [alice]}\n"
    )
    (policies / "demo.yaml").write_text("version: 1\ntenant: demo\n\nactions: [oops]\n")
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))

    outcome, answered = await run(new_incident(), store, approve)

    assert isinstance(outcome, IncidentOutcome), outcome
    assert len(answered) == 2, "containment and remediation each asked"
    assert outcome.actions
    assert all(a.approved_by == ["cli:alice"] for a in outcome.actions)
    assert not [a for a in outcome.actions if "policy:unattended" in a.approved_by]
    assert {a.plan.stage for a in outcome.actions} == {"contain", "remediate"}
    [warning] = outcome.warnings
    assert "every action asked for approval" in warning and "demo.yaml:" in warning


async def test_with_no_policy_that_loads_nobody_can_approve_and_nothing_runs(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a default.yaml that does not validate and no other policy (so no list of
    approvers can be trusted),
    When the demo incident runs and an operator tries `stanch approve`'s decision,
    Then the decision is refused, every request expires at its deadline, and nothing was
    done: no vendor state changed, every action denied."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "default.yaml").write_text("version: 1\napprovers: {cli: true}\n")
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))
    monkeypatch.setenv("STANCH_APPROVAL_TIMEOUT_SECONDS", "5")
    refusals: list[str] = []

    async def try_to_approve(store: Store, settings: StanchSettings, row: ApprovalRow) -> None:
        try:
            await approve(store, settings, row)
        except ApprovalError as refused:
            refusals.append(str(refused))
        else:
            refusals.append("approved")

    outcome, answered = await run(new_incident(), store, try_to_approve)

    assert isinstance(outcome, IncidentOutcome), outcome
    assert answered and len(refusals) == len(answered)
    assert all("does not accept decisions from the CLI" in r for r in refusals), refusals
    assert outcome.actions
    assert all(a.status != ActionStatus.EXECUTED for a in outcome.actions)
    rows = await store.approvals(incident_id=outcome.incident.id)
    assert rows and all(r.status == "expired" for r in rows), [r.status for r in rows]
    [warning] = outcome.warnings
    assert "default.yaml:2" in warning and "no-cli-users" in warning


async def test_the_report_reads_like_a_report_and_its_artifacts_are_the_runs(
    store: Store,
) -> None:
    """Given a denied containment (nothing contained)
    When the report is written
    Then it opens with the executive summary, the contain stage says "nothing contained
    (denied)", denied rows name who and why, times carry the zone and no microseconds,
    durations read in units; and both artifacts belong to the flow run itself, the actions
    table with short hashes, the report's address in the outcome."""
    outcome, _ = await run(new_incident(), store, deny)
    assert isinstance(outcome, IncidentOutcome), outcome

    report = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    for heading in ("**What happened.**", "**What was done.**", "**Still in effect.**",
                    "**What to do next.**"):  # fmt: skip
        assert heading in report
    assert "| contain | nothing contained (denied) |" in report
    assert "denied by cli:bob: false positive" in report  # who denied, and why
    assert re.search(r"\d{2}:\d{2}:\d{2} UTC", report)
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d", report), "no microseconds"
    assert re.search(r"\| \d+ (s|m \d\d s) \|", report), "durations in units"
    html = await asyncio.to_thread(Path(outcome.report_paths["html"]).read_text)
    assert 'class="denied">nothing contained (denied)' in html

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[UUID(outcome.flow_run_id or "")])
            )
        )
    by_key = {a.key: a for a in artifacts}
    key = outcome.incident.id.lower()
    assert set(by_key) >= {f"{key}-report", f"{key}-actions"}
    for artifact in by_key.values():
        assert str(artifact.flow_run_id) == outcome.flow_run_id and artifact.task_run_id is None
    table = json.loads(str(by_key[f"{key}-actions"].data))
    assert all(len(row["plan"]) == 12 for row in table)
    assert outcome.report_paths["prefect"].endswith(
        f"/artifacts/artifact/{by_key[f'{key}-report'].id}"
    )
