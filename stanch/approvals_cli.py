"""``stanch approvals list|show``, ``stanch approve`` and ``stanch deny``: decide from the
terminal what Slack would ask.

``approve`` and ``deny`` talk to the Prefect server the waiting run is on; they never start
one (a run cannot be waiting on a server that is not running), so they leave no process
behind. Output is data from alerts: Rich markup is off everywhere here.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Table

from stanch.cli_support import FAILED, OK, USAGE, operator, print_json

if TYPE_CHECKING:
    from flows.record import ApprovalRow, IncidentRow

app = App(name="approvals", help="Approval requests: list them, show one.")

out = Console(soft_wrap=True, highlight=False, markup=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)


class UnknownApproval(Exception):
    """No approval request (or no pending one for an incident) by that id."""


@dataclass(frozen=True)
class ApprovalSheet:
    """One approval request as the CLI shows it (``show``, ``list``, before ``approve``)."""

    id: str
    incident_id: str
    title: str
    tenant: str
    severity: str
    status: str
    requested_at: datetime
    deadline: datetime
    decided_by: str | None
    reason: str | None
    required_approvals: int
    plans: list[dict[str, Any]]
    context: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The sheet for ``--json``."""
        return {
            "id": self.id,
            "incident_id": self.incident_id,
            "title": self.title,
            "tenant": self.tenant,
            "severity": self.severity,
            "status": self.status,
            "requested_at": _utc(self.requested_at).isoformat(),
            "deadline": _utc(self.deadline).isoformat(),
            "decided_by": self.decided_by,
            "reason": self.reason,
            "required_approvals": self.required_approvals,
            "plans": self.plans,
            "evidence": self.context,
        }


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _when(at: datetime) -> str:
    return _utc(at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def sheet(row: ApprovalRow, incident: IncidentRow | None) -> ApprovalSheet:
    """What the request asked, with the incident's title, tenant and severity."""
    from integrations.ocsf import SeverityId

    asked = row.plans
    reasons: dict[str, str] = asked.get("reasons") or {}
    context: dict[str, Any] = asked.get("context") or {}
    severity = context.get("severity") or (
        SeverityId(incident.severity).name.lower() if incident is not None else ""
    )
    plans = [
        {
            "action": f"{p['capability']}.{p['verb']}",
            "target": p["target"],
            "target_label": p["target_label"],
            "parameters": p.get("parameters") or {},
            "sha256": sha,
            "vendor": (context.get("vendors") or {}).get(p["capability"], ""),
            "policy_reason": reasons.get(sha, ""),
        }
        for p, sha in zip(asked["plans"], asked["sha256s"], strict=True)
    ]
    return ApprovalSheet(
        id=row.id,
        incident_id=row.incident_id,
        title=asked.get("incident_title") or (incident.title if incident is not None else ""),
        tenant=row.tenant,
        severity=str(severity),
        status=row.status,
        requested_at=row.requested_at,
        deadline=row.deadline,
        decided_by=row.decided_by,
        reason=row.reason,
        required_approvals=int(asked.get("required_approvals", 1)),
        plans=plans,
        context=context,
    )


async def load_sheets(
    *, approval: str | None = None, pending_only: bool = True
) -> list[ApprovalSheet]:
    """Sheets of every (pending) request, or of one named by ``APR-…`` or ``INC-…``.

    Raises:
        UnknownApproval: ``approval`` names no request (or an incident with none pending).
    """
    from flows.record import open_store
    from flows.settings import load_settings

    async with open_store(load_settings().store_url) as store:
        if approval is None:
            rows = list(await store.approvals(status="pending" if pending_only else None))
        elif approval.startswith("INC-"):
            rows = list(await store.approvals(incident_id=approval, status="pending"))
            if not rows:
                raise UnknownApproval(f"{approval} has no pending approval request")
            rows = rows[:1]
        else:
            row = await store.get_approval(approval)
            if row is None:
                raise UnknownApproval(f"no approval request {approval}")
            rows = [row]
        return [sheet(r, await store.get_incident(r.incident_id)) for r in rows]


def _plan_line(plan: dict[str, Any]) -> str:
    from integrations.phrases import describe_action

    params = {k: v for k, v in plan["parameters"].items() if k != "reason"}
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    line = describe_action(plan["action"], plan["target_label"], plan["vendor"])
    return f"{line}{f' [{shown}]' if shown else ''}  plan {plan['sha256'][:12]}"


def print_sheet(s: ApprovalSheet) -> None:
    """The request as a person reads it: the facts, what was seen, the plans, the rules."""
    ctx = s.context
    out.print(f"{s.id}  {s.status}  — {s.incident_id} {s.title}")
    verdict = str(ctx.get("verdict") or "not assessed").replace("_", " ")
    risk = f", risk {ctx['risk_score']}/100" if ctx.get("risk_score") is not None else ""
    out.print(f"tenant {s.tenant} · severity {s.severity or 'unknown'} · verdict {verdict}{risk}")
    out.print(f"requested {_when(s.requested_at)} · decide by {_when(s.deadline)}")
    if s.required_approvals > 1:
        out.print(f"needs {s.required_approvals} distinct approvers (approve those in Slack)")
    if s.decided_by:
        out.print(f"decided by {s.decided_by}{f': {s.reason}' if s.reason else ''}")
    evidence = [*ctx.get("evidence", []), *(f"ATT&CK {t}" for t in ctx.get("techniques", []))]
    if evidence:
        out.print("\nWhat was seen:")
        for line in evidence:
            out.print(f"  • {line}")
    out.print(f"\nAsked to approve ({len(s.plans)}):")
    for plan in s.plans:
        out.print(f"  • {_plan_line(plan)}")
    reasons = list(dict.fromkeys(p["policy_reason"] for p in s.plans if p["policy_reason"]))
    if reasons:
        out.print("\nWhy a person decides:")
        for reason in reasons:
            out.print(f"  • {reason}")
    out.print("\nPlan SHA-256:")
    for plan in s.plans:
        out.print(f"  {plan['sha256']}  {plan['action']} {plan['target_label']}")


@app.command(name="list")
def list_approvals(
    *,
    all_requests: Annotated[bool, Parameter(name="--all", negative=())] = False,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """List approval requests waiting for a decision (every request with --all).

    Args:
        all_requests: include decided, expired and rejected requests.
        json_output: print JSON instead of a table.
    """
    sheets = asyncio.run(load_sheets(pending_only=not all_requests))
    if json_output:
        print_json([s.to_json() for s in sheets])
        return OK
    if not sheets:
        out.print("No approval request is waiting." if not all_requests else "No approvals.")
        return OK
    table = Table("id", "incident", "title", "tenant", "severity", "status", "plans", "deadline")
    for s in sheets:
        table.add_row(
            s.id,
            s.incident_id,
            s.title,
            s.tenant,
            s.severity,
            s.status,
            str(len(s.plans)),
            _when(s.deadline),
        )
    console = out if out.is_terminal else Console(width=240, highlight=False, markup=False)
    console.print(table)
    return OK


@app.command
def show(
    approval: str,
    /,
    *,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """Show one approval request: the evidence, the plans, policy's reasons, the deadline.

    Args:
        approval: APR-… (a request) or INC-… (the incident's pending request).
        json_output: print JSON instead of text.
    """
    try:
        [found] = asyncio.run(load_sheets(approval=approval))
    except UnknownApproval as exc:
        err.print(f"stanch approvals show: {exc}")
        return USAGE
    if json_output:
        print_json(found.to_json())
    else:
        print_sheet(found)
    return OK


def _confirm(question: str) -> bool:
    out.print(f"{question} [y/N] ", end="")
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def decide(
    approval: str,
    *,
    approve: bool,
    reason: str,
    only: tuple[str, ...] = (),
    stop: bool = False,
    yes: bool,
    command: str,
) -> int:
    """Show the request, confirm, sign the decision and resume the waiting run."""
    # Before anything imports Prefect: it reads its settings (the API URL) once, at import.
    server = _running_server()
    from flows.errors import ApprovalError

    try:
        [found] = asyncio.run(load_sheets(approval=approval))
    except UnknownApproval as exc:
        err.print(f"stanch {command}: {exc}")
        return USAGE
    if found.status != "pending":
        err.print(f"stanch {command}: {found.id} is already {found.status} (by {found.decided_by})")
        return FAILED
    chosen = [p for p in found.plans if not only or any(p["sha256"].startswith(h) for h in only)]
    if only and (not chosen or any(not _names_one(found, h) for h in only)):
        err.print(
            f"stanch {command}: --only must name plans of {found.id} by the start of their "
            "hash (see `stanch approvals show`), each matching exactly one"
        )
        return USAGE
    print_sheet(found)
    verb = "Approve" if approve else ("Deny as a false positive and stop" if stop else "Deny")
    what = f"{len(chosen)} of {len(found.plans)}" if only else f"all {len(found.plans)}"
    if not yes:
        if not sys.stdin.isatty():
            err.print(f"stanch {command}: not a terminal; pass --yes to {verb.lower()} {what}")
            return USAGE
        if not _confirm(f"\n{verb} {what} action(s) of {found.id}?"):
            err.print("Nothing was decided.")
            return FAILED
    if server is None:
        err.print(
            f"stanch {command}: no Prefect server is running for this stanch home, so the run "
            f"waiting on {found.id} is gone; `stanch rerun {found.incident_id}` asks again"
        )
        return FAILED
    try:
        asyncio.run(
            _submit(
                found.id,
                approve=approve,
                reason=reason,
                approved=[p["sha256"] for p in chosen] if only else None,
                stop=stop,
            )
        )
    except ApprovalError as exc:
        err.print(f"stanch {command}: {exc}")
        return FAILED
    done = "approved" if approve else "denied"
    out.print(f"{found.id}: {done} {what} by {operator()}")
    return OK


def _names_one(found: ApprovalSheet, prefix: str) -> bool:
    return sum(str(p["sha256"]).startswith(prefix) for p in found.plans) == 1


def _running_server() -> Any:
    """The Prefect server this home uses, if one is running; never starts one."""
    import os

    from flows.settings import load_settings
    from stanch.prefect_server import PrefectServer, prefect_home, running_server, use_server

    home = load_settings().home
    configured = os.environ.get("PREFECT_API_URL")
    server: PrefectServer | None = (
        PrefectServer(api_url=configured.rstrip("/"), pid=None, owned=False)
        if configured
        else running_server(prefect_home(home))
    )
    if server is not None:
        use_server(server, home)
    return server


async def _submit(
    approval_id: str, *, approve: bool, reason: str, approved: list[str] | None, stop: bool
) -> None:
    from flows.approval import submit_decision
    from flows.record import open_store
    from flows.settings import load_settings

    settings = load_settings()
    async with open_store(settings.store_url) as store:
        await submit_decision(
            store,
            settings.approval_key(),
            approval_id,
            approve=approve,
            approver=operator(),
            channel="cli",
            reason=reason,
            approved=approved,
            stop_response=stop,
        )


def approve(
    approval: str,
    /,
    *,
    only: Annotated[tuple[str, ...], Parameter(name="--only", negative=())] = (),
    reason: str = "approved at the terminal",
    yes: Annotated[bool, Parameter(name=["--yes", "-y"], negative=())] = False,
) -> int:
    """Approve a pending request's plans, after showing them and asking to confirm.

    Recorded as cli:USER@HOST. A request that needs two or more approvers is approved
    in Slack, where each approver's click counts.

    Exit status: 0 approved; 1 not pending any more, no server, or the run refused it;
    2 no such request, a bad --only, or no terminal to confirm on without --yes.

    Args:
        approval: APR-… (a request) or INC-… (the incident's pending request).
        only: approve just this plan, by the start of its hash (repeatable); the
            request's other plans are denied in the same decision.
        reason: your words, kept with the decision.
        yes: do not ask to confirm.
    """
    return decide(approval, approve=True, reason=reason, only=only, yes=yes, command="approve")


def deny(
    approval: str,
    /,
    *,
    reason: str,
    stop: Annotated[bool, Parameter(name="--stop", negative=())] = False,
    yes: Annotated[bool, Parameter(name=["--yes", "-y"], negative=())] = False,
) -> int:
    """Deny every plan of a pending request, after showing them and asking to confirm.

    Exit status: 0 denied; 1 not pending any more, no server, or the run refused it;
    2 no such request, or no terminal to confirm on without --yes.

    Args:
        approval: APR-… (a request) or INC-… (the incident's pending request).
        reason: why (required; kept with the decision and shown in the report).
        stop: a false positive: stop the whole response (nothing more runs for the
            incident, remediation included) and mark it for closure.
        yes: do not ask to confirm.
    """
    return decide(approval, approve=False, reason=reason, stop=stop, yes=yes, command="deny")
