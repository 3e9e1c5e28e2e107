"""`stanch rerun`: which earlier runs count as gone, superseding them, re-running in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Completed, Running

from flows.models import Incident
from flows.record import ApprovalRow, Ledger, Store, open_store
from flows.runs import (
    PreviousRun,
    RerunRefused,
    Superseded,
    alive,
    default_stale_after,
    unfinished_runs,
)
from flows.settings import load_settings
from flows.wiring import default_lab
from stanch.rerun_cli import RerunOutcome, _print, rerun_incident
from tests.flows import factories
from tests.stanch.policies import UNATTENDED_POLICIES

"""Every verb of the built-in response runs unattended for tenant ``demo``."""

_numbers = iter(range(8100, 9000))


@flow(name="handle-incident")
def stand_in() -> None:
    """Only its name is used: runs of it stand for earlier handle-incident runs."""


def test_a_run_is_alive_until_it_has_been_silent_for_stale_after() -> None:
    """Given runs last heard from 10 s and 10 min ago,
    When judged with a 5 min threshold, Then only the first counts as alive."""
    now = datetime.now(UTC)
    recent = PreviousRun(uuid4(), "INC-1 a", "Running", now - timedelta(seconds=10))
    silent = PreviousRun(uuid4(), "INC-1 b", "Paused", now - timedelta(minutes=10))

    assert alive([recent, silent], now=now, stale_after=300) == [recent]
    assert alive([recent, silent], now=now, stale_after=5) == []
    assert alive([recent, silent], now=now, stale_after=3600) == [recent, silent]


def test_gone_means_three_missed_heartbeats() -> None:
    """Given Prefect's flow-run heartbeat every 60 s, Then a run is gone after 180 s."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}):
        assert default_stale_after() == 180


