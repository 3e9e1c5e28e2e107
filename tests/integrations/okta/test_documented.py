"""Every route the Okta simulator serves and every request the adapter sends is documented."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from integrations.capabilities import Capability
from integrations.errors import RejectedError
from integrations.okta import (
    PLUGIN,
    OktaIdentity,
    OktaSettings,
    OktaSimulator,
    OktaSystemLog,
    connect,
    lab_settings,
)
from integrations.plugin import load_plugin
from tests.integrations.documented import SPECS, _compile, operations, undocumented
from tests.integrations.okta.conftest import RecordingTransport, jwt_settings

SPEC_FILES = ("okta.all-operations.json", "okta.operations.json")


def _entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for name in SPEC_FILES:
        entries.extend(json.loads((SPECS / name).read_text()))
    return entries


def _entry_for(method: str, path: str) -> dict[str, Any]:
    found = [
        e
        for e in _entries()
        if e["method"].upper() == method and _compile(e["path"].split("?")[0]).match(path)
    ]
    assert found, (method, path)
    return found[0]


async def _full_scenario(sim: OktaSimulator, transport: httpx.AsyncBaseTransport) -> None:
    victim = sim.add_user("victim+1@example.com")
    gone = sim.add_user("gone@example.com", status="DEPROVISIONED")
    sim.add_user("ops/oncall@example.com")
    sim.add_log_event(
        json.loads(
            (
                SPECS / "samples" / "okta" / "system_log_spec_example_security_context_risk.json"
            ).read_text()
        )
    )
    for settings in (lab_settings(), jwt_settings()):
        async with connect(settings, transport) as client:
            idp = OktaIdentity(client)
            await idp.find_user("victim+1@example.com")
            await idp.find_user("ops/oncall@example.com")
            await idp.find_user("nobody@example.com")
            await idp.suspend_user(victim, reason="scenario")
            await idp.suspend_user(victim, reason="scenario")
            await idp.unsuspend_user(victim, reason="scenario")
            with pytest.raises(RejectedError, match="Cannot suspend"):
                await idp.suspend_user(gone, reason="scenario")
            await idp.revoke_sessions(victim)
            await idp.expire_password(victim)
            await idp.reset_factors(victim)
            sim.set_user_status(victim, "ACTIVE")
            await OktaSystemLog(client, page_size=1).fetch_alerts(datetime(2024, 1, 1, tzinfo=UTC))


def test_every_simulator_route_is_documented() -> None:
    """Given the simulator's route table,
    When each (method, path template) is checked against Okta's spec files,
    Then none is undocumented (HEAD is Starlette's automatic twin of GET, not a route)."""
    served = [
        (method, route.path)  # type: ignore[attr-defined]
        for route in OktaSimulator().routes()
        for method in route.methods or ()  # type: ignore[attr-defined]
        if method != "HEAD"
    ]
    assert len(served) == 10
    assert undocumented(served, operations(*SPEC_FILES)) == []


def test_simulator_covers_every_soar_role_the_adapters_use() -> None:
    """Given the curated Okta operations and their SOAR categories,
    When the simulator's routes are matched against them,
    Then auth, lookup, suspend, unsuspend, session revoke, password expire, factor reset
    and the System Log each have a route."""
    served = {
        (method, route.path)  # type: ignore[attr-defined]
        for route in OktaSimulator().routes()
        for method in route.methods or ()  # type: ignore[attr-defined]
    }
    curated = json.loads((SPECS / "okta.operations.json").read_text())
    covered = {e["category"] for e in curated if (e["method"], e["path"]) in served}
    assert covered >= {
        "auth",
        "user_lookup",
        "suspend",
        "unsuspend",
        "session_revoke",
        "password_expire",
        "factor_reset",
        "alerts_list",
    }


async def test_every_adapter_request_in_a_full_scenario_is_documented() -> None:
    """Given a full scenario in both auth modes (lookups, suspend twice, unsuspend, a
    rejected suspend, sessions, password, factors, System Log with pagination),
    When every request the adapter put on the wire is checked,
    Then each is a documented (method, path), its query keys are documented for that
    operation, and every success status the simulator gave is a documented one."""
    sim = OktaSimulator()
    wire = RecordingTransport(sim.transport())
    await _full_scenario(sim, wire)

    sent = [(r.method, r.url.raw_path.decode().split("?")[0]) for r in wire.sent]
    assert len(sent) > 20
    assert undocumented(sent, operations(*SPEC_FILES)) == []
    for request in wire.sent:
        entry = _entry_for(request.method, request.url.path)
        assert set(request.url.params) <= set(entry["query"]), (request.url, entry["query"])
    for logged in sim.requests:
        if 200 <= logged.status < 300:
            entry = _entry_for(logged.method, logged.path)
            assert logged.status in entry["success"], (logged, entry["success"])


def test_plugin_wires_the_okta_pieces() -> None:
    """Given the okta package,
    When the plugin is loaded by name,
    Then it names Okta's settings, connect, both adapters, the simulator, and lab
    settings that match the simulator's token."""
    assert load_plugin("okta") is PLUGIN
    assert PLUGIN.name == "okta"
    assert PLUGIN.settings is OktaSettings
    assert PLUGIN.connect is connect
    assert dict(PLUGIN.adapters) == {
        Capability.IDENTITY: OktaIdentity,
        Capability.ALERTS: OktaSystemLog,
    }
    assert PLUGIN.simulator is OktaSimulator
    lab = PLUGIN.lab_settings()
    assert isinstance(lab, OktaSettings)
    assert lab.base_url == OktaSimulator.base_url
    assert lab.api_token is not None
    assert lab.api_token.get_secret_value() == OktaSimulator.LAB_API_TOKEN


async def test_lab_settings_reach_the_simulator() -> None:
    """Given the plugin's lab settings and a simulator built with no arguments,
    When the identity adapter reads a seeded user through them,
    Then the call succeeds (the lab credentials are the simulator's)."""
    sim = PLUGIN.simulator()
    assert isinstance(sim, OktaSimulator)
    user_id = sim.add_user("lab@example.com")
    async with PLUGIN.connect(PLUGIN.lab_settings(), sim.transport()) as client:
        account = await PLUGIN.adapters[Capability.IDENTITY](client).get_user(user_id)
    assert account.login == "lab@example.com"


def test_adapters_import_no_prefect() -> None:
    """Given the Okta package's modules,
    When their imports are read,
    Then none imports Prefect (adapters must run without the orchestrator)."""
    package = Path(__file__).resolve().parents[3] / "integrations" / "okta"
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        names = [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] == "prefect"], module.name
