"""The SentinelOne plugin's wiring: settings from the environment and the PLUGIN fields."""

from __future__ import annotations

import pytest

from integrations.capabilities import Capability
from integrations.plugin import load_plugin
from integrations.sentinelone import (
    PLUGIN,
    SentinelOneAlerts,
    SentinelOneEDR,
    SentinelOneSettings,
    SentinelOneSimulator,
)


def test_settings_read_the_stanch_sentinelone_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_SENTINELONE_* variables, When settings load, Then they are used and the
    token stays hidden."""
    monkeypatch.setenv("STANCH_SENTINELONE_BASE_URL", "https://acme.sentinelone.net")
    monkeypatch.setenv("STANCH_SENTINELONE_API_TOKEN", "xyzzy-7")
    settings = SentinelOneSettings()
    assert settings.base_url == "https://acme.sentinelone.net"
    assert settings.api_token.get_secret_value() == "xyzzy-7"
    assert "xyzzy-7" not in repr(settings)
    assert settings.timeout_seconds == 10


def test_plugin_fields() -> None:
    """Given the package, When its plugin is loaded by name, Then it names its pieces."""
    assert load_plugin("sentinelone") is PLUGIN
    assert PLUGIN.settings is SentinelOneSettings
    assert PLUGIN.simulator is SentinelOneSimulator
    assert dict(PLUGIN.adapters) == {
        Capability.EDR: SentinelOneEDR,
        Capability.ALERTS: SentinelOneAlerts,
    }
    lab = PLUGIN.lab_settings()
    assert isinstance(lab, SentinelOneSettings)
    assert lab.api_token.get_secret_value() == SentinelOneSimulator.api_token
