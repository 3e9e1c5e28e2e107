"""The incident report: Markdown and HTML files from jinja2 templates, and a Prefect artifact.

Alert content is attacker-controlled. It reaches the templates only as data: the HTML
environment autoescapes everything, and the Markdown template passes every such string
through the ``md`` filter so it cannot become a link, an image or markup in the Prefect UI.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from prefect import task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_UI_URL

from flows.models import IncidentOutcome, Stage
from flows.record.report_facts import (
    action_line,
    clock_words,
    decided_by,
    decision_lines,
    executive_summary,
    stage_lines,
    when,
    who,
)
from integrations.phrases import vendor_name

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(value: object) -> str:
    """Render a value as inert Markdown text: one line, specials escaped, HTML entities."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


@functools.cache
def _environment(autoescape: bool) -> Environment:
    # One per process and kind: a new environment recompiles both templates (~60 ms per
    # report). Environments are safe to share; the templates' data is passed per render.
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
        "hunts": outcome.investigation.hunts,
        "stage_order": list(Stage),
        "summary": executive_summary(outcome),
        "timeline": stage_lines(outcome),
        "decision_lines": decision_lines(outcome),
        "clock_words": clock_words(outcome.clocks),
        "when": when,
        "who": who,
        "action_line": action_line,
        "decided_by": decided_by,
        "intel": threat_intel_rows(outcome),
        "evidence": {
            "Hosts": incident.hostnames,
            "Users": incident.users,
            "Internet IPs": incident.external_ips,
            "SHA-256": incident.sha256s,
            "ATT&CK techniques": incident.techniques,
        },
    }


_VERDICT_ORDER = {"malicious": 0, "suspicious": 1, "harmless": 2, "unknown": 3}


def threat_intel_rows(outcome: IncidentOutcome) -> list[dict[str, Any]]:
    """The report's "Threat intel" rows, worst verdict first.

    Names and notes come from the vendors' data (attacker-influenced): the templates
    escape them like alert text.
    """
    reports = sorted(
        outcome.investigation.intel,
        key=lambda r: (_VERDICT_ORDER.get(r.verdict.value, 9), r.indicator, r.vendor),
    )
    return [
        {
            "kind": r.kind,
            "indicator": r.indicator,
            "verdict": r.verdict,
            "source": vendor_name(r.vendor),
            "score": r.score,
            "names": list(r.names),
            "first_seen": r.first_seen,
            "link": r.link,
            "note": r.note,
        }
        for r in reports
    ]


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
        "warnings": outcome.warnings,
        "flow_run_id": outcome.flow_run_id,
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def forget_report_templates() -> None:
    """Drop the compiled report templates, so the next report compiles them again
    (benchmarks measure what that costs)."""
    _environment.cache_clear()


def render_markdown(outcome: IncidentOutcome) -> str:
    """The report as Markdown."""
    return _environment(False).get_template("report.md.j2").render(report_context(outcome))


def render_html(outcome: IncidentOutcome) -> str:
    """The report as a self-contained HTML page (no external assets)."""
    return _environment(True).get_template("report.html.j2").render(report_context(outcome))


@task(
    name="write-report", task_run_name="[report] write {outcome.incident.id}", cache_policy=NO_CACHE
)
async def publish_report(outcome: IncidentOutcome, reports_dir: Path) -> dict[str, str]:
    """Write ``<reports_dir>/<incident>.md``, ``.html`` and ``.json``."""
    await asyncio.to_thread(reports_dir.mkdir, parents=True, exist_ok=True)
    md_path = reports_dir / f"{outcome.incident.id}.md"
    html_path = reports_dir / f"{outcome.incident.id}.html"
    json_path = reports_dir / f"{outcome.incident.id}.json"
    await asyncio.to_thread(md_path.write_text, render_markdown(outcome), encoding="utf-8")
    await asyncio.to_thread(html_path.write_text, render_html(outcome), encoding="utf-8")
    await asyncio.to_thread(json_path.write_text, export_json(outcome), encoding="utf-8")
    return {"markdown": str(md_path), "html": str(html_path), "json": str(json_path)}


async def publish_artifacts(outcome: IncidentOutcome) -> str:
    """Publish the report and the actions table as artifacts of the flow run.

    Called from the flow, not from a task: an artifact made inside a task belongs to that
    task run, and the flow run's Artifacts tab would list it under "Flow run: None".

    Returns:
        The report artifact's address in the Prefect UI, or ``""`` when the UI's address
        is not known.
    """
    key = outcome.incident.id.lower()
    report_id = await acreate_markdown_artifact(
        key=f"{key}-report",
        markdown=render_markdown(outcome),
        description=f"Incident report {outcome.incident.id}",
    )
    await acreate_table_artifact(
        key=f"{key}-actions",
        table=[
            {
                "stage": a.plan.stage.value,
                "action": action_line(a),
                "status": a.status.value,
                "decided by": decided_by(a),
                "plan": a.plan_sha256[:12],
            }
            for a in outcome.actions
        ],
        description=f"Actions on {outcome.incident.id} (plan: the first 12 digits of its SHA-256)",
    )
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/artifacts/artifact/{report_id}" if ui else ""