def test_the_summary_says_what_was_superseded_and_where_the_report_went(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Given a rerun that superseded a run whose title looks like Rich markup,
    When it is printed for a human, Then the title is printed as it is, with the report."""
    title = "INC-20261121-0001 [bold red]ransomware[/bold red]"
    outcome = RerunOutcome(
        incident_id="INC-20261121-0001",
        flow_run_id="new-run",
        state="Completed",
        superseded=[Superseded("old-run", title, "Running", 612.0, forced=False)],
        expired_approvals=["APR-0123456789"],
        summary=None,
        error=None,
        report={"markdown": "reports/INC-20261121-0001.md"},
    )

    _print(outcome, json_output=False)

    printed = capsys.readouterr().out
    assert f"superseded old-run ({title}): Running → Crashed (silent for 612s)" in printed
    assert "expired APR-0123456789" in printed
    assert "re-run in flow run new-run: Completed" in printed
    assert "Report: reports/INC-20261121-0001.md" in printed


@pytest.fixture
def rerun_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Lab mode with this test's own stanch home, reports and an unattended policy."""
    policies = UNATTENDED_POLICIES
    (tmp_path / "playbooks").mkdir()
    monkeypatch.setenv("STANCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STANCH_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("STANCH_POLICIES_DIR", str(policies))
    monkeypatch.setenv("STANCH_PLAYBOOKS_DIR", str(tmp_path / "playbooks"))
    default_lab().reset()
    yield tmp_path
    default_lab().reset()


@pytest.fixture
async def client(prefect_server: str) -> AsyncIterator[PrefectClient]:
    async with get_client() as opened:
        yield opened


@pytest.fixture
async def store(rerun_env: Path) -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


async def earlier_run(
    client: PrefectClient, incident: Incident | None, name: str, *, running: bool = True
) -> UUID:
    """A handle-incident run in Prefect, started for ``incident``, with no process behind it."""
    run = await client.create_flow_run(
        stand_in,
        name=name,
        parameters={"incident": incident.model_dump(mode="json")} if incident else {},
        state=Running() if running else Completed(),
    )
    return run.id


async def pending_approval(store: Store, incident: Incident, run_id: UUID) -> str:
    now = datetime.now(UTC)
    approval_id = f"APR-{uuid4().hex[:10]}"
    await store.create_approval(
        ApprovalRow(
            id=approval_id,
            incident_id=incident.id,
            tenant=incident.tenant,
            flow_run_id=str(run_id),
            requester="stanch:handle-incident",
            plans={"plans": [], "sha256s": ["a" * 64]},
            status="pending",
            requested_at=now,
            deadline=now + timedelta(minutes=15),
        )
    )
    return approval_id


async def test_unfinished_runs_are_this_incidents_not_its_namesakes(
    client: PrefectClient,
) -> None:
    """Given runs of an incident (one running, one completed), a running run of another
    store's incident with the same id, one of an incident whose id contains this one's,
    and the run the store recorded (renamed, without parameters),
    When the incident's unfinished runs are looked up,
    Then the running one and the recorded one are found, nothing else."""
    incident = factories.incident(next(_numbers))
    name = f"{incident.id} {incident.title}"
    running = await earlier_run(client, incident, name)
    await earlier_run(client, incident, name, running=False)
    namesake = incident.model_copy(update={"created_at": incident.created_at - timedelta(days=1)})
    await earlier_run(client, namesake, name)
    longer = incident.model_copy(update={"id": f"{incident.id}7"})
    await earlier_run(client, longer, f"{longer.id} {incident.title}")
    recorded = await earlier_run(client, None, "renamed by hand")

    runs = await unfinished_runs(client, incident, str(recorded))

    assert {r.id for r in runs} == {running, recorded}
    assert all(r.state == "Running" for r in runs)
    assert all(datetime.now(UTC) - r.last_sign_of_life < timedelta(minutes=1) for r in runs)


async def test_a_recently_active_run_refuses_the_rerun(client: PrefectClient, store: Store) -> None:
    """Given an incident whose recorded run is Running and changed state just now,
    When it is re-run with the default idea of "gone" (minutes of silence),
    Then it is refused naming the run, which stays Running, and nothing is executed."""
    incident = factories.incident(next(_numbers))
    run_id = await earlier_run(client, incident, f"{incident.id} {incident.title}")
    await store.save_incident(incident, flow_run_id=str(run_id))
    approval_id = await pending_approval(store, incident, run_id)

    with pytest.raises(RerunRefused, match=str(run_id)):
        await rerun_incident(
            load_settings(),
            incident,
            str(run_id),
            force=False,
            stale_after=600,
            analyst_delay=None,
            operator="tester@test",
        )

    run = await client.read_flow_run(run_id)
    assert run.state is not None and run.state.name == "Running"
    assert (await store.get_approval(approval_id)).status == "pending"  # type: ignore[union-attr]
    assert list(await store.actions(incident.id)) == []


async def test_a_silent_run_is_crashed_and_the_incident_is_handled_again(
    client: PrefectClient, store: Store, rerun_env: Path
) -> None:
    """Given an incident whose recorded run is Running, paused on an approval request,
    with no process behind it,
    When it is re-run with a threshold it has outlived,
    Then the old run is Crashed with a message naming the rerun, its approval request is
    expired (store and ledger), and a new run completes the incident and writes the
    report."""
    incident = factories.incident(next(_numbers))
    run_id = await earlier_run(client, incident, f"{incident.id} {incident.title}")
    await store.save_incident(incident, flow_run_id=str(run_id))
    approval_id = await pending_approval(store, incident, run_id)

    outcome = await rerun_incident(
        load_settings(),
        incident,
        str(run_id),
        force=False,
        stale_after=0,
        analyst_delay=None,
        operator="tester@test",
    )

    assert outcome.error is None and outcome.state == "Completed"
    assert [(s.id, s.forced) for s in outcome.superseded] == [(str(run_id), False)]
    old = await client.read_flow_run(run_id)
    assert old.state is not None and old.state.type.value == "CRASHED"
    assert f"stanch rerun {incident.id}" in (old.state.message or "")
    assert "no sign of life" in (old.state.message or "")
    assert outcome.flow_run_id is not None
    new = await client.read_flow_run(UUID(outcome.flow_run_id))
    assert new.state is not None and new.state.type.value == "COMPLETED"
    assert "stanch-rerun" in new.tags

    assert outcome.expired_approvals == [approval_id]
    approval = await store.get_approval(approval_id)
    assert approval is not None and approval.status == "expired"
    assert approval.decided_by == "stanch:rerun"
    decisions = [e for e in await Ledger(store).entries(incident.id) if e.approval_id]
    assert [(d.approval_id, d.status) for d in decisions] == [(approval_id, "expired")]

    assert outcome.report["markdown"] == str(rerun_env / "reports" / f"{incident.id}.md")
    assert await asyncio.to_thread(Path(outcome.report["markdown"]).exists)
    assert outcome.summary is not None
    assert {a["status"] for a in outcome.summary["actions"]} == {"executed"}
    rows = await store.actions(incident.id)
    assert len(rows) == len(outcome.summary["actions"]) >= 5
