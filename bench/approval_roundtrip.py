"""Slack approval round trip: from the Approve click to the resumed flow's next task starting.

``python -m bench.approval_roundtrip [--runs N] [--poll 0.5]`` starts a Prefect server under
a temporary stanch home (unless ``PREFECT_API_URL`` is set), a loopback FakeSlack, and the
stanch service's Slack route in-process. Each run starts a small flow that asks for approval
through the real :class:`flows.approval.SlackPauseGate` (posts the Block Kit message,
pauses with ``poll_interval=--poll``) and then runs one task. The "analyst" sends a signed
``block_actions`` click to ``POST /slack/interactions``; the service authorises it and
resumes the run with a signed decision. The latency is the task run's ``start_time`` read
from the Prefect API minus the wall-clock time the click was sent.

Prints one JSON object and a one-line summary; exits 1 if p95 is over ``--target``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

APPROVER = "U0BENCHAPPROVER"
CHANNEL = "C0BENCHAPPROVALS"
_CONTEXT: dict[str, Any] = {}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "p50": round(statistics.median(values), 3),
        "p95": round(_percentile(values, 0.95), 3),
        "max": round(max(values), 3),
        "all": [round(v, 3) for v in values],
    }


async def _bench(runs: int, poll: float) -> dict[str, Any]:
    # Imported here: Prefect reads PREFECT_API_URL on import.
    import httpx
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.runtime import flow_run
    from pydantic import SecretStr
    from slack_sdk import WebClient

    from flows.approval import (
        ApprovalService,
        SlackPauseGate,
        new_approval_request,
        wait_until_paused,
    )
    from flows.detect import Intake
    from flows.models import ActionPlan, Incident, Stage
    from flows.record import open_store
    from integrations.capabilities import Capability
    from integrations.slack import APPROVE_ACTION_ID, SlackChat, SlackRequestVerifier
    from integrations.slack.fake import FakeSlack, block_actions_payload, signed_interaction
    from stanch.prefect_server import drain_prefect_clients
    from stanch.service import ServiceSettings, create_app
    from stanch.slack_listener import INTERACTIONS_PATH, SlackInteractions

    def plan(number: int) -> ActionPlan:
        return ActionPlan(
            tenant="demo",
            incident_id=f"INC-20261121-{number:04d}",
            capability=Capability.EDR,
            verb="contain_host",
            target=f"aid-{number}",
            target_label=f"WS-{number:04d}",
            stage=Stage.CONTAIN,
        )

    async def task_started(prefect: Any, run_id: UUID) -> float:
        """When the task after the approval entered Running, per the Prefect API.

        Task run states reach the server as events, a moment after the fact: poll.
        """
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = await prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            for t in tasks:
                if not t.name.startswith("first-action"):
                    continue
                if t.start_time is not None:
                    return float(t.start_time.timestamp())
                for state in await prefect.read_task_run_states(t.id):
                    if state.type.value == "RUNNING":
                        return float(state.timestamp.timestamp())
            await asyncio.sleep(0.25)
        raise RuntimeError(f"no started task run recorded for flow run {run_id}")

    @task(name="first-action-after-approval")
    async def first_action(approval_id: str) -> str:
        return approval_id

    @flow(name="bench-approval-roundtrip")
    async def roundtrip(number: int) -> str:
        gate: SlackPauseGate = _CONTEXT["gate"]
        run_id = flow_run.get_id()
        request = new_approval_request(
            incident_id=f"INC-20261121-{number:04d}",
            tenant="demo",
            flow_run_id=str(run_id) if run_id else None,
            plans=[plan(number)],
            reasons={},
            timeout_seconds=120,
            incident_title="bench",
            approver_ids=(APPROVER,),
        )
        outcome = await gate.request(request, _CONTEXT["store"])
        if outcome.status != "approved":
            raise RuntimeError(f"approval {outcome.status}: {outcome.reason}")
        return await first_action(request.id)

    key = os.urandom(32)
    secret = SecretStr(os.urandom(16).hex())
    latencies: list[float] = []
    acks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="stanch-bench-") as tmp, FakeSlack() as fake:
        fake.add_user(APPROVER)
        chat = SlackChat(
            WebClient(token=fake.token, base_url=fake.base_url, timeout=10),
            channel=CHANNEL,
            response_url_prefixes=(fake.origin + "/response/",),
        )
        async with open_store(f"sqlite+aiosqlite:///{Path(tmp) / 'stanch.db'}") as store:
            _CONTEXT.update(
                store=store,
                gate=SlackPauseGate(key, chat, timeout_seconds=120, poll_seconds=poll),
            )
            service = ApprovalService(store, chat, key, team_id=fake.team_id)
            listener = SlackInteractions(
                service.handle, SlackRequestVerifier(secret), team_id=fake.team_id
            )

            async def _no_start(incident: Incident) -> None:
                return None

            app = create_app(
                ServiceSettings(),
                Intake(store, start_incident=_no_start),
                sources={},
                slack=listener,
            )
            async with (
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://stanch.local"
                ) as http,
                get_client() as prefect,
            ):
                for number in range(1, runs + 1):
                    running = asyncio.create_task(roundtrip(number, return_state=True))  # type: ignore[call-overload]
                    binding = None
                    while binding is None:
                        await asyncio.sleep(0.05)
                        pending = await store.approvals(status="pending")
                        if pending:
                            binding = await store.slack_approval(pending[0].id)
                    # Click only once the run is paused: a human cannot click faster.
                    row = await store.get_approval(binding.approval_id)
                    assert row is not None and row.flow_run_id is not None
                    await wait_until_paused(UUID(row.flow_run_id))
                    payload = block_actions_payload(
                        approval_id=binding.approval_id,
                        action_id=APPROVE_ACTION_ID,
                        user_id=APPROVER,
                        channel_id=binding.channel,
                        message_ts=binding.ts,
                        team_id=fake.team_id,
                        response_url=fake.response_url(),
                    )
                    headers, body = signed_interaction(secret, payload, int(time.time()))
                    clicked = time.time()
                    response = await http.post(INTERACTIONS_PATH, content=body, headers=headers)
                    acks.append((time.time() - clicked) * 1000)
                    response.raise_for_status()
                    state = await running
                    await listener.drain()
                    if not state.is_completed():
                        raise RuntimeError(f"run {number} ended {state.name}")
                    started = await task_started(prefect, UUID(row.flow_run_id))
                    latencies.append(started - clicked)
            await drain_prefect_clients()
    return {
        "runs": runs,
        "poll_seconds": poll,
        "click_to_task_start_seconds": _stats(latencies),
        "click_to_ack_ms": _stats(acks),
        "cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print JSON and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--poll", type=float, default=0.5, help="pause poll interval, seconds (the default's)"
    )
    parser.add_argument("--target", type=float, default=0.6, help="p95 target, seconds")
    args = parser.parse_args(argv)

    server = None
    if not os.environ.get("PREFECT_API_URL"):
        from stanch.prefect_server import start_server, use_server

        home = Path(tempfile.mkdtemp(prefix="stanch-bench-home-"))
        server = start_server(home)
        use_server(server, home)
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        result = asyncio.run(_bench(args.runs, args.poll))
    finally:
        if server is not None:
            server.stop()
    result["target_seconds"] = args.target
    result["ok"] = result["click_to_task_start_seconds"]["p95"] <= args.target
    print(json.dumps(result))
    lat = result["click_to_task_start_seconds"]
    print(
        f"click -> resumed task start over {args.runs} runs (poll {args.poll:g}s): "
        f"p50 {lat['p50']:.2f}s, p95 {lat['p95']:.2f}s, max {lat['max']:.2f}s; "
        f"ack p50 {result['click_to_ack_ms']['p50']:.1f} ms "
        f"({'within' if result['ok'] else 'OVER'} the {args.target:g}s target)",
        file=sys.stderr,
    )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
