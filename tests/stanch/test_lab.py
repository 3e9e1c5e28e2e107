"""`stanch lab`: simulators on loopback that live-mode adapters reach over real sockets."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.settings import StanchSettings
from flows.wiring import Lab, connect

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab_env() -> Iterator[dict[str, str]]:
    """`stanch lab --seed-demo` running in a subprocess, and the settings it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "stanch", "lab", "--seed-demo", "--first-port", "18801"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    env: dict[str, str] = {}
    try:
        for line in process.stdout:
            if line.startswith("# lab ready"):
                break
            match = re.match(r"export (\w+)='(.*)'$", line.strip())
            if match:
                env[match.group(1)] = match.group(2)
        assert env, "stanch lab printed no settings"
        yield env
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


@pytest.mark.parametrize(
    ("edr", "identity", "firewall"),
    [
        ("crowdstrike", "okta", "fortigate"),
        ("defender", "entra", "panos"),
        ("sentinelone", "okta", "fortigate"),
    ],
)
async def test_live_mode_reaches_every_simulator_over_loopback(
    lab_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    edr: str,
    identity: str,
    firewall: str,
) -> None:
    """Given `stanch lab` serving every simulator and the settings it printed,
    When live-mode adapters connect with those settings,
    Then they find the demo host and user and block an IP, all over real HTTP on loopback."""
    for name, value in lab_env.items():
        monkeypatch.setenv(name, value)
    settings = StanchSettings(mode="live", edr=edr, identity=identity, firewall=firewall)
    async with connect(settings, Lab()) as wired:
        assert all(str(c.base_url).startswith("http://127.0.0.1:") for c in wired.clients)
        host = await wired.edr.find_host("WS-0042")
        user = await wired.identity.find_user("jdoe@acme.example")
        receipt = await wired.firewall.block_ip("203.0.113.5", ttl_seconds=60, reason="lab test")
    assert host is not None and host.vendor == edr
    assert user is not None and user.vendor == identity
    assert receipt.verb == "block_ip" and receipt.vendor == firewall


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("crowdstrike:lost", "expected VENDOR:KIND:N[:PATH]"),
        ("acme:5xx:1", "unknown vendor 'acme'"),
        ("okta:flaky:1", "unknown kind 'flaky'"),
        ("okta:429:0", "N must be a whole number"),
        ("okta:429:two", "N must be a whole number"),
        ("okta:timeout:1:api/v1", "PATH must start with /"),
    ],
)
def test_a_bad_fault_is_refused_naming_what_is_wrong(spec: str, reason: str) -> None:
    """Given a malformed --faults value, When `stanch lab` starts, Then it exits 2 before
    serving anything, and the message quotes the value and says what is wrong with it."""
    done = subprocess.run(
        [sys.executable, "-m", "stanch", "lab", "--faults", spec],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert spec in done.stderr and reason in done.stderr
    assert "lab ready" not in done.stdout


def test_lab_faults_make_the_vendor_misbehave_over_loopback() -> None:
    """Given `stanch lab crowdstrike okta --faults crowdstrike:lost:1 --faults okta:429:1`,
    When a client contains a host and then looks a user up over the printed settings,
    Then the containment is carried out but answered 503 (a lost acknowledgement), and
    Okta answers 429 with its epoch-valued X-Rate-Limit-Reset header and no Retry-After."""
    import httpx

    process = subprocess.Popen(
        [
            sys.executable, "-m", "stanch", "lab", "crowdstrike", "okta", "--seed-demo",
            "--first-port", "18901",
            "--faults", "crowdstrike:lost:1:/devices/entities/devices-actions",
            "--faults", "okta:429:1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    env: dict[str, str] = {}
    printed: list[str] = []
    try:
        for line in process.stdout:
            printed.append(line)
            if line.startswith("# lab ready"):
                break
            match = re.match(r"export (\w+)='(.*)'$", line.strip())
            if match:
                env[match.group(1)] = match.group(2)
        assert any(line.startswith("# fault crowdstrike: next 1") for line in printed), printed
        cs, okta = env["STANCH_CROWDSTRIKE_BASE_URL"], env["STANCH_OKTA_BASE_URL"]
        with httpx.Client(timeout=10) as http:
            token = http.post(
                f"{cs}/oauth2/token",
                data={
                    "client_id": env["STANCH_CROWDSTRIKE_CLIENT_ID"],
                    "client_secret": env["STANCH_CROWDSTRIKE_CLIENT_SECRET"],
                },
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            ids = http.get(
                f"{cs}/devices/queries/devices/v1",
                params={"filter": "hostname:'WS-0042'"},
                headers=auth,
            ).json()["resources"]
            contain = http.post(
                f"{cs}/devices/entities/devices-actions/v2",
                params={"action_name": "contain"},
                json={"ids": ids},
                headers=auth,
            )
            again = http.post(
                f"{cs}/devices/entities/devices-actions/v2",
                params={"action_name": "contain"},
                json={"ids": ids},
                headers=auth,
            )
            throttled = http.get(
                f"{okta}/api/v1/users/jdoe@acme.example",
                headers={"Authorization": f"SSWS {env['STANCH_OKTA_API_TOKEN']}"},
            )
        assert contain.status_code == 503
        assert [e["code"] for e in again.json()["errors"]] == [409], "the lost one took effect"
        assert throttled.status_code == 429
        assert "Retry-After" not in throttled.headers
        assert int(throttled.headers["X-Rate-Limit-Reset"]) > 1_000_000_000
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
