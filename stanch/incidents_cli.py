"""``stanch incidents``: list, read and work incidents as cases.

Each change is recorded as ``cli:<user>@<host>`` in the case and the ledger. Exit codes:
0 done, 1 the case's state refused the change (closing a closed case), 2 a usage error or
an unknown incident — always with a one-line error on stderr.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from cyclopts import App, Parameter
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from flows.record import CaseBook, CaseFile

app = App(name="incidents", help="Incidents as cases: list, show, assign, note, close, merge.")
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

T = TypeVar("T")


def operator() -> str:
    """Who is at this terminal, as the record names them: ``cli:<user>@<host>``."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def _run(work: Callable[[CaseBook], Awaitable[T]]) -> tuple[int, T | None]:
    """Run ``work`` on the store's case book; map refusals to exit codes and one line."""
    from flows.errors import CaseConflict, CaseError, CaseInputError, UnknownIncident
    from flows.record import CaseBook, open_store
    from flows.settings import load_settings

    async def go() -> T:
        async with open_store(load_settings().store_url) as store:
            return await work(CaseBook(store))

    try:
        return 0, asyncio.run(go())
    except UnknownIncident as exc:
        err.print(f"error: {exc}", markup=False)
        return 2, None
    except CaseInputError as exc:
        err.print(f"error: {exc.field}: {exc.reason}", markup=False)
        return 2, None
    except CaseConflict as exc:
        err.print(f"refused: {exc}", markup=False)
        return 1, None
    except CaseError as exc:  # any other refusal of a change
        err.print(f"refused: {exc}", markup=False)
        return 1, None


def _since(text: str | None) -> datetime | None:
    from flows.policy import parse_duration

    return None if text is None else datetime.now(UTC) - parse_duration(text)


