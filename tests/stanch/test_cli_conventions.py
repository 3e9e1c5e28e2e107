"""The CLI's conventions, as a user meets them: exit codes, --json, help, where state lives,
and no process left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.approval import new_approval_request, pending_row
from flows.record import open_store
from flows.settings import default_home, user_data_dir
from stanch.demo import scenario_alerts
from tests.flows import factories
from tests.stanch.test_cli import REPO, fresh_user_env, stanch

EXAMPLES = REPO / "playbooks" / "examples" / "ransomware"


def bare_env(home_dir: Path) -> dict[str, str]:
    """A user with no STANCH_* or PREFECT_* set, whose home directory is ``home_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STANCH_"))}
    env.update({"HOME": str(home_dir), "XDG_DATA_HOME": str(home_dir / "data")})
    return env


@pytest.mark.parametrize(
    "args",
    [
        ["nosuch"],
        ["deny", "APR-1"],  # --reason is required
        ["approvals", "show", "APR-doesnotexist"],
        ["approve", "APR-doesnotexist", "--yes"],
        ["undo", "INC-20990101-0001"],
        ["rerun", "INC-20990101-0001"],
        ["ledger", "show", "INC-20990101-0001"],
        ["policy", "check", "--tenant", "demo"],
    ],
)
def test_usage_errors_and_unknown_ids_exit_2(tmp_path: Path, args: list[str]) -> None:
    """Given a user with nothing stored,
    When a command is misused or names an id that does not exist,
    Then it exits 2 (not 1, not a traceback) and starts no Prefect server."""
    home = tmp_path / ".stanch"
    result = stanch(*args, cwd=REPO, env=fresh_user_env(home))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not (home / "prefect" / "server.json").exists()


def test_help_renders_placeholders_and_readable_types(tmp_path: Path) -> None:
    """Given the help of the commands that name placeholders or take repeated files
    When printed
    Then INC-<date>-<n> style placeholders survive, no Python type spelling such as
    TUPLE[PATH, ELLIPSIS] shows, positionals are not also offered as --options, and
    approve and deny explain each parameter."""
    env = fresh_user_env(tmp_path / ".stanch")
    env["COLUMNS"] = "200"
    helps = {
        name: stanch(*name.split(), "--help", cwd=tmp_path, env=env).stdout
        for name in ("playbook plan", "run", "approve", "deny", "undo", "rerun", "ledger verify")
    }
    assert "INC-<alert date>-0001" in helps["playbook plan"]
    assert "PLAYBOOK --alert FILE [--alert FILE ...]" in helps["playbook plan"]
    assert "SEQ:HASH" in helps["ledger verify"]
    for name, text in helps.items():
        assert "TUPLE[" not in text and "ELLIPSIS" not in text, name
    assert "--alert" not in helps["run"]
    assert "--approval" not in helps["approve"] and "--incident" not in helps["undo"]
    assert "do not ask to confirm" in helps["approve"]
    assert "stop the whole response" in helps["deny"]
    assert "Exit status" in helps["approve"]


def test_every_list_show_and_check_command_speaks_json(tmp_path: Path) -> None:
    """Given the bundled playbooks and policies and an empty store
    When each list, show and check command runs with --json
    Then stdout is one JSON document of the expected shape, and the exit code says
    whether the check passed."""
    env = fresh_user_env(tmp_path / ".stanch")
    alerts = [str(EXAMPLES / "ransomware.json"), str(EXAMPLES / "impossible-travel.json")]

    def run(*args: str) -> tuple[int, Any]:
        result = stanch(*args, "--json", cwd=REPO, env=env)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, json.loads(result.stdout)

    code, decision = run(
        "policy", "check", "--tenant", "demo", "--action", "edr.contain_host",
        "--target", "WS-0042", "--severity", "critical",
    )  # fmt: skip
    assert code == 0 and decision["verdict"] == "approval" and decision["approvals_required"] == 1
    code, validated = run("policy", "check", "--validate")
    assert code == 0 and validated["valid"] is True and validated["files"]
    code, verified = run("ledger", "verify")
    assert code == 0 and verified["ok"] is True and verified["entries"] == 0
    code, playbooks = run("playbook", "validate")
    assert code == 0 and all(f["valid"] for f in playbooks["files"])
    code, routed = run("playbook", "route", *alerts)
    assert code == 0 and routed["chosen"] == "ransomware"
    code, planned = run(
        "playbook", "plan", "playbooks/ransomware.yaml", "--alert", alerts[0], "--alert", alerts[1]
    )
    contain = planned["stages"]["contain"]["plans"]
    assert code == 0 and {p["action"] for p in contain} >= {"edr.contain_host"}
    assert all(len(p["sha256"]) == 64 and p["verdict"] for p in contain)
    code, tested = run("playbook", "test")
    assert code == 0 and tested["passed"] is True and tested["cases"]
    code, metrics = run("metrics")
    assert code == 0 and metrics == {}
    assert run("approvals", "list") == (0, [])
    assert run("alerts", "rejected") == (0, [])


