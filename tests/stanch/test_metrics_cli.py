"""`stanch metrics` and `stanch report period` against a store with one incident."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from flows.models import Stage
from flows.store import open_store
from tests.flows.factories import incident


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
            await store.record_stage(inc.id, Stage.CONTAIN, "completed")

    asyncio.run(seed())


def test_metrics_and_period_report(tmp_path: Path) -> None:
    """Given a store with one contained incident of tenant demo,
    When `stanch metrics --json` and `stanch report period` run,
    Then both count it, and a bad --since is refused."""
    _seed(tmp_path)
    metrics = _stanch("metrics", "--json", home=tmp_path)
    assert metrics.returncode == 0, metrics.stderr
    summary = json.loads(metrics.stdout)
    assert summary["demo"]["incidents"] == 1
    assert summary["demo"]["contain"]["n"] == 1

    report = _stanch("report", "period", "--tenant", "demo", "--since", "7d", home=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "# demo: 1 incident(s)" in report.stdout
    assert "- critical: 1" in report.stdout

    bad = _stanch("metrics", "--since", "a week", home=tmp_path)
    assert bad.returncode == 2
    assert "--since" in bad.stderr
