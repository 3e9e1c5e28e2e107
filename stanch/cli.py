"""The ``stanch`` command line.

Commands that run flows first make sure a Prefect server is there (``PREFECT_API_URL``,
or the embedded one under the stanch home) and only then import the flows, because
Prefect reads its settings once, at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Table

app = App(name="stanch", help="SOAR playbook orchestrator for MDR teams, built on Prefect 3.")
approvals_app = App(name="approvals", help="Approval requests waiting for a decision.")
app.command(approvals_app)
# Registered by import path so that `stanch --help` imports none of them.
app.command("stanch.policy_cli:app", name="policy", help="Per-tenant rules of engagement.")
app.command("stanch.ledger_cli:app", name="ledger", help="Verify and read the action ledger.")
app.command(
    "stanch.serve_cli:serve",
    help="Alert intake service; on one host also serves the deployments (incidents, sweep).",
)
app.command("stanch.metrics_cli:metrics", help="MDR clocks per tenant or playbook: median and p90.")
app.command("stanch.metrics_cli:report_app", name="report", help="Reports over a period.")
app.command("stanch.undo_cli:undo", help="Undo what an incident still has in effect.")
app.command("stanch.rerun_cli:rerun", help="Run a stored incident through the lifecycle again.")
app.command(
    "stanch.playbook_cli:app", name="playbook", help="Validate, plan, test and route playbooks."
)

out = Console()
err = Console(stderr=True)


def _settings() -> Any:
    from flows.settings import load_settings

    return load_settings()


def _operator() -> str:
    """Who is at this terminal, for the record of a CLI decision."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _with_server(settings: Any) -> Any:
    from stanch.prefect_server import ensure_server, use_server

    server = ensure_server(settings.home)
    use_server(server, settings.home)
    return server


@app.command
def demo(
    *,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
    keep_ui: bool = False,
    analyst_delay: float = 1.0,
) -> int:
    """Run the built-in ransomware scenario end to end against the simulated vendors.

    Args:
        json_output: print one JSON object instead of the human summary.
        keep_ui: keep the Prefect server (and its UI) running after the demo.
        analyst_delay: seconds the simulated analyst takes to approve.
    """
    settings = _settings()
    if settings.mode != "lab":
        err.print("[red]stanch demo runs against the lab; unset STANCH_MODE=live[/red]")
        return 2
    server = _with_server(settings)
    try:
        from stanch.demo import run_demo

        result, error = asyncio.run(
            run_demo(settings, analyst_delay=analyst_delay, ui_url=server.ui_url)
        )
    finally:
        if not keep_ui:
            server.stop()
    if result is None:
        err.print(f"[red]The incident flow failed before its report:[/red] {error}")
        return 1
    if json_output:
        print(json.dumps(result, indent=2))
    else:
        _print_summary(result)
    if keep_ui and server.owned:
        out.print(f"Prefect UI: {server.ui_url}  (Ctrl-C to stop)")
        _serve_forever(server)
    return 0 if error is None else 1


def _print_summary(result: dict[str, Any]) -> None:
    out.print(f"[bold]{result['incident_id']}[/bold] {result['title']}")
    stages = Table("stage", "state", title="Stages")
    for stage, state in result["stages"].items():
        stages.add_row(stage, state)
    out.print(stages)
    actions = Table("action", "target", "status", "approved by", "plan sha256", title="Actions")
    for a in result["actions"]:
        actions.add_row(
            f"{a['capability']}.{a['verb']}",
            a["target"],
            a["status"],
            ", ".join(a["approved_by"]),
            a["plan_sha256"][:16],
        )
    out.print(actions)
    clocks = ", ".join(f"{k} {v}s" for k, v in result["clocks"].items() if v is not None)
    out.print(f"Clocks from first alert: {clocks}")
    out.print(f"Report: {result['report'].get('markdown')} and {result['report'].get('html')}")
    out.print(f"Finished in {result['elapsed_seconds']} s")


def _serve_forever(server: Any) -> None:
    try:
        while server.process is not None and server.process.poll() is None:
            server.process.wait(timeout=1)
    except KeyboardInterrupt:
        pass
    except Exception:
        _serve_forever(server)
    finally:
        server.stop()


