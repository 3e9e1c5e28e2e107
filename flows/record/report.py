"""The incident report: Markdown and HTML files from jinja2 templates, and a Prefect artifact.

Alert content is attacker-controlled. It reaches the templates only as data: the HTML
environment autoescapes everything, and the Markdown template passes every such string
through the ``md`` filter so it cannot become a link, an image or markup in the Prefect UI.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from prefect import task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.models import IncidentOutcome, Stage

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(value: object) -> str:
    """Render a value as inert Markdown text: one line, specials escaped, HTML entities."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _environment(autoescape: bool) -> Environment:
    env = Environment(
        loader=PackageLoader("flows.record", "templates"),
        # The Markdown template escapes with the ``md`` filter instead: HTML escaping
        # alone would leave Markdown links and images live in the Prefect UI.
        autoescape=select_autoescape(["html.j2"]) if autoescape else False,  # noqa: S701
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_escape
    return env


def report_context(outcome: IncidentOutcome) -> dict[str, Any]:
    """The data both templates render: nothing in it is evaluated as a template."""
    incident = outcome.incident
    return {
        "incident": incident,
        "investigation": outcome.investigation,
        "stages": outcome.stages,
        "actions": outcome.actions,
        "decisions": outcome.decisions,
        "clocks": outcome.clocks,
        "clock_notes": outcome.clock_notes,
        "case_status": outcome.case_status,
        "flow_run_id": outcome.flow_run_id,
        "in_effect": outcome.in_effect,
        "ledger": outcome.ledger,
        "playbook": outcome.playbook,
        "playbook_notes": outcome.playbook_notes,
        "stage_order": list(Stage),
        "evidence": {
            "Hosts": incident.hostnames,
            "Users": incident.users,
            "Internet IPs": incident.external_ips,
            "SHA-256": incident.sha256s,
            "ATT&CK techniques": incident.techniques,
        },
    }


def export_json(outcome: IncidentOutcome) -> str:
    """The incident as JSON for other tools: alerts, plans, decisions, ledger entries."""
    document = {
        "schema": "stanch.incident/1",
        "incident": outcome.incident.model_dump(mode="json", exclude={"alerts"}),
        "alerts": [a.model_dump(mode="json", exclude_none=True) for a in outcome.incident.alerts],
        "investigation": outcome.investigation.model_dump(mode="json"),
        "stages": [s.model_dump(mode="json") for s in outcome.stages],
        "actions": [
            {"plan": a.plan.model_dump(mode="json"), **a.model_dump(mode="json", exclude={"plan"})}
            for a in outcome.actions
        ],
        "decisions": outcome.decisions,
        "clocks": outcome.clocks,
        "clock_notes": outcome.clock_notes,
        "case_status": outcome.case_status,
        "in_effect": outcome.in_effect,
        "ledger": outcome.ledger,
        "playbook": outcome.playbook,
        "playbook_notes": outcome.playbook_notes,
        "flow_run_id": outcome.flow_run_id,
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def render_markdown(outcome: IncidentOutcome) -> str:
    """The report as Markdown."""
    return _environment(False).get_template("report.md.j2").render(report_context(outcome))


def render_html(outcome: IncidentOutcome) -> str:
    """The report as a self-contained HTML page (no external assets)."""
    return _environment(True).get_template("report.html.j2").render(report_context(outcome))


@task(name="write-report", task_run_name="report {outcome.incident.id}", cache_policy=NO_CACHE)
async def publish_report(outcome: IncidentOutcome, reports_dir: Path) -> dict[str, str]:
    """Write ``<reports_dir>/<incident>.md`` and ``.html``; publish the Prefect artifacts."""
    await asyncio.to_thread(reports_dir.mkdir, parents=True, exist_ok=True)
    markdown = render_markdown(outcome)
    md_path = reports_dir / f"{outcome.incident.id}.md"
    html_path = reports_dir / f"{outcome.incident.id}.html"
    json_path = reports_dir / f"{outcome.incident.id}.json"
    await asyncio.to_thread(md_path.write_text, markdown, encoding="utf-8")
    await asyncio.to_thread(html_path.write_text, render_html(outcome), encoding="utf-8")
    await asyncio.to_thread(json_path.write_text, export_json(outcome), encoding="utf-8")
    key = outcome.incident.id.lower()
    await acreate_markdown_artifact(
        key=f"{key}-report", markdown=markdown, description=f"Incident report {outcome.incident.id}"
    )
    await acreate_table_artifact(
        key=f"{key}-actions",
        table=[
            {
                "action": a.plan.action,
                "target": a.plan.target_label,
                "status": a.status.value,
                "plan_sha256": a.plan_sha256,
                "approved_by": ", ".join(a.approved_by),
            }
            for a in outcome.actions
        ],
        description=f"Actions taken on {outcome.incident.id}",
    )
    return {"markdown": str(md_path), "html": str(html_path), "json": str(json_path)}
