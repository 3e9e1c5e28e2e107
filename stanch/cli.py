"""The ``stanch`` command line.

Commands that run flows first make sure a Prefect server is there (``PREFECT_API_URL``,
or the embedded one under the stanch home) and only then import the flows, because
Prefect reads its settings once, at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from cyclopts import App, CycloptsError, Parameter
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stanch.approvals_cli import approve, deny
from stanch.cli_support import FAILED, OK, USAGE, operator, progress, telemetry_off
from stanch.init_cli import init

# Plain text: docstrings name placeholders such as INC-<date>-<n>, which Markdown would
# take for HTML tags and drop.
app = App(
    name="stanch",
    help="SOAR playbook orchestrator for MDR teams, built on Prefect 3.",
    help_format="plaintext",
)
# Registered by import path so that `stanch --help` imports none of them.
app.command(
    "stanch.approvals_cli:app", name="approvals", help="Approval requests: list them, show one."
)
# These import only cyclopts and rich at load: their docstrings are the help.
app.command(approve)
app.command(deny)
app.command("stanch.alerts_cli:app", name="alerts", help="Alerts that reached stanch.")
app.command(init)
app.command("stanch.policy_cli:app", name="policy", help="Per-tenant rules of engagement.")
app.command("stanch.ledger_cli:app", name="ledger", help="Verify and read the action ledger.")
app.command(
    "stanch.incidents_cli:app",
    name="incidents",
    help="Incidents as cases: list, show, assign, note, close, reopen, merge.",
)
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

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the block runs, so that ``finally``
    clauses stop the embedded Prefect server instead of leaving it behind."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _settings() -> Any:
    from flows.settings import load_settings

    return load_settings()


def _with_server(settings: Any) -> Any:
    from stanch.prefect_server import ensure_server, use_server

    server = ensure_server(settings.home)
    use_server(server, settings.home)
    return server


@app.command
def demo(
    *,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
    keep_ui: Annotated[bool, Parameter(negative=())] = False,
    analyst_delay: float = 1.0,
) -> int:
    """Run the built-in ransomware scenario end to end against the simulated vendors.

    Exit status: 0 the incident completed; 1 it failed; 2 not in lab mode.

    Args:
        json_output: print one JSON object instead of the human summary.
        keep_ui: keep the Prefect server (and its UI) running after the demo, until
            Ctrl-C or SIGTERM.
        analyst_delay: seconds the simulated analyst takes to approve.
    """
    started = time.monotonic()
    settings = _settings()
    if settings.mode != "lab":
        err.print("[red]stanch demo runs against the lab; unset STANCH_MODE=live[/red]")
        return USAGE
    with stop_on_sigterm():
        with progress("Starting the Prefect server (the first run migrates its database)"):
            server = _with_server(settings)
        err.print(f"Prefect server at {server.ui_url} ({time.monotonic() - started:.0f} s)")
        try:
            with progress("Loading the incident flow"):
                from stanch.demo import run_demo
            err.print(
                "Running the demo incident: detect, investigate, ask the simulated analyst "
                "in the local fake Slack, contain, remediate, report"
            )
            result, error = asyncio.run(
                run_demo(settings, analyst_delay=analyst_delay, ui_url=server.ui_url)
            )
        finally:
            if not keep_ui:
                server.stop()
        if result is None:
            err.print(f"[red]The incident flow failed before its report:[/red] {error}")
            return FAILED
        # What the user waited for: from the command's start, server start included.
        result["elapsed_seconds"] = round(time.monotonic() - started, 2)
        if json_output:
            print(json.dumps(result, indent=2))
        else:
            _print_summary(result)
        if keep_ui and server.owned:
            out.print(f"Prefect UI: {server.ui_url}  (Ctrl-C or SIGTERM stops it)")
            _serve_forever(server)
    return OK if error is None else FAILED


def _print_summary(result: dict[str, Any]) -> None:
    from integrations.phrases import describe_action

    out.print(f"[bold]{result['incident_id']}[/bold] {result['title']}", markup=True)
    stages = Table("stage", "state", title="Stages")
    for stage, state in result["stages"].items():
        stages.add_row(stage, state)
    out.print(stages)
    actions = Table("action", "status", "decided by", "plan", title="Actions")
    for a in result["actions"]:
        actions.add_row(
            describe_action(f"{a['capability']}.{a['verb']}", a["target"], a["vendor"] or ""),
            a["status"],
            ", ".join(a["approved_by"]),
            a["plan_sha256"][:12],
        )
    out.print(actions)
    from integrations.phrases import duration_words

    clocks = ", ".join(
        f"{k} {duration_words(v)}" for k, v in result["clocks"].items() if v is not None
    )
    out.print(f"Clocks from the first alert: {clocks}")
    for name, why in result.get("clock_notes", {}).items():
        out.print(f"  {name}: — ({why})", markup=False)
    out.print(f"Case: {result.get('case_status')}", markup=False)
    if result.get("case_status") == "awaiting-closure":
        out.print(
            f"Close it: stanch incidents close {result['incident_id']} "
            '--disposition true-positive --summary "…"',
            markup=False,
        )
    out.print(f"Report: {result['report'].get('markdown')} and {result['report'].get('html')}")
    if result["report"].get("prefect"):
        out.print(f"In the Prefect UI: {result['report']['prefect']}")
    out.print(
        f"Finished in {duration_words(result['elapsed_seconds'])} "
        "(wall time from the command's start to the result, Prefect server start included)"
    )


def _serve_forever(server: Any) -> None:
    """Keep the embedded server until Ctrl-C or SIGTERM (or it exits), then stop it."""
    try:
        with stop_on_sigterm():
            while server.process is not None and server.process.poll() is None:
                with contextlib.suppress(Exception):
                    server.process.wait(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command
def run(alert: Path, /, *, analyst_delay: float | None = None) -> int:
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
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from stanch.demo import run_incident, summary

        # Prefect was imported (to read the alert) before the server was known: point
        # this process at it explicitly, or the flow would start a throwaway server that
        # `stanch approve` in another terminal cannot reach.
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            outcome, flow_run_id, error = asyncio.run(
                run_incident(
                    settings, alerts, analyst_delay=analyst_delay, requester=f"cli:{operator()}"
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


@app.command
def lab(
    *vendors: str,
    seed_demo: bool = False,
    first_port: int = 8801,
    faults: list[str] | None = None,
) -> int:
    """Serve vendor simulators on loopback and print the settings that point live mode at them.

    Args:
        vendors: which simulators (default: all seven).
        seed_demo: give the EDR and identity simulators the demo's host and user.
        first_port: the first port to try; each vendor takes the next free one.
        faults: VENDOR:KIND:N[:PATH], repeatable: the next N requests (under PATH) to VENDOR
            fail. KIND is 5xx (503), 429 (with the vendor's retry header), timeout (no
            answer) or lost (a state-changing request is carried out, then answered 503).
    """
    from integrations.plugin import VENDORS
    from stanch.lab import FaultSpec, FaultSpecError, serve_lab

    chosen = list(vendors) or list(VENDORS)
    unknown = sorted(set(chosen) - set(VENDORS))
    if unknown:
        err.print(f"[red]unknown vendor(s): {', '.join(unknown)}[/red]")
        return 2
    try:
        armed = [FaultSpec.parse(text, chosen) for text in faults or ()]
    except FaultSpecError as exc:
        err.print(f"[red]--faults {escape(str(exc))}[/red]")
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_lab(chosen, first_port=first_port, seed=seed_demo, faults=armed))
    return 0


@app.command
def ui() -> int:
    """Serve the Prefect UI over the embedded server's history until Ctrl-C or SIGTERM."""
    settings = _settings()
    with stop_on_sigterm():
        server = _with_server(settings)
    out.print(f"Prefect UI: {server.ui_url}  (Ctrl-C or SIGTERM stops it)")
    if server.owned:
        _serve_forever(server)
    return OK


def main(tokens: list[str] | None = None) -> None:
    """Console-script entry point: exit 0 done, 1 the operation failed, 2 a usage error.

    Args:
        tokens: the arguments (default: the command line's).
    """
    telemetry_off()
    try:
        result = app(
            sys.argv[1:] if tokens is None else tokens,
            result_action="return_value",
            exit_on_error=False,
        )
    except CycloptsError:
        sys.exit(USAGE)  # cyclopts has printed what was wrong
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else OK)
