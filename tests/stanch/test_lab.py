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
