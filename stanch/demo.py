"""``stanch demo``: one ransomware incident through the whole lifecycle, against the lab.

The scenario: ransomware runs on workstation WS-0042 and calls out to a C2 address, while
the workstation user's credentials sign in from a country they never use. stanch
investigates the host and the user, plans containment (isolate the host, suspend the user
and revoke their sessions, block the C2 address), waits for a simulated analyst's approval,
executes, remediates (block the file hash, expire the password) and writes the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.schemas.objects import State

from flows.approvals import submit_decision
from flows.lifecycle import handle_incident
from flows.models import ActionStatus, Incident, IncidentOutcome
from flows.settings import StanchSettings
from flows.store import Store, open_store
from flows.wiring import Lab, default_lab
from integrations.ocsf import DetectionFinding, ObservableType
from stanch.prefect_server import drain_prefect_clients

HOSTNAME = "WS-0042"
USER = "jdoe@acme.example"
C2_IP = "203.0.113.66"
SIGNIN_IP = "198.51.100.77"
RANSOMWARE_SHA256 = "8f2b7c1e5a9d4f3b6c0e1a2d7f8b9c4e5d6a3f2e1b0c9d8e7f6a5b4c3d2e1f0a"

_PRODUCT_NAMES = {
    "crowdstrike": ("CrowdStrike", "Falcon Insight"),
    "defender": ("Microsoft", "Defender for Endpoint"),
    "sentinelone": ("SentinelOne", "Singularity"),
    "okta": ("Okta", "Okta System Log"),
    "entra": ("Microsoft", "Entra ID Protection"),
}


def _finding(
    *,
    vendor: str,
    uid: str,
    at: datetime,
    severity_id: int,
    title: str,
    attacks: list[dict[str, Any]],
    extra: dict[str, Any],
) -> DetectionFinding:
    vendor_name, product = _PRODUCT_NAMES.get(vendor, (vendor, vendor))
    return DetectionFinding.model_validate(
        {
            "class_uid": 2004,
            "category_uid": 2,
            "activity_id": 1,
            "type_uid": 200401,
            "severity_id": severity_id,
            "time": int(at.timestamp() * 1000),
            "metadata": {
                "version": "1.8.0",
                "product": {"name": product, "vendor_name": vendor_name, "uid": vendor},
            },
            "finding_info": {"uid": uid, "title": title, "attacks": attacks},
            **extra,
        }
    )


def scenario_alerts(now: datetime, *, edr: str, identity: str) -> list[DetectionFinding]:
    """The two alerts of the demo incident, as the EDR and the IdP would report them."""
    ransomware = _finding(
        vendor=edr,
        uid=f"{edr}:demo:ransomware:0001",
        at=now - timedelta(seconds=40),
        severity_id=5,
        title="Ransomware encrypting files on WS-0042",
        attacks=[
            {
                "tactic": {"uid": "TA0040", "name": "Impact"},
                "technique": {"uid": "T1486", "name": "Data Encrypted for Impact"},
            },
            {
                "tactic": {"uid": "TA0011", "name": "Command and Control"},
                "technique": {"uid": "T1071.001", "name": "Web Protocols"},
            },
        ],
        extra={
            "device": {"type_id": 2, "hostname": HOSTNAME, "ip": "10.20.4.42"},
            "evidences": [
                {
                    "process": {
                        "pid": 6604,
                        "name": "invoice_viewer.exe",
                        "cmd_line": r"C:\Users\jdoe\Downloads\invoice_viewer.exe --silent",
                        "file": {
                            "name": "invoice_viewer.exe",
                            "type_id": 1,
                            "hashes": [{"algorithm_id": 3, "value": RANSOMWARE_SHA256}],
                        },
                        "user": {"name": USER},
                    },
                    "dst_endpoint": {"ip": C2_IP, "port": 443},
                }
            ],
        },
    )
    impossible_travel = _finding(
        vendor=identity,
        uid=f"{identity}:demo:signin:0001",
        at=now - timedelta(seconds=25),
        severity_id=4,
        title="Sign-in from a new country (RO) for jdoe@acme.example",
        attacks=[
            {
                "tactic": {"uid": "TA0001", "name": "Initial Access"},
                "technique": {"uid": "T1078", "name": "Valid Accounts"},
            },
        ],
        extra={
            "actor": {"user": {"name": USER}},
            "evidences": [{"src_endpoint": {"ip": SIGNIN_IP, "location": {"country": "RO"}}}],
        },
    )
    return [ransomware, impossible_travel]


def incident_title(alerts: list[DetectionFinding]) -> str:
    """A short incident title from its most severe alert."""
    top = max(alerts, key=lambda a: int(a.severity_id))
    words = top.title.lower()
    kind = "ransomware" if "ransomware" in words else top.title[:60]
    hosts = [h for a in alerts for h in a.observed(ObservableType.HOSTNAME)]
    return f"{kind} on {hosts[0]}" if hosts else kind


def provision_lab(lab: Lab, settings: StanchSettings, incident: Incident) -> None:
    """Give the lab's simulators the hosts and users the incident names.

    In lab mode there is no real fleet: the EDR simulator learns each host and the
    identity simulator each user, so investigation finds what the alerts talk about.
    """
    edr_vendor = settings.vendor_for("edr", incident.tenant)
    identity_vendor = settings.vendor_for("identity", incident.tenant)
    edr = lab.simulator(edr_vendor)
    for hostname in incident.hostnames:
        if ("host", edr_vendor, hostname) not in lab.provisioned:
            edr.add_host(hostname)  # type: ignore[attr-defined]
            lab.provisioned.add(("host", edr_vendor, hostname))
    identity = lab.simulator(identity_vendor)
    for login in incident.users:
        if ("user", identity_vendor, login) not in lab.provisioned:
            identity.add_user(login)  # type: ignore[attr-defined]
            lab.provisioned.add(("user", identity_vendor, login))


async def simulated_analyst(
    store: Store, key: bytes, incident_id: str, *, delay: float, stop: asyncio.Event
) -> list[str]:
    """Approve every approval request of the incident ``delay`` seconds after it appears.

    Goes through the same :func:`submit_decision` as ``stanch approve``: a signed
    decision resumes the paused flow run through the Prefect API.
    """
    decided: list[str] = []
    while not stop.is_set():
        for row in await store.approvals(incident_id=incident_id, status="pending"):
            if row.id in decided:
                continue
            await asyncio.sleep(delay)
            await submit_decision(
                store,
                key,
                row.id,
                approve=True,
                approver="sim-analyst",
                channel="simulated-analyst",
                reason="Confirmed ransomware and account takeover",
            )
            decided.append(row.id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.2)
    return decided


async def run_incident(
    settings: StanchSettings,
    alerts: list[DetectionFinding],
    *,
    analyst_delay: float | None,
    title: str | None = None,
) -> tuple[IncidentOutcome | None, str | None, BaseException | None]:
    """Make an incident of ``alerts``, run ``handle-incident`` on it in this process.

    Returns:
        The outcome (``None`` if the flow failed before reporting), the flow run id, and
        the error the flow ended with, if any.
    """
    async with open_store(settings.store_url) as store:
        now = datetime.now(UTC)
        incident = Incident(
            id=await store.allocate_incident_id(now),
            tenant=settings.tenant,
            title=title or incident_title(alerts),
            created_at=now,
            alerts=alerts,
        )
        await store.save_incident(incident)
        if settings.mode == "lab":
            provision_lab(default_lab(), settings, incident)
        stop = asyncio.Event()
        analyst = None
        if analyst_delay is not None:
            analyst = asyncio.create_task(
                simulated_analyst(
                    store, settings.approval_key(), incident.id, delay=analyst_delay, stop=stop
                )
            )

        async def run_flow() -> State[Any]:
            state: State[Any] = await handle_incident(incident, return_state=True)
            return state

        flow_task = asyncio.create_task(run_flow())
        try:
            if analyst is not None:
                # If the analyst fails, the flow would sit paused until its approval
                # deadline: stop it and surface the analyst's error instead.
                await asyncio.wait({flow_task, analyst}, return_when=asyncio.FIRST_COMPLETED)
                if analyst.done() and analyst.exception() is not None:
                    flow_task.cancel()
                    await asyncio.gather(flow_task, return_exceptions=True)
                    await analyst
            state = await flow_task
        finally:
            stop.set()
            if analyst is not None and not analyst.done():
                await analyst
        await drain_prefect_clients()
        result = await state.aresult(raise_on_failure=False)
        flow_run_id = str(state.state_details.flow_run_id)
        if isinstance(result, IncidentOutcome):
            return result, flow_run_id, None
        return None, flow_run_id, result if isinstance(result, BaseException) else None


def summary(
    outcome: IncidentOutcome, flow_run_id: str | None, *, elapsed: float, ui_url: str | None
) -> dict[str, Any]:
    """The one JSON object ``stanch demo --json`` prints."""
    return {
        "incident_id": outcome.incident.id,
        "title": outcome.incident.title,
        "flow_run_id": flow_run_id,
        "stages": {s.stage.value: s.state for s in outcome.stages},
        "actions": [
            {
                "capability": a.plan.capability.value,
                "verb": a.plan.verb,
                "target": a.plan.target_label,
                "plan_sha256": a.plan_sha256,
                "status": a.status.value,
                "approved_by": a.approved_by,
                "vendor": a.vendor,
            }
            for a in outcome.actions
        ],
        "executed": sum(
            a.status in (ActionStatus.EXECUTED, ActionStatus.ALREADY_DONE) for a in outcome.actions
        ),
        "report": outcome.report_paths,
        "clocks": outcome.clocks,
        "elapsed_seconds": round(elapsed, 2),
        "ui_url": ui_url,
    }


async def run_demo(
    settings: StanchSettings, *, analyst_delay: float, ui_url: str | None
) -> tuple[dict[str, Any] | None, BaseException | None]:
    """Run the scenario; return the summary (or ``None``) and the flow's error, if any."""
    started = time.perf_counter()
    default_lab().reset()
    alerts = scenario_alerts(datetime.now(UTC), edr=settings.edr, identity=settings.identity)
    outcome, flow_run_id, error = await run_incident(settings, alerts, analyst_delay=analyst_delay)
    if outcome is None:
        return None, error
    return summary(
        outcome, flow_run_id, elapsed=time.perf_counter() - started, ui_url=ui_url
    ), error