@app.command(name="list")
def list_incidents(
    *,
    tenant: str | None = None,
    status: str | None = None,
    assignee: str | None = None,
    since: str | None = None,
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """List incidents, newest first.

    Args:
        tenant: one tenant's only.
        status: new, investigating, contained, remediated, awaiting-closure, closed, reopened.
        assignee: only those assigned to this user now.
        since: created within, e.g. 24h, 7d.
        json_output: print a JSON array instead of a table.
    """
    from flows.models import CaseStatus

    if status is not None and status not in {s.value for s in CaseStatus}:
        known = ", ".join(s.value for s in CaseStatus)
        err.print(f"error: --status: {status!r} is not one of {known}", markup=False)
        return 2
    try:
        start = _since(since)
    except ValueError as exc:
        err.print(f"error: --since: {exc}", markup=False)
        return 2
    code, rows = _run(
        lambda book: book.list(tenant=tenant, status=status, assignee=assignee, since=start)
    )
    if rows is None:
        return code
    if json_output:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return 0
    table = Table("incident", "tenant", "severity", "status", "assignee", "created (UTC)", "title")
    for r in rows:
        table.add_row(
            r.incident_id,
            escape(r.tenant),
            r.severity,
            r.status,
            escape(r.assignee or "—"),
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            escape(r.title),
        )
    _wide().print(table)
    return 0


def _wide() -> Console:
    # Piped output has no terminal width: give a pipe full rows rather than cut ids short.
    return out if out.is_terminal else Console(width=240, highlight=False, soft_wrap=True)


def ui_address(flow_run_id: str | None) -> str | None:
    """The Prefect UI page of the incident's flow run, when a server is known.

    ``PREFECT_UI_URL`` if set, else the API URL without ``/api``, else the embedded server
    another stanch command started.
    """
    if flow_run_id is None:
        return None
    base = os.environ.get("PREFECT_UI_URL")
    if not base and os.environ.get("PREFECT_API_URL"):
        base = os.environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    if not base:
        from flows.settings import load_settings
        from stanch.prefect_server import prefect_home, running_server

        server = running_server(prefect_home(load_settings().home))
        base = server.ui_url if server is not None else None
    return None if not base else f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


async def read_case_file(
    book: CaseBook, incident_id: str, *, tenant: str | None = None
) -> CaseFile:
    """The incident's case file with its tenant's SLA, judged now."""
    from flows.models import utcnow
    from flows.policy import policy_for_tenant
    from flows.record import case_file
    from flows.settings import load_settings, policy_directory

    case = await book.get(incident_id, tenant=tenant)
    settings = load_settings()
    rules = policy_for_tenant(policy_directory(settings.policies_dir), case.tenant).rules
    return await case_file(book.store, incident_id, sla=rules.sla, now=utcnow(), tenant=tenant)


@app.command
def show(incident: str, *, json_output: Annotated[bool, Parameter(name="--json")] = False) -> int:
    """An incident's case: alerts, entities, timeline, actions, approvals, notes, clocks,
    SLA state, and the address of its flow run in the Prefect UI.

    Args:
        incident: the incident id (``INC-…``).
        json_output: print one JSON object instead.
    """
    code, found = _run(lambda book: read_case_file(book, incident))
    if found is None:
        return code
    ui = ui_address(found.case.flow_run_id)
    if json_output:
        print(json.dumps({**found.model_dump(mode="json"), "ui_url": ui}, indent=2))
        return 0
    _print_case(found, ui)
    return 0


def _print_case(found: CaseFile, ui: str | None) -> None:
    case = found.case
    console = _wide()
    console.print(f"[bold]{case.incident_id}[/bold] {escape(case.title)}")
    facts = [
        ("tenant", case.tenant),
        ("severity", case.severity),
        ("status", case.status),
        ("assignee", case.assignee or "—"),
        ("playbook", case.playbook or "built-in response"),
        ("flow run", ui or case.flow_run_id or "—"),
    ]
    if case.disposition:
        facts.append(("disposition", case.disposition))
        facts.append(("summary", case.summary or ""))
        if case.duplicate_of:
            facts.append(("duplicate of", case.duplicate_of))
    for name, value in facts:
        console.print(f"  {name:<12} {escape(str(value))}")
    _section(
        console,
        "Alerts",
        ("time (UTC)", "vendor", "severity", "title"),
        [
            (a.time.strftime("%Y-%m-%d %H:%M:%S"), a.vendor, a.severity, a.title)
            for a in found.alerts
        ],
    )
    for kind, values in found.entities.items():
        if values:
            console.print(f"  {kind:<18} {escape(', '.join(values))}")
    timeline: list[tuple[datetime, str, str, str]] = [
        (s.at, f"stage {s.stage}", s.event, "stanch:flow") for s in found.stages
    ]
    timeline += [
        (t.at, f"case {t.from_status} → {t.to_status}", t.reason, t.actor) for t in case.transitions
    ]
    timeline += [(a.at, f"assigned to {a.assignee}", "", a.actor) for a in case.assignments]
    _section(
        console,
        "Timeline",
        ("at (UTC)", "what", "detail", "by"),
        [
            (at.strftime("%Y-%m-%d %H:%M:%S"), what, detail, who)
            for at, what, detail, who in sorted(timeline, key=lambda t: t[0])
        ],
    )
    _section(
        console,
        "Actions",
        ("action", "target", "status", "approved by", "plan"),
        [
            (a.action, a.target, a.status, ", ".join(a.approved_by), a.plan_sha256[:12])
            for a in found.actions
        ],
    )
    _section(
        console,
        "Approvals",
        ("id", "status", "decided by", "reason"),
        [(a.id, a.status, a.decided_by or "", a.reason or "") for a in found.approvals],
    )
    _section(
        console,
        "Notes",
        ("at (UTC)", "by", "note"),
        [(n.at.strftime("%Y-%m-%d %H:%M:%S"), n.author, n.text) for n in case.notes],
    )
    if case.links:
        _section(
            console,
            "Links",
            ("kind", "incident", "direction"),
            [(x.kind.value, x.incident_id, x.direction) for x in case.links],
        )
    clocks: list[tuple[Any, ...]] = []
    for clock, seconds in found.clocks.items():
        shown = "—" if seconds is None else f"{seconds:.1f} s"
        clocks.append((clock, shown, found.clock_notes.get(clock, "")))
    _section(console, "Clocks (from the first alert)", ("clock", "value", "why empty"), clocks)
    if found.sla:
        _section(
            console,
            "SLA",
            ("clock", "target", "deadline (UTC)", "state"),
            [
                (
                    s.clock,
                    f"{s.target_seconds:.0f} s",
                    s.deadline.strftime("%Y-%m-%d %H:%M"),
                    s.state,
                )
                for s in found.sla
            ],
        )


def _section(
    console: Console, title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    if not rows:
        table.add_row(*(["—"] * len(columns)))
    console.print(table)


@app.command
def assign(incident: str, user: str) -> int:
    """Give an incident to a user (an analyst's name, ``slack:U…``, an e-mail address)."""
    code, _ = _run(lambda book: book.assign(incident, user, actor=operator()))
    if code == 0:
        out.print(f"{incident}: assigned to {user} by {operator()}", markup=False)
    return code


@app.command
def note(incident: str, text: str) -> int:
    """Append a note to an incident's case (at most 10,000 characters)."""
    code, _ = _run(lambda book: book.note(incident, text, actor=operator()))
    if code == 0:
        out.print(f"{incident}: note recorded by {operator()}", markup=False)
    return code


@app.command
def close(
    incident: str,
    *,
    disposition: str | None = None,
    summary: str | None = None,
    duplicate_of: str | None = None,
) -> int:
    """Close an incident with a disposition and a summary.

    Args:
        incident: the incident id.
        disposition: true-positive, benign-true-positive, false-positive or duplicate.
        summary: what the analyst concluded.
        duplicate_of: for ``duplicate``, the incident this one duplicates.
    """
    code, _ = _run(
        lambda book: book.close(
            incident,
            disposition=disposition,
            summary=summary if summary is not None else "",
            actor=operator(),
            duplicate_of=duplicate_of,
        )
    )
    if code == 0:
        out.print(f"{incident}: closed as {disposition} by {operator()}", markup=False)
    return code


@app.command
def reopen(incident: str, *, reason: str | None = None) -> int:
    """Reopen a closed incident; a reason is required."""
    code, _ = _run(lambda book: book.reopen(incident, reason=reason or "", actor=operator()))
    if code == 0:
        out.print(f"{incident}: reopened by {operator()}", markup=False)
    return code


@app.command
def merge(incident: str, *, into: str | None = None) -> int:
    """Merge an incident into another of the same tenant: its alerts, entities and actions
    move there, and it is closed as a duplicate pointing at the survivor."""
    if into is None:
        err.print("error: --into: the incident to merge into is required", markup=False)
        return 2
    code, moved = _run(lambda book: book.merge(incident, into=into, actor=operator()))
    if moved is not None:
        out.print(
            f"{incident}: merged into {into} ({moved.alerts} alert(s), {moved.entities} "
            f"entit(ies), {moved.actions} action(s) moved)",
            markup=False,
        )
    return code
