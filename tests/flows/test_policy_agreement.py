"""``stanch policy check`` and the flow agree: verdict, approvers, timeout and on-timeout.

Every policy file the repository ships or tests with is put through both, over the same
cases: the CLI's printed explanation, and the approval request the flow's responder files
(or the verdict it records when nothing is asked).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.approval import ApprovalOutcome, ApprovalRequest
from flows.models import ActionPlan, Incident, Stage, Verdict, utcnow
from flows.playbook import PlannedAction
from flows.policy import CONTAINMENT_ACTIONS, PolicyError, format_duration, policy_for_tenant
from flows.record import Store, open_store
from flows.respond import ContainmentRolledBack, Responder
from flows.settings import StanchSettings
from flows.wiring import Integrations, Lab, connect
from integrations.capabilities import Capability
from stanch.policy_cli import app
from tests.flows import factories

pytestmark = pytest.mark.usefixtures("prefect_server")

REPO = Path(__file__).resolve().parents[2]
POLICY_FILES = sorted(
    [
        *(REPO / "policies").glob("*.yaml"),
        *(REPO / "bench" / "policies").glob("*.yaml"),
        *(REPO / "tests" / "stanch" / "unattended_policies").glob("*.yaml"),
        *(REPO / "tests" / "flows" / "policies").glob("*.yaml"),
    ]
)

ACTIONS = [
    "edr.contain_host",
    "edr.release_host",
    "edr.block_hash",
    "edr.unblock_hash",
    "identity.suspend_user",
    "identity.unsuspend_user",
    "identity.revoke_sessions",
    "identity.expire_password",
    "identity.reset_factors",
    "firewall.block_ip",
    "firewall.unblock_ip",
]
# An ordinary target and one the fixture policies protect or single out, per capability.
TARGETS = {
    "edr": ["WS-0042", "ACME-DC-01"],
    "identity": ["jdoe@acme.example", "ceo@acme.example"],
    "firewall": ["203.0.113.9", "10.0.0.5"],
}
HASH = "8f2b7c1e5a9d4f3b6c0e1a2d7f8b9c4e5d6a3f2e1b0c9d8e7f6a5b4c3d2e1f0a"
SEVERITIES = {"medium": 3, "critical": 5}


class RecordingGate:
    """Files nothing anywhere: keeps the request and answers it with a denial."""

    def __init__(self) -> None:
        self.requests: list[ApprovalRequest] = []

    async def request(self, request: ApprovalRequest, store: Store) -> ApprovalOutcome:
        self.requests.append(request)
        return ApprovalOutcome(
            approval_id=request.id,
            status="denied",
            approved=[],
            approvers=[],
            channel="test",
            reason="recorded",
            decided_at=utcnow(),
        )


def _tenant_of(path: Path) -> str:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return "agreement"
    tenant = document.get("tenant") if isinstance(document, dict) else None
    return tenant if isinstance(tenant, str) else "agreement"


@pytest.fixture(params=POLICY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def policy_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """One policy file as a tenant's file and the default: (directory, tenant)."""
    source: Path = request.param
    tenant = _tenant_of(source)
    directory = tmp_path / "policies"
    directory.mkdir()
    shutil.copy(source, directory / "default.yaml")
    if tenant != "agreement":
        shutil.copy(source, directory / f"{tenant}.yaml")
    yield directory, tenant


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[Store, Integrations]]:
    async with (
        open_store(f"sqlite+aiosqlite:///{tmp_path / 'agreement.db'}") as store,
        connect(StanchSettings(mode="lab"), Lab()) as integrations,
    ):
        yield store, integrations


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str]]:
    capsys.readouterr()
    code = app(["check", *args], result_action="return_value")
    lines = capsys.readouterr().out.splitlines()
    facts = dict(line.split(": ", 1) for line in lines if ": " in line)
    assert isinstance(code, int)
    return code, facts


def _incident(number: int, tenant: str, severity: int) -> Incident:
    base = factories.incident(number, tenant=tenant)
    alerts = [a.model_dump(mode="json") for a in base.alerts]
    for alert in alerts:
        alert["severity_id"] = severity
    return factories.incident(number, tenant=tenant, alerts=json.loads(json.dumps(alerts)))


