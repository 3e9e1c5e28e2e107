"""The ``stanch`` command as a user runs it: a subprocess, exit codes, JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.models import ActionStatus
from stanch.demo import scenario_alerts

REPO = Path(__file__).resolve().parents[2]


def stanch(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stanch", *args],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fresh_user_env(home: Path) -> dict[str, str]:
    """The environment of a user with nothing configured: no Prefect API, no Prefect home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STANCH_"))}
    env["STANCH_HOME"] = str(home)
    return env


def test_demo_runs_end_to_end_on_its_own_server(tmp_path: Path) -> None:
    """Given a machine with no Prefect server configured,
    When `stanch demo --json` runs,
    Then it starts a Prefect server under the stanch home, all five stages complete, at
    least three containment actions ran each with an approver and a plan hash, the report
    names them, the incident ends awaiting closure with clocks that match the stored
    events' times and a stopwatch, and the server it started is stopped again."""
    started = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "stanch", "demo", "--json"],
        cwd=tmp_path,
        env=fresh_user_env(tmp_path / ".stanch"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as demo:
        assert demo.stderr is not None
        first_line = demo.stderr.readline()
        first_after = time.monotonic() - started
        stdout, rest = demo.communicate(timeout=240)
    waited = time.monotonic() - started
    assert demo.returncode == 0, rest[-3000:]
    summary: dict[str, Any] = json.loads(stdout)
    # Progress from the first second (a slow, shared machine gets some slack), and the
    # figure it reports is the wall time from the command's start to the result: what is
    # left is the interpreter starting (about 1.5 s) and exiting (about 5 s measured here).
    assert first_line.startswith("Starting the Prefect server"), first_line
    assert first_after < 3.0, f"first progress line after {first_after:.1f} s"
    assert waited - 12 <= summary["elapsed_seconds"] <= waited

    assert summary["playbook"] == "ransomware", "the demo runs through the YAML playbook"
    assert summary["stages"] == dict.fromkeys(
        ["detect", "investigate", "contain", "remediate", "report"], "completed"
    )
    contained = [
        a
        for a in summary["actions"]
        if a["status"] == ActionStatus.EXECUTED
        and a["approved_by"]
        and a["verb"] in ("contain_host", "suspend_user", "revoke_sessions", "block_ip")
    ]
    assert len(contained) >= 3
    assert all(len(a["plan_sha256"]) == 64 for a in contained)
    assert all(a["approved_by"] == ["slack:U0DEMOANALYST"] for a in contained)

    report = (tmp_path / summary["report"]["markdown"]).read_text()
    for action in contained:
        assert action["plan_sha256"] in report
    assert (tmp_path / summary["report"]["html"]).exists()
    assert set(summary["clocks"]) == {
        "detect",
        "acknowledge",
        "contain",
        "resolve",
        "approval_wait",
    }
    assert summary["clocks"]["approval_wait"] > 0
    assert summary["clocks"]["acknowledge"] <= summary["clocks"]["contain"]
    # The whole wait, a fresh Prefect database's migration included (about 55 s of it on a
    # loaded 2-core machine).
    assert summary["elapsed_seconds"] < 180
    assert summary["case_status"] == "awaiting-closure"
    assert summary["clocks"]["resolve"] is None
    assert summary["clock_notes"] == {"resolve": "the case is awaiting-closure"}
    assert summary["clocks"] == stored_clocks(tmp_path / ".stanch" / "stanch.db")
    # Every clock runs from an alert raised during the demo, so none is longer than the
    # demo took by the test's own stopwatch (the 40 s the alerts once carried are gone).
    assert 0 <= summary["clocks"]["detect"] <= summary["clocks"]["contain"] < waited

    # The analyst closes the case from the terminal; the ledger verifies it.
    env = fresh_user_env(tmp_path / ".stanch")
    incident = summary["incident_id"]
    closed = stanch(
        "incidents", "close", incident, "--disposition", "true-positive",
        "--summary", "Ransomware on WS-0042 contained; jdoe's password reset",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert closed.returncode == 0, closed.stderr
    verified = stanch("ledger", "verify", cwd=tmp_path, env=env)
    assert verified.returncode == 0 and verified.stdout.startswith("ledger OK"), verified.stderr
    entries = json.loads(stanch("ledger", "show", incident, "--json", cwd=tmp_path, env=env).stdout)
    last = entries[-1]
    assert (last["kind"], last["verb"], last["status"]) == ("case", "close", "closed")
    assert last["parameters"]["disposition"] == "true-positive"
    assert last["approvers"][0].startswith("cli:")
    shown = json.loads(
        stanch("incidents", "show", incident, "--json", cwd=tmp_path, env=env).stdout
    )
    assert shown["case"]["status"] == "closed"
    assert shown["clocks"]["resolve"] is not None and "resolve" not in shown["clock_notes"]

    prefect_db = tmp_path / ".stanch" / "prefect" / "prefect.db"
    assert prefect_db.exists(), "history must stay on disk for `stanch ui`"
    assert not (tmp_path / ".stanch" / "prefect" / "server.json").exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{summary['ui_url']}/api/health", timeout=2)


def stored_clocks(db: Path) -> dict[str, float | None]:
    """The demo incident's clocks recomputed by hand from the rows the store holds."""
    import sqlite3

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    with sqlite3.connect(db) as conn:
        created, document = conn.execute("SELECT created_at, document FROM incidents").fetchone()
        decided, requested = conn.execute(
            "SELECT decided_at, requested_at FROM approvals WHERE status = 'approved'"
        ).fetchone()
        contained = conn.execute(
            "SELECT min(finished_at) FROM actions WHERE status = 'executed'"
            " AND json_extract(plan, '$.stage') = 'contain'"
        ).fetchone()[0]
    first_alert = min(
        datetime.fromtimestamp(a["time"] / 1000, UTC) for a in json.loads(document)["alerts"]
    )

    def since(when: str) -> float:
        return round((at(when) - first_alert).total_seconds(), 3)

    return {
        "detect": since(created),
        "acknowledge": since(decided),
        "contain": since(contained),
        "resolve": None,
        "approval_wait": round((at(decided) - at(requested)).total_seconds(), 3),
    }


def test_run_rejects_a_malformed_alert_naming_the_field(tmp_path: Path) -> None:
    """Given an alert file whose finding has no finding_info.uid,
    When `stanch run` is given it,
    Then it exits 1 naming the field and the line, before starting anything, and the
    payload is kept in the dead-letter table."""
    alert = scenario_alerts(datetime.now(UTC), edr="crowdstrike", identity="okta")[0]
    data = alert.model_dump(mode="json", exclude_none=True)
    del data["finding_info"]["uid"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data, indent=2))
    home = tmp_path / ".stanch"

    result = stanch("run", str(path), cwd=tmp_path, env=fresh_user_env(home))

    assert result.returncode == 1
    assert "finding_info.uid" in result.stderr
    assert "bad.json:" in result.stderr
    assert not (home / "prefect").exists(), "no server for an alert that never validated"
    import sqlite3

    with sqlite3.connect(home / "stanch.db") as db:
        rows = db.execute("SELECT field, payload FROM dead_letters").fetchall()
    assert rows == [("finding_info.uid", path.read_text())]


@pytest.mark.usefixtures("prefect_server")
def test_run_processes_an_alert_file_through_the_lifecycle(tmp_path: Path) -> None:
    """Given a valid alert file and the simulated analyst,
    When `stanch run` processes it against the running Prefect server,
    Then the incident completes and the summary names its actions."""
    alerts = scenario_alerts(datetime.now(UTC), edr="crowdstrike", identity="okta")
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps([a.model_dump(mode="json", exclude_none=True) for a in alerts]))

    result = stanch("run", str(path), "--analyst-delay", "0.2", cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert set(summary["stages"].values()) == {"completed"}
    assert {a["verb"] for a in summary["actions"]} >= {"contain_host", "suspend_user"}


@pytest.mark.usefixtures("prefect_server")
def test_approve_refuses_unknown_requests(tmp_path: Path) -> None:
    """Given no such approval request, When `stanch approve` names one, Then it exits 2
    (an unknown id is a usage error)."""
    result = stanch("approve", "APR-doesnotexist", "--yes", cwd=tmp_path)
    assert result.returncode == 2
    assert "no approval request APR-doesnotexist" in result.stderr
    listing = stanch("approvals", "list", "--all", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr


def test_deny_requires_a_reason(tmp_path: Path) -> None:
    """Given `stanch deny` without --reason, When run, Then it refuses with a usage error."""
    result = stanch("deny", "APR-1", cwd=tmp_path, env=fresh_user_env(tmp_path / ".stanch"))
    assert result.returncode != 0
    assert "reason" in (result.stderr + result.stdout).lower()
