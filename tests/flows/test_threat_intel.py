"""Threat intel through the handle-incident flow: looked up, cached, shown, escaped, scored.

The real flow on the session's Prefect server, the real store, the lab simulators of
VirusTotal and AbuseIPDB (which know the demo's ransomware hash and C2 address), and the
loopback FakeSlack with the approval service answering a real click.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from flows.approval import ApprovalService, Handled, submit_decision
from flows.lifecycle import handle_incident
from flows.models import Incident, IncidentOutcome
from flows.record import IntelRecords, Store, md_escape, open_store
from flows.settings import load_settings
from flows.wiring import default_lab
from integrations.capabilities import IntelVerdict
from integrations.slack import APPROVE_ACTION_ID, SlackChat, parse_click
from integrations.slack.fake import TEAM_ID, FakeSlack, block_actions_payload
from integrations.virustotal import DEMO_C2_IP, DEMO_RANSOMWARE_SHA256, VirusTotalSimulator
from stanch.demo import provision_lab
from tests.flows import factories
from tests.flows.flowrun import approve
from tests.flows.flowrun import run as run_with_cli

pytestmark = pytest.mark.usefixtures("prefect_server")

CHANNEL = "C0SOCAPPROVALS"
POLICY_GROUP = "S0SOCANALYSTS"  # the default policy's approver group
HOSTILE = "*bold* <!channel> <http://x|y>"
_numbers = iter(range(8600, 8800))


@pytest.fixture(autouse=True)
def fresh_lab() -> None:
    default_lab().reset()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store(load_settings().store_url) as opened:
        yield opened


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        slack.add_user("UALICE")
        slack.add_usergroup(POLICY_GROUP, ["UALICE"])
        for name, value in {
            "STANCH_APPROVAL_CHANNEL": "slack",
            "STANCH_SLACK_BOT_TOKEN": slack.token,
            "STANCH_SLACK_BASE_URL": slack.base_url,
            "STANCH_SLACK_CHANNEL": CHANNEL,
            "STANCH_SLACK_TEAM_ID": TEAM_ID,
        }.items():
            monkeypatch.setenv(name, value)
        yield slack


@pytest.fixture
def service(fake: FakeSlack, store: Store) -> ApprovalService:
    client = WebClient(token=fake.token, base_url=fake.base_url, timeout=5)
    chat = SlackChat(client, channel=CHANNEL, response_url_prefixes=(fake.origin + "/response/",))
    return ApprovalService(
        store, chat, load_settings().approval_key(), team_id=TEAM_ID, submit=submit_decision
    )


def virustotal() -> VirusTotalSimulator:
    sim = default_lab().simulator("virustotal")
    assert isinstance(sim, VirusTotalSimulator)
    return sim


def incident(tenant: str) -> Incident:
    # One tenant per test: the cache is per tenant, and the session's store is shared.
    return factories.incident(next(_numbers), tenant=tenant)


async def run_with_slack(
    incident: Incident, service: ApprovalService
) -> tuple[IncidentOutcome | BaseException, dict[str, Any]]:
    """Run the flow; Alice clicks Approve on the posted message; return it as posted."""
    settings = load_settings()
    await service.store.save_incident(incident)
    provision_lab(default_lab(), settings, incident)
    posted: dict[str, Any] = {}

    async def alice() -> None:
        seen: set[str] = set()
        while True:
            for row in await service.store.approvals(incident_id=incident.id, status="pending"):
                binding = await service.store.slack_approval(row.id)
                if row.id in seen or binding is None:
                    continue
                seen.add(row.id)
                posted.setdefault("ts", binding.ts)
                payload = block_actions_payload(
                    approval_id=row.id,
                    action_id=APPROVE_ACTION_ID,
                    user_id="UALICE",
                    channel_id=binding.channel,
                    message_ts=binding.ts,
                )
                handled: Handled | None = await service.handle(
                    parse_click(payload, team_id=TEAM_ID)
                )
                assert handled is not None
            await asyncio.sleep(0.1)

    helper = asyncio.create_task(alice())
    try:
        state = await handle_incident(incident, return_state=True)
    finally:
        helper.cancel()
        await asyncio.gather(helper, return_exceptions=True)
    return await state.aresult(raise_on_failure=False), posted


def approval_message(fake: FakeSlack, ts: str) -> dict[str, Any]:
    [message] = [m for m in fake.history if m["method"] == "chat.postMessage" and m.get("ts") == ts]
    return message


def intel_block(message: dict[str, Any]) -> dict[str, Any]:
    [block] = [
        b
        for b in message["blocks"]
        if b["type"] == "section" and b.get("text", {}).get("text", "").startswith("Threat intel")
    ]
    return block


async def test_the_report_and_the_approval_message_show_the_verdict(
    fake: FakeSlack, service: ApprovalService, store: Store
) -> None:
    """Given the demo incident (ransomware hash, C2 address) and approvals in Slack,
    When handle-incident runs and Alice approves,
    Then the approval message she decided on carried a Threat intel section naming the
    hash as malicious (LockBit, VirusTotal) and the C2 address malicious per AbuseIPDB,
    the findings are stored with the incident, the score's reasons name the intel, and
    both reports have a Threat intel section with the verdicts."""
    outcome, posted = await run_with_slack(incident("intel-shown"), service)
    assert isinstance(outcome, IncidentOutcome), outcome
    assert [s.state for s in outcome.stages] == ["completed"] * 5

    text = intel_block(approval_message(fake, posted["ts"]))["text"]["text"]
    assert f"SHA-256 {DEMO_RANSOMWARE_SHA256}: malicious" in text
    assert "lockbit" in text and "VirusTotal" in text
    assert f"IP {DEMO_C2_IP}: malicious · AbuseIPDB 100/100" in text

    rows = await IntelRecords(store.engine).of_incident(outcome.incident.id)
    verdicts = {(r.indicator, r.vendor): r.verdict for r in rows}
    assert verdicts[(DEMO_RANSOMWARE_SHA256, "virustotal")] == "malicious"
    assert verdicts[(DEMO_C2_IP, "abuseipdb")] == "malicious"
    assert any(r.startswith("threat intel:") for r in outcome.investigation.reasons)

    markdown = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    section = markdown.split("## Threat intel", 1)[1].split("\n## ", 1)[0]
    assert "**malicious**" in section and "lockbit" in section
    html = await asyncio.to_thread(Path(outcome.report_paths["html"]).read_text)
    assert '<td class="malicious">malicious</td>' in html
    assert f'href="https://www.virustotal.com/gui/file/{DEMO_RANSOMWARE_SHA256}"' in html


async def test_a_hostile_family_name_is_escaped_everywhere(
    fake: FakeSlack, service: ApprovalService
) -> None:
    """Given VirusTotal naming the demo hash's family ``*bold* <!channel> <http://x|y>``,
    When the flow runs and asks for approval in Slack,
    Then the name reaches Slack only inside plain_text (never parsed as mrkdwn: no
    mention, no link), and the Markdown and HTML reports show it inert."""
    virustotal().add_file(DEMO_RANSOMWARE_SHA256, malicious=40, families=(HOSTILE,))
    outcome, posted = await run_with_slack(incident("intel-hostile"), service)
    assert isinstance(outcome, IncidentOutcome), outcome

    message = approval_message(fake, posted["ts"])
    block = intel_block(message)
    assert block["text"]["type"] == "plain_text" and HOSTILE in block["text"]["text"]

    def mrkdwn_texts(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                yield str(node.get("text", ""))
            for value in node.values():
                yield from mrkdwn_texts(value)
        elif isinstance(node, list):
            for value in node:
                yield from mrkdwn_texts(value)

    assert not [t for t in mrkdwn_texts(message["blocks"]) if "<!channel>" in t or "x|y" in t]
    assert "<!channel>" not in message.get("text", "")

    markdown = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    assert md_escape(HOSTILE) in markdown  # \\*bold\\* &lt;\\!channel&gt; ...
    assert HOSTILE not in markdown and "<!channel>" not in markdown
    html = await asyncio.to_thread(Path(outcome.report_paths["html"]).read_text)
    assert "*bold* &lt;!channel&gt; &lt;http://x|y&gt;" in html
    assert "<!channel>" not in html and "<http://x|y>" not in html


async def test_a_second_incident_with_the_same_hash_makes_no_virustotal_request(
    store: Store,
) -> None:
    """Given a first incident of a tenant whose hash VirusTotal was asked about,
    When a second incident of that tenant names the same hash and addresses,
    Then the second run makes no VirusTotal request at all (counted at the simulator),
    its findings say they came from the cache, and its verdict is the same."""
    first = incident("intel-cache")
    outcome, _ = await run_with_cli(first, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    sim = virustotal()
    asked = [r.path for r in sim.requests]
    assert f"/api/v3/files/{DEMO_RANSOMWARE_SHA256}" in asked

    before = len(sim.requests)
    second = incident("intel-cache")
    again, _ = await run_with_cli(second, store, approve)
    assert isinstance(again, IncidentOutcome), again
    assert sim.requests[before:] == []
    rows = await IntelRecords(store.engine).of_incident(second.id)
    assert rows and all(r.cached for r in rows)
    [hashed] = [r for r in again.investigation.intel if r.indicator == DEMO_RANSOMWARE_SHA256]
    assert hashed.verdict == IntelVerdict.MALICIOUS


async def test_a_spent_virustotal_quota_is_unknown_with_a_note_and_the_incident_completes(
    store: Store,
) -> None:
    """Given VirusTotal answering 429 QuotaExceededError,
    When the demo incident runs,
    Then every stage completes, each VirusTotal verdict is unknown with a note naming
    the spent quota, VirusTotal was asked once (not again after the 429), nothing was
    cached for it, and AbuseIPDB's verdict on the C2 address still counts."""
    virustotal().throttle_next(10)
    case = incident("intel-quota")
    outcome, _ = await run_with_cli(case, store, approve)
    assert isinstance(outcome, IncidentOutcome), outcome
    assert [s.state for s in outcome.stages] == ["completed"] * 5

    from_vt = [r for r in outcome.investigation.intel if r.vendor == "virustotal"]
    assert from_vt and all(r.verdict == IntelVerdict.UNKNOWN for r in from_vt)
    assert all("quota exhausted (QuotaExceededError)" in (r.note or "") for r in from_vt)
    assert [r.status for r in virustotal().requests] == [429]
    assert (
        await IntelRecords(store.engine).cached(case.tenant, "virustotal", DEMO_RANSOMWARE_SHA256)
        is None
    )
    [c2] = [
        r
        for r in outcome.investigation.intel
        if r.vendor == "abuseipdb" and r.indicator == DEMO_C2_IP
    ]
    assert c2.verdict == IntelVerdict.MALICIOUS
    markdown = await asyncio.to_thread(Path(outcome.report_paths["markdown"]).read_text)
    assert "quota exhausted" in markdown
    exported = json.loads(await asyncio.to_thread(Path(outcome.report_paths["json"]).read_text))
    assert exported["investigation"]["intel"]
