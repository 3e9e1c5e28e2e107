"""`stanch metrics` and `stanch report period` against a store with two incidents."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from flows.models import ActionResult, ActionStatus, Verdict
from flows.record import open_store
from tests.flows.factories import incident, plan


def _stanch(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STANCH_")}
    env["STANCH_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "stanch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _seed(home: Path) -> None:
    async def seed() -> None:
        async with open_store(f"sqlite+aiosqlite:///{home / 'stanch.db'}") as store:
            inc = incident(1)
            await store.save_incident(inc)
            contained = plan(incident_id=inc.id)
            await store.finish_action(
                ActionResult(
                    plan=contained,
                    plan_sha256=contained.sha256,
                    verdict=Verdict.UNATTENDED,
                    status=ActionStatus.EXECUTED,
                    approved_by=["policy:unattended"],
                )
            )
            await store.set_incident_playbook(inc.id, "ransomware")
            await store.save_incident(incident(2))  # the built-in response handled it

    asyncio.run(seed())


def test_metrics_and_period_report(tmp_path: Path) -> None:
    """Given a store with two incidents of tenant demo, one contained by the ransomware
    playbook and one handled by the built-in response,
    When `stanch metrics` runs per tenant and per playbook, and `stanch report period`,
    Then they count them per tenant, per playbook ("(built-in)" for the built-in response)
    and in the report; a bad --since or --by is refused."""
    _seed(tmp_path)
    metrics = _stanch("metrics", "--json", home=tmp_path)
    assert metrics.returncode == 0, metrics.stderr
    summary = json.loads(metrics.stdout)
    assert summary["demo"]["incidents"] == 2
    assert summary["demo"]["contain"]["n"] == 1
    assert summary["demo"]["containment"] == {
        "automation": 1,
        "human": 0,
        "automation_rate": 1.0,
    }
    # The bundled default policy gives critical incidents 15 minutes to be acknowledged;
    # nobody touched these seconds-old ones yet, so the target is pending, not breached.
    assert summary["demo"]["sla"]["critical"]["acknowledge"]["pending"] == 2

    per_playbook = _stanch("metrics", "--by", "playbook", "--json", home=tmp_path)
    assert per_playbook.returncode == 0, per_playbook.stderr
    by_playbook = json.loads(per_playbook.stdout)
    assert {k: v["incidents"] for k, v in by_playbook.items()} == {
        "(built-in)": 1,
        "ransomware": 1,
    }
    assert by_playbook["ransomware"]["contain"]["n"] == 1
    assert by_playbook["(built-in)"]["contain"] is None

    table = _stanch("metrics", "--by", "playbook", home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "playbook" in table.stdout and "ransomware" in table.stdout
    assert "(built-in)" in table.stdout

    report = _stanch("report", "period", "--tenant", "demo", "--since", "7d", home=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "# demo: 2 incident(s)" in report.stdout
    assert "- critical: 2" in report.stdout
    assert "## Playbooks\n\n- (built-in): 1\n- ransomware: 1\n" in report.stdout

    bad = _stanch("metrics", "--since", "a week", home=tmp_path)
    assert bad.returncode == 2
    assert "--since" in bad.stderr
    bad_by = _stanch("metrics", "--by", "vendor", home=tmp_path)
    assert bad_by.returncode != 0
    assert "--by" in bad_by.stdout + bad_by.stderr
