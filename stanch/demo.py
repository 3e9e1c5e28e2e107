"""``stanch demo``: one ransomware incident through the whole lifecycle, against the lab.

The scenario: ransomware runs on workstation WS-0042 and calls out to a C2 address, while
the workstation user's credentials sign in from a country they never use. stanch
investigates the host and the user, plans containment (isolate the host, suspend the user
and revoke their sessions, block the C2 address), waits for a simulated analyst's approval,
executes, remediates (block the file hash, expire the password) and writes the report.

The approval goes through Slack as it would in production, against a local fake of the
Slack Web API: the flow posts the Block Kit message with ``slack_sdk``, the simulated
analyst finds it in the fake, clicks Approve (a signed ``block_actions`` request POSTed to
the service's ``/slack/interactions`` route with httpx), and the approval service resumes
the paused run through the Prefect API with a signed decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect import tags
from prefect.client.schemas.objects import State
from pydantic import SecretStr
from slack_sdk import WebClient

from flows.approval import (
    AUTOMATION_REQUESTER,
    ApprovalService,
    interaction_router,
    run_sweeper,
    submit_decision,
)
from flows.detect import Intake
from flows.lifecycle import handle_incident
from flows.models import ActionStatus, Incident, IncidentOutcome
from flows.policy import policy_for_tenant
from flows.record import Store, open_store
from flows.settings import StanchSettings, policy_directory
from flows.wiring import Lab, default_lab
from integrations.ocsf import DetectionFinding, ObservableType
from integrations.simkit import LAB_C2_IP, LAB_RANSOMWARE_SHA256
from integrations.slack import APPROVE_ACTION_ID, SlackChat, SlackRequestVerifier
from integrations.slack.fake import FakeSlack, block_actions_payload, signed_interaction
from stanch.prefect_server import drain_prefect_clients
from stanch.service import ServiceSettings, create_app
from stanch.slack_listener import INTERACTIONS_PATH, SlackInteractions

HOSTNAME = "WS-0042"
USER = "jdoe@acme.example"
C2_IP = LAB_C2_IP
SIGNIN_IP = "198.51.100.77"
RANSOMWARE_SHA256 = LAB_RANSOMWARE_SHA256
DEMO_APPROVER = "U0DEMOANALYST"
DEMO_CHANNEL = "C0DEMOAPPROVALS"

Analyst = Callable[[Store, str, asyncio.Event], Coroutine[Any, Any, list[str]]]

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
    """The two alerts of the demo incident, as the EDR and the IdP would report them.

    Both carry ``now`` as the time they were raised: the demo raises them when it starts,
    so every clock measured from them is one a stopwatch would agree with.
    """
    ransomware = _finding(
        vendor=edr,
        uid=f"{edr}:demo:ransomware:0001",
        at=now,
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
        at=now,
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
            edr.add_host(hostname)
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


def approve_button(message: Mapping[str, Any], approval_id: str) -> dict[str, Any] | None:
    """The Approve button of ``approval_id`` in a posted message, if it still has one."""
    for block in message.get("blocks", []):
        if block.get("type") != "actions":
            continue
        for element in block.get("elements", []):
            if (
                element.get("action_id") == APPROVE_ACTION_ID
                and element.get("value") == approval_id
            ):
                return dict(element)
    return None


async def slack_analyst(
    fake: FakeSlack,
    service: httpx.AsyncClient,
    signing_secret: SecretStr,
    store: Store,
    incident_id: str,
    *,
    user_id: str,
    delay: float,
    stop: asyncio.Event,
) -> list[str]:
    """Click Approve, as ``user_id``, on each approval message the incident's flow posts.

    Finds the message in the fake Slack by its button, waits ``delay`` seconds, and sends
    the click as Slack would: a signed ``block_actions`` request to the service's route.
    """
    decided: list[str] = []
    while not stop.is_set():
        for row in await store.approvals(incident_id=incident_id, status="pending"):
            if row.id in decided:
                continue
            found = [
                (channel, message)
                for (channel, _ts), message in fake.messages.items()
                if approve_button(message, row.id) is not None
            ]
            if not found:
                continue  # not posted yet
            channel, message = found[0]
            await asyncio.sleep(delay)
            payload = block_actions_payload(
                approval_id=row.id,
                action_id=APPROVE_ACTION_ID,
                user_id=user_id,
                username="demo-analyst",
                channel_id=channel,
                message_ts=str(message["ts"]),
                team_id=fake.team_id,
                response_url=fake.response_url(),
            )
            headers, body = signed_interaction(signing_secret, payload, int(time.time()))
            response = await service.post(INTERACTIONS_PATH, content=body, headers=headers)
            response.raise_for_status()
            decided.append(row.id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.2)
    return decided


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set variables for the in-process flow (it reads its settings from the environment)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


async def _no_start(incident: Incident) -> None:
    return None


async def run_incident_via_slack(
    settings: StanchSettings, alerts: list[DetectionFinding], *, analyst_delay: float
) -> tuple[IncidentOutcome | None, str | None, BaseException | None]:
    """:func:`run_incident` with the approval asked and answered through the fake Slack."""
    rules = policy_for_tenant(policy_directory(settings.policies_dir), settings.tenant).rules
    signing_secret = SecretStr(secrets.token_hex(16))
    with FakeSlack() as fake:
        fake.add_user(DEMO_APPROVER, "demo-analyst")
        if rules.approvers.slack_group:
            fake.add_usergroup(rules.approvers.slack_group, [DEMO_APPROVER])
        env = {
            "STANCH_APPROVAL_CHANNEL": "slack",
            "STANCH_SLACK_BOT_TOKEN": fake.token,
            "STANCH_SLACK_BASE_URL": fake.base_url,
            "STANCH_SLACK_CHANNEL": DEMO_CHANNEL,
            "STANCH_SLACK_TEAM_ID": fake.team_id,
            "STANCH_SLACK_APPROVER_IDS": json.dumps([DEMO_APPROVER]),
        }
        chat = SlackChat(
            WebClient(token=fake.token, base_url=fake.base_url, timeout=10),
            channel=DEMO_CHANNEL,
            response_url_prefixes=(fake.origin + "/response/",),
        )

        async def analyst(store: Store, incident_id: str, stop: asyncio.Event) -> list[str]:
            service = ApprovalService(store, chat, settings.approval_key(), team_id=fake.team_id)
            listener = SlackInteractions(
                interaction_router(service.handle, None),
                SlackRequestVerifier(signing_secret),
                team_id=fake.team_id,
            )
            intake = Intake(store, start_incident=_no_start)
            app = create_app(ServiceSettings(), intake, sources={}, slack=listener)
            sweeper = asyncio.create_task(run_sweeper(service, every=1.0, stop=stop))
            try:
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://stanch.local"
                ) as client:
                    decided = await slack_analyst(
                        fake,
                        client,
                        signing_secret,
                        store,
                        incident_id,
                        user_id=DEMO_APPROVER,
                        delay=analyst_delay,
                        stop=stop,
                    )
                    await listener.drain()
            finally:
                await sweeper
            return decided

        with _environment(env):
            return await run_incident(settings, alerts, analyst_delay=None, analyst=analyst)


async def run_beside_analyst(
    incident: Incident,
    analyst: asyncio.Task[list[str]] | None,
    stop: asyncio.Event,
    *,
    flow_tags: Sequence[str] = (),
    requester: str = AUTOMATION_REQUESTER,
) -> State[Any]:
    """Run ``handle-incident`` while ``analyst`` answers its approvals; stop the analyst after.

    If the analyst fails, the flow would sit paused until its approval deadline: the flow
    is cancelled and the analyst's error raised instead.
    """

    async def run_flow() -> State[Any]:
        with tags(*flow_tags):
            state: State[Any] = await handle_incident(
                incident, requester=requester, return_state=True
            )
        return state

    flow_task = asyncio.create_task(run_flow())
    try:
        if analyst is not None:
            await asyncio.wait({flow_task, analyst}, return_when=asyncio.FIRST_COMPLETED)
            if analyst.done() and analyst.exception() is not None:
                flow_task.cancel()
                await asyncio.gather(flow_task, return_exceptions=True)
                await analyst
        return await flow_task
    finally:
        stop.set()
        if analyst is not None and not analyst.done():
            await analyst


async def run_incident(
    settings: StanchSettings,
    alerts: list[DetectionFinding],
    *,
    analyst_delay: float | None,
    title: str | None = None,
    analyst: Analyst | None = None,
    requester: str = AUTOMATION_REQUESTER,
) -> tuple[IncidentOutcome | None, str | None, BaseException | None]:
    """Make an incident of ``alerts``, run ``handle-incident`` on it in this process.

    The approval is answered by ``analyst`` when given, else by :func:`simulated_analyst`
    after ``analyst_delay`` seconds, else (both ``None``) by someone else, e.g. the CLI.

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
        helper: asyncio.Task[list[str]] | None = None
        if analyst is not None:
            helper = asyncio.create_task(analyst(store, incident.id, stop))
        elif analyst_delay is not None:
            helper = asyncio.create_task(
                simulated_analyst(
                    store, settings.approval_key(), incident.id, delay=analyst_delay, stop=stop
                )
            )
        state = await run_beside_analyst(incident, helper, stop, requester=requester)
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
        "playbook": outcome.playbook,
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
        "case_status": outcome.case_status,
        "clocks": outcome.clocks,
        "clock_notes": outcome.clock_notes,
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
    outcome, flow_run_id, error = await run_incident_via_slack(
        settings, alerts, analyst_delay=analyst_delay
    )
    if outcome is None:
        return None, error
    return summary(
        outcome, flow_run_id, elapsed=time.perf_counter() - started, ui_url=ui_url
    ), error