def test_a_broken_playbook_fails_validate_in_json_naming_file_and_line(tmp_path: Path) -> None:
    """Given a playbook with an unknown action beside a good one
    When `playbook validate --json` runs
    Then it exits 1, the good file is valid, and the broken one's issue names its line."""
    (tmp_path / "ransomware.yaml").write_text(
        (REPO / "playbooks" / "ransomware.yaml").read_text(), encoding="utf-8"
    )
    (tmp_path / "broken.yaml").write_text(BROKEN_PLAYBOOK, encoding="utf-8")
    result = stanch(
        "playbook", "validate", str(tmp_path), "--json", cwd=tmp_path,
        env=fresh_user_env(tmp_path / ".stanch"),
    )  # fmt: skip
    assert result.returncode == 1
    files = {Path(f["file"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["ransomware.yaml"]["valid"] is True
    [issue, *_] = files["broken.yaml"]["issues"]
    assert (issue["line"], issue["step"]) == (10, "nuke") and issue["code"]


BROKEN_PLAYBOOK = """\
id: broken
version: 1
title: A playbook that names an action stanch does not have
owner: soc-leads
trigger:
  min_severity: low
steps:
  contain:
    - id: nuke
      action: edr.nuke_from_orbit
      args:
        host_id: "{{ incident.id }}"
"""


def test_init_writes_a_soc_directory_whose_state_every_subdirectory_shares(
    tmp_path: Path,
) -> None:
    """Given a user with no STANCH_HOME
    When `stanch init soc` runs, and an alert is rejected from a subdirectory of it
    Then the starter playbooks and policies validate, a second init refuses to overwrite,
    the rejected alert is listed (field and reason) from soc/ itself, and a directory
    outside soc/ keeps its own state."""
    env = bare_env(tmp_path)
    assert stanch("init", "soc", cwd=tmp_path, env=env).returncode == 0
    soc = tmp_path / "soc"
    assert (soc / "playbooks" / "ransomware.yaml").is_file()
    assert (soc / "policies" / "default.yaml").is_file()
    assert "STANCH_MODE=lab" in (soc / ".env").read_text()
    assert (soc / ".stanch").is_dir()
    again = stanch("init", "soc", cwd=tmp_path, env=env)
    assert again.returncode == 1 and "nothing was written" in again.stderr
    assert stanch("playbook", "validate", cwd=soc, env=env).returncode == 0
    assert stanch("policy", "check", "--validate", cwd=soc, env=env).returncode == 0

    sub = soc / "cases" / "today"
    sub.mkdir(parents=True)
    alert = scenario_alerts(datetime.now(UTC), edr="crowdstrike", identity="okta")[0]
    data = alert.model_dump(mode="json", exclude_none=True)
    del data["finding_info"]["uid"]
    (sub / "bad.json").write_text(json.dumps(data))
    assert stanch("run", "bad.json", cwd=sub, env=env).returncode == 1

    listed = stanch("alerts", "rejected", "--json", cwd=soc, env=env)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["field"] == "finding_info.uid" and row["source"].endswith("bad.json")
    assert (soc / ".stanch" / "stanch.db").is_file()
    human = stanch("alerts", "rejected", cwd=soc, env=env)
    assert "finding_info.uid" in human.stdout
    elsewhere = stanch("alerts", "rejected", "--json", cwd=tmp_path, env=env)
    assert json.loads(elsewhere.stdout) == []


def test_the_default_home_is_the_project_else_the_user_data_directory(tmp_path: Path) -> None:
    """Given a checkout (stanch's pyproject.toml), a directory marked by .stanch, and
    one with neither
    When the default home is resolved from deep inside each
    Then the first two keep state at their root's .stanch, the last in the user data dir."""
    checkout = tmp_path / "checkout"
    (checkout / "a" / "b").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "stanch"\n')
    marked = tmp_path / "soc"
    (marked / ".stanch").mkdir(parents=True)
    (marked / "x").mkdir()
    other = tmp_path / "other"
    (other / "y").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "someone-else"\n')

    assert default_home(checkout / "a" / "b") == (checkout / ".stanch").resolve()
    assert default_home(marked / "x") == (marked / ".stanch").resolve()
    assert default_home(other / "y") == user_data_dir()
    assert user_data_dir({"XDG_DATA_HOME": "/srv/data"}, "linux") == Path("/srv/data/stanch")


def _servers_on(home: Path) -> list[int]:
    """Pids of processes whose environment names this stanch home's Prefect directory."""
    wanted = f"PREFECT_HOME={home / 'prefect'}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def test_approve_never_starts_a_prefect_server(tmp_path: Path) -> None:
    """Given a pending approval whose run's server is not running
    When `stanch approve --yes` is asked to decide it, and again without --yes off a
    terminal
    Then it says the waiting run is gone and exits 1, refuses to decide unconfirmed with
    exit 2, and no Prefect server was started (none outlives the command)."""
    home = tmp_path / ".stanch"
    env = fresh_user_env(home)
    request = new_approval_request(
        incident_id="INC-20261122-0001",
        tenant="demo",
        flow_run_id="00000000-0000-0000-0000-000000000001",
        plans=[factories.plan(incident_id="INC-20261122-0001")],
        reasons={},
        timeout_seconds=600,
        incident_title="ransomware on WS-0042",
    )

    async def file_request() -> None:
        async with open_store(f"sqlite+aiosqlite:///{home / 'stanch.db'}") as store:
            await store.create_approval(pending_row(request))

    home.mkdir(parents=True)
    asyncio.run(file_request())

    unconfirmed = stanch("approve", request.id, cwd=tmp_path, env=env)
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr
    assert "Isolate host WS-0042" in unconfirmed.stdout  # it showed what it would approve
    result = stanch("approve", request.id, "--yes", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    assert "no Prefect server is running" in result.stderr
    assert not (home / "prefect" / "server.json").exists()
    assert _servers_on(home) == []
    shown = stanch("approvals", "show", request.id, "--json", cwd=tmp_path, env=env)
    assert json.loads(shown.stdout)["status"] == "pending"


def test_stanch_ui_stops_its_server_on_sigterm(tmp_path: Path) -> None:
    """Given `stanch ui` serving the embedded Prefect server
    When it gets SIGTERM (as from systemd or `kill`)
    Then it exits, and its server process is gone with it."""
    home = tmp_path / ".stanch"
    with subprocess.Popen(
        [sys.executable, "-m", "stanch", "ui"],
        cwd=tmp_path,
        env=fresh_user_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            line = process.stdout.readline()  # printed once the server is healthy
            assert "Prefect UI:" in line, line
            state = json.loads((home / "prefect" / "server.json").read_text())
            assert httpx.get(f"{state['api_url']}/health", timeout=5).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{state['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{state['pid']}").exists(), "the Prefect server outlived stanch ui"
    assert _servers_on(home) == []


def test_telemetry_is_off_unless_the_operator_turns_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the stanch entry point
    When it starts with nothing set, or with the operator's own DO_NOT_TRACK=0
    Then Prefect's server, SDK and Cloud telemetry are off, and an explicit value stands."""
    from stanch import cli

    for name in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK",
                 "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY"] == "false"
    assert os.environ["DO_NOT_TRACK"] == "0"  # the operator's choice is kept

    from prefect._internal.analytics.enabled import is_telemetry_enabled

    monkeypatch.delenv("DO_NOT_TRACK")
    cli.telemetry_off()
    assert os.environ["DO_NOT_TRACK"] == "1" and not is_telemetry_enabled()


@pytest.mark.usefixtures("prefect_server")
def test_undo_in_lab_mode_says_it_acts_on_fresh_simulators(tmp_path: Path) -> None:
    """Given a stored incident with nothing in effect, in lab mode
    When `stanch undo` runs
    Then before anything it says the simulators are fresh ones, and it exits 0."""
    incident = factories.incident(9101)

    async def store_it() -> None:
        from flows.settings import load_settings

        async with open_store(load_settings().store_url) as store:
            await store.save_incident(incident)

    asyncio.run(store_it())
    result = stanch("undo", incident.id, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fresh in-process simulators" in result.stderr
    assert json.loads(result.stdout) == []
