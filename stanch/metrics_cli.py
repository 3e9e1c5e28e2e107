"""``stanch metrics`` and ``stanch report period``: the clocks and what was done, per tenant
or per playbook."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Column, Table

report_app = App(name="report", help="Reports over a period.")
out = Console()
err = Console(stderr=True)


def _since(text: str) -> datetime:
    from flows.policy import parse_duration

    return datetime.now(UTC) - parse_duration(text)


def metrics(
    *,
    tenant: str | None = None,
    since: str = "30d",
    by: Literal["tenant", "playbook"] = "tenant",
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """Median and p90 of the MDR clocks per tenant or per playbook, from the store's records.

    Args:
        tenant: one tenant (default: all).
        since: how far back, e.g. 24h, 7d, 30d.
        by: one row per tenant, or per playbook ("(built-in)": the built-in response).
        json_output: print JSON instead of a table.
    """
    from flows.record import CLOCKS, incident_clocks, open_store, summarise
    from flows.settings import load_settings

    try:
        start = _since(since)
    except ValueError as exc:
        err.print(f"[red]--since: {exc}[/red]")
        return 2

    async def collect() -> dict[str, Any]:
        async with open_store(load_settings().store_url) as store:
            clocks = await incident_clocks(store, tenant=tenant, since=start)
            summary = summarise(clocks, by=by)
            if by == "tenant":
                attained = await attainment(store, clocks)
                for name, entry in summary.items():
                    entry["sla"] = attained.get(name, {})
            return summary

    summary = asyncio.run(collect())
    if json_output:
        print(json.dumps(summary, indent=2))
        return 0
    # The row labels are what the reader looks up: never cut them short, narrow the clocks.
    label_width = max((len(name) for name in summary), default=0)
    table = Table(
        Column(by, no_wrap=True, min_width=max(label_width, len(by))),
        Column("incidents", no_wrap=True, min_width=len("incidents")),
        *(f"{c} median / p90 (s)" for c in CLOCKS),
    )
    for name, entry in summary.items():
        cells = [
            "—" if entry[c] is None else f"{entry[c]['median']:.1f} / {entry[c]['p90']:.1f}"
            for c in CLOCKS
        ]
        table.add_row(name, str(entry["incidents"]), *cells)
    out.print(table)
    for name, entry in summary.items():
        for who, stats in entry["approvers"].items():
            out.print(f"{name}: {who} decides in {stats['median']:.1f}s median ({stats['n']})")
        rate = entry["containment"]["automation_rate"]
        out.print(
            f"{name}: contained without a human {entry['containment']['automation']}, "
            f"with {entry['containment']['human']}"
            + ("" if rate is None else f" (automation rate {rate:.0%})"),
            markup=False,
        )
        for line in sla_lines(entry.get("sla", {})):
            out.print(f"{name}: {line}", markup=False)
    return 0


async def attainment(store: Any, clocks: list[Any]) -> dict[str, Any]:
    """SLA attainment per tenant and severity, against each tenant's rules, now."""
    from flows.models import utcnow
    from flows.policy import policy_for_tenant
    from flows.record import recorded_breaches, sla_attainment
    from flows.settings import load_settings, policy_directory

    policies = policy_directory(load_settings().policies_dir)
    breaches = await recorded_breaches(store, [c.incident_id for c in clocks])
    return sla_attainment(
        clocks,
        lambda t: policy_for_tenant(policies, t).rules.sla,
        now=utcnow(),
        breaches=breaches,
    )


def sla_lines(per_severity: dict[str, Any]) -> list[str]:
    """``critical acknowledge: 3 met, 1 breached, 0 pending (75% attained)`` lines."""
    lines = []
    for severity, per_clock in per_severity.items():
        for clock, t in per_clock.items():
            share = "" if t["attainment"] is None else f" ({t['attainment']:.0%} attained)"
            lines.append(
                f"SLA {severity} {clock}: {t['met']} met, {t['breached']} breached, "
                f"{t['pending']} pending, {t['n/a']} n/a{share}"
            )
    return lines


@report_app.command
def period(
    *,
    tenant: str,
    since: str = "7d",
    json_output: Annotated[bool, Parameter(name="--json")] = False,
) -> int:
    """A tenant's summary over a period: incidents by severity and playbook, clocks, actions
    taken and undone.

    Args:
        tenant: the tenant.
        since: how far back, e.g. 7d.
        json_output: print JSON instead of Markdown.
    """
    from flows.record import incident_clocks, open_store, period_report
    from flows.settings import load_settings

    try:
        start = _since(since)
    except ValueError as exc:
        err.print(f"[red]--since: {exc}[/red]")
        return 2

    async def collect() -> dict[str, Any]:
        async with open_store(load_settings().store_url) as store:
            report = await period_report(store, tenant=tenant, since=start)
            clocks = await incident_clocks(store, tenant=tenant, since=start)
            report["sla"] = (await attainment(store, clocks)).get(tenant, {})
            return report

    report = asyncio.run(collect())
    if json_output:
        print(json.dumps(report, indent=2))
        return 0
    lines = [f"# {tenant}: {report['incidents']} incident(s) since {report['since']}", ""]
    lines += [f"- {sev}: {n}" for sev, n in report["by_severity"].items()] or ["- none"]
    lines += ["", "## Playbooks", ""]
    lines += [f"- {name}: {n}" for name, n in report["by_playbook"].items()] or ["- none"]
    lines += ["", "## Clocks (median / p90, seconds from first alert)", ""]
    for name, stats in report["clocks"].items():
        if isinstance(stats, dict) and "median" in stats:
            lines.append(f"- {name}: {stats['median']:.1f} / {stats['p90']:.1f} (n={stats['n']})")
    lines += ["", "## Actions taken", ""]
    lines += [f"- {a}: {n}" for a, n in report["actions_taken"].items()] or ["- none"]
    lines += ["", f"Undone: {report['actions_undone']}"]
    containment = report["clocks"].get("containment") or {}
    if containment:
        lines += [
            "",
            "## Automation",
            "",
            f"- contained without a human: {containment['automation']}",
            f"- contained with a human's approval: {containment['human']}",
        ]
    lines += ["", "## SLA attainment", ""]
    lines += [f"- {line}" for line in sla_lines(report["sla"])] or ["- no SLA targets"]
    if report["actions_refused"]:
        lines += ["", "## Refused or failed", ""]
        lines += [f"- {a}: {n}" for a, n in report["actions_refused"].items()]
    print("\n".join(lines))
    return 0
