"""The Defender plugin's wiring: settings from the environment and the PLUGIN fields."""

from __future__ import annotations

import pytest

from integrations.capabilities import Capability
from integrations.defender import (
    PLUGIN,
    DefenderAlerts,
    DefenderEDR,
    DefenderSettings,
    DefenderSimulator,
)
from integrations.plugin import load_plugin


def test_settings_read_the_stanch_defender_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_DEFENDER_* variables, When settings load, Then they are used; the secret
    stays hidden and the documented defaults apply."""
    monkeypatch.setenv("STANCH_DEFENDER_TENANT_ID", "t-1")
    monkeypatch.setenv("STANCH_DEFENDER_CLIENT_ID", "c-1")
    monkeypatch.setenv("STANCH_DEFENDER_CLIENT_SECRET", "s3cret")
    settings = DefenderSettings()
    assert (settings.tenant_id, settings.client_id) == ("t-1", "c-1")
    assert settings.client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.base_url == "https://api.security.microsoft.com"
    assert settings.login_url == "https://login.microsoftonline.com"
    assert (settings.action_poll_seconds, settings.action_timeout_seconds) == (2, 120)


def test_plugin_fields() -> None:
    """Given the package, When its plugin is loaded by name, Then it names its pieces."""
    assert load_plugin("defender") is PLUGIN
    assert PLUGIN.settings is DefenderSettings
    assert PLUGIN.simulator is DefenderSimulator
    assert dict(PLUGIN.adapters) == {Capability.EDR: DefenderEDR, Capability.ALERTS: DefenderAlerts}
    lab = PLUGIN.lab_settings()
    assert isinstance(lab, DefenderSettings)
    assert lab.client_secret.get_secret_value() == DefenderSimulator.client_secret