@app.command
def run(alert: Path, *, analyst_delay: float | None = None) -> int:
    """Process one alert file (an OCSF Detection Finding, or an array) through the lifecycle.

    Approvals wait for `stanch approve` from another terminal, unless --analyst-delay is
    given (lab mode only), in which case the simulated analyst approves.

    Args:
        alert: path to the JSON alert file.
        analyst_delay: let the simulated analyst approve after this many seconds.
    """
    from flows.detect import load_alert_file
    from flows.errors import AlertRejected

    settings = _settings()
    try:
        alerts = load_alert_file(alert)
    except AlertRejected as exc:
        err.print(f"[red]rejected[/red] {exc.source}: field {exc.field}: {exc.reason}")
        asyncio.run(_dead_letter(settings, alert, exc))
        return 1
    except OSError as exc:
        err.print(f"[red]cannot read[/red] {alert}: {exc.strerror}")
        return 1
    if analyst_delay is not None and settings.mode != "lab":
        err.print("[red]--analyst-delay is for lab mode only[/red]")
        return 2
    server = _with_server(settings)
    try:
        from stanch.demo import run_incident, summary

        outcome, flow_run_id, error = asyncio.run(
            run_incident(
                settings, alerts, analyst_delay=analyst_delay, requester=f"cli:{_operator()}"
            )
        )
    finally:
        server.stop()
    if outcome is None:
        err.print(f"[red]The incident flow failed:[/red] {error}")
        return 1
    print(json.dumps(summary(outcome, flow_run_id, elapsed=0.0, ui_url=None), indent=2))
    return 0 if error is None else 1


async def _dead_letter(settings: Any, path: Path, exc: Any) -> None:
    from flows.record import open_store

    payload = await asyncio.to_thread(path.read_text, encoding="utf-8", errors="replace")
    async with open_store(settings.store_url) as store:
        await store.dead_letter(
            source=str(path), field=exc.field, reason=exc.reason, payload=payload
        )


async def _decide(approval: str, *, approve: bool, reason: str) -> str:
    from flows.approval import submit_decision
    from flows.record import open_store

    settings = _settings()
    async with open_store(settings.store_url) as store:
        approval_id = approval
        if approval.startswith("INC-"):
            pending = await store.approvals(incident_id=approval, status="pending")
            if not pending:
                raise SystemExit(f"{approval} has no pending approval request")
            approval_id = pending[0].id
        await submit_decision(
            store,
            settings.approval_key(),
            approval_id,
            approve=approve,
            approver=_operator(),
            channel="cli",
            reason=reason,
        )
        return approval_id


@app.command
def approve(approval: str, *, reason: str = "approved at the terminal") -> int:
    """Approve every plan of a pending approval request (by APR- id or INC- id)."""
    from flows.errors import ApprovalError

    settings = _settings()
    _with_server(settings)
    try:
        approval_id = asyncio.run(_decide(approval, approve=True, reason=reason))
    except ApprovalError as exc:
        err.print(f"[red]{exc}[/red]")
        return 1
    out.print(f"{approval_id}: approved by {_operator()}")
    return 0


@app.command
def deny(approval: str, *, reason: str) -> int:
    """Deny every plan of a pending approval request; a reason is required."""
    from flows.errors import ApprovalError

    settings = _settings()
    _with_server(settings)
    try:
        approval_id = asyncio.run(_decide(approval, approve=False, reason=reason))
    except ApprovalError as exc:
        err.print(f"[red]{exc}[/red]")
        return 1
    out.print(f"{approval_id}: denied by {_operator()}")
    return 0


@approvals_app.command(name="list")
def list_approvals(*, all_requests: Annotated[bool, Parameter(name="--all")] = False) -> int:
    """List approval requests (pending only, unless --all)."""
    from flows.record import open_store

    settings = _settings()

    async def rows() -> Any:
        async with open_store(settings.store_url) as store:
            return await store.approvals(status=None if all_requests else "pending")

    table = Table("id", "incident", "status", "plans", "requested", "decided by")
    for row in asyncio.run(rows()):
        plans = ", ".join(
            f"{p['capability']}.{p['verb']} {p['target_label']}" for p in row.plans["plans"]
        )
        table.add_row(
            row.id,
            row.incident_id,
            row.status,
            plans,
            row.requested_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.decided_by or "",
        )
    out.print(table)
    return 0


@app.command
def lab(*vendors: str, seed_demo: bool = False, first_port: int = 8801) -> int:
    """Serve vendor simulators on loopback and print the settings that point live mode at them.

    Args:
        vendors: which simulators (default: all seven).
        seed_demo: give the EDR and identity simulators the demo's host and user.
        first_port: the first port to try; each vendor takes the next free one.
    """
    from integrations.plugin import VENDORS
    from stanch.lab import serve_lab

    chosen = list(vendors) or list(VENDORS)
    unknown = sorted(set(chosen) - set(VENDORS))
    if unknown:
        err.print(f"[red]unknown vendor(s): {', '.join(unknown)}[/red]")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_lab(chosen, first_port=first_port, seed=seed_demo))
    return 0


@app.command
def ui() -> int:
    """Serve the Prefect UI over the embedded server's history until Ctrl-C."""
    settings = _settings()
    server = _with_server(settings)
    out.print(f"Prefect UI: {server.ui_url}  (Ctrl-C to stop)")
    if server.owned:
        _serve_forever(server)
    return 0


def main() -> None:
    """Console-script entry point."""
    result = app(result_action="return_value")
    sys.exit(result if isinstance(result, int) else 0)
