"""The fortigate package as the wiring sees it: PLUGIN, settings from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integrations.capabilities import Capability, Firewall
from integrations.fortigate import (
    PLUGIN,
    FortiGateFirewall,
    FortiGateSettings,
    FortiGateSimulator,
)
from integrations.plugin import load_plugin


def test_plugin_fields() -> None:
    """Given the package, When loaded by name, Then PLUGIN names its pieces."""
    plugin = load_plugin("fortigate")
    assert plugin is PLUGIN
    assert plugin.name == "fortigate"
    assert plugin.settings is FortiGateSettings
    assert plugin.simulator is FortiGateSimulator
    assert dict(plugin.adapters) == {Capability.FIREWALL: FortiGateFirewall}


async def test_lab_settings_reach_the_simulator() -> None:
    """Given lab settings and the simulator, When wired the plugin way (client only), Then
    the adapter authenticates and blocks."""
    sim = PLUGIN.simulator()
    async with PLUGIN.connect(PLUGIN.lab_settings(), sim.transport()) as http:
        adapter = PLUGIN.adapters[Capability.FIREWALL](http)
        assert isinstance(adapter, Firewall)
        receipt = await adapter.block_ip("203.0.113.9", ttl_seconds=30, reason="lab")
    assert receipt.changed is True


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_FORTIGATE_* variables, When settings load, Then they are used, the
    token is secret, and the defaults are vdom=root, 10 s, TLS verified."""
    monkeypatch.setenv("STANCH_FORTIGATE_BASE_URL", "https://fw1.example")
    monkeypatch.setenv("STANCH_FORTIGATE_API_TOKEN", "s3cret")

    loaded = FortiGateSettings()

    assert loaded.base_url == "https://fw1.example"
    assert loaded.api_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded)
    assert (loaded.vdom, loaded.timeout_seconds, loaded.verify_tls) == ("root", 10, True)


def test_settings_require_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given no environment, When settings load, Then base_url and api_token are required."""
    monkeypatch.delenv("STANCH_FORTIGATE_BASE_URL", raising=False)
    monkeypatch.delenv("STANCH_FORTIGATE_API_TOKEN", raising=False)
    with pytest.raises(ValidationError):
        FortiGateSettings()