def _plan(incident: Incident, action: str, target: str, stage: Stage) -> ActionPlan:
    capability, _, verb = action.partition(".")
    parameters: dict[str, Any] = {}
    if verb in ("contain_host", "release_host", "block_hash", "suspend_user", "unsuspend_user"):
        parameters["reason"] = "agreement"
    if verb == "block_ip":
        parameters = {"ttl_seconds": 3600, "reason": "agreement"}
    vendor_id = target if capability != "edr" else f"id-{target.lower()}"
    return ActionPlan(
        tenant=incident.tenant,
        incident_id=incident.id,
        capability=Capability(capability),
        verb=verb,
        target=vendor_id,
        target_label=target,
        parameters=parameters,
        stage=stage,
    )


async def test_policy_check_and_the_flow_agree_for_every_fixture_policy(
    policy_dir: tuple[Path, str],
    wired: tuple[Store, Integrations],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given one of the repository's policy files,
    When every action, at two severities, on an ordinary and a protected target, is put
    to `stanch policy check` and to the flow's responder,
    Then they agree on the verdict and, where approval is needed, on how many approvers,
    who, through which channels, the timeout and what silence means. An invalid file is
    refused by both."""
    monkeypatch.delenv("STANCH_APPROVAL_TIMEOUT_SECONDS", raising=False)
    directory, tenant = policy_dir
    store, integrations = wired
    try:
        policy = policy_for_tenant(directory, tenant)
    except PolicyError:
        code, _ = _cli(
            capsys, "--tenant", tenant, "--action", "edr.contain_host",
            "--target", "WS-1", "--severity", "high", "--policies", str(directory),
        )  # fmt: skip
        assert code == 1, "the flow refuses this policy file, so must policy check"
        return
    number = 7000
    compared = 0
    for action in ACTIONS:
        capability = action.partition(".")[0]
        targets = [HASH] if action.endswith("_hash") else TARGETS[capability]
        stage = Stage.CONTAIN if action in CONTAINMENT_ACTIONS else Stage.REMEDIATE
        for severity, severity_id in SEVERITIES.items():
            for target in targets:
                number += 1
                code, said = _cli(
                    capsys, "--tenant", tenant, "--action", action, "--target", target,
                    "--severity", severity, "--stage", stage.value,
                    "--user", "jdoe@acme.example", "--policies", str(directory),
                )  # fmt: skip
                assert code == 0, said
                incident = _incident(number, tenant, severity_id)
                plan = _plan(incident, action, target, stage)
                gate = RecordingGate()
                responder = Responder(
                    incident,
                    settings=StanchSettings(mode="lab"),
                    store=store,
                    integrations=integrations,
                    gate=gate,
                    policy=policy,
                    flow_run_id=None,
                )
                # An unattended containment of a host the lab does not know fails and
                # rolls back; its verdict is recorded all the same.
                with contextlib.suppress(ContainmentRolledBack):
                    await responder.authorise_and_execute(
                        stage,
                        [PlannedAction(step="agreement", plan=plan)],
                        asset_names={plan.target: (target,)},
                    )
                case = f"{action} {target} at {severity}"
                [result] = responder.actions
                assert said["verdict"] == result.verdict.value, case
                compared += 1
                if result.verdict is not Verdict.APPROVAL:
                    assert gate.requests == [], case
                    continue
                [asked] = gate.requests
                assert said["approvals required"] == str(asked.required_approvals), case
                channels = ["slack"] if asked.approver_ids or asked.approver_group else []
                channels += ["cli"] if asked.cli_users else []
                channels += ["prefect-ui"] if asked.allow_prefect_ui else []
                assert said["approvers"] == f"{asked.approvers} (via {', '.join(channels)})", case
                wait = format_duration(timedelta(seconds=asked.timeout_seconds))
                assert said["timeout"] == f"{wait}, then {asked.on_timeout}", case
    assert compared == len(ACTIONS) * len(SEVERITIES) * 2 - 2 * len(SEVERITIES)
