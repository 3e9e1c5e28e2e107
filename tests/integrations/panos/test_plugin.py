"""The panos package as the wiring sees it: PLUGIN, settings from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integrations.capabilities import Capability, Firewall
from integrations.panos import PLUGIN, PanosFirewall, PanosSettings, PanosSimulator
from integrations.plugin import load_plugin


def test_plugin_fields() -> None:
    """Given the package, When loaded by name, Then PLUGIN names its pieces."""
    plugin = load_plugin("panos")
    assert plugin is PLUGIN
    assert plugin.name == "panos"
    assert plugin.settings is PanosSettings
    assert plugin.simulator is PanosSimulator
    assert dict(plugin.adapters) == {Capability.FIREWALL: PanosFirewall}


async def test_lab_settings_reach_the_simulator() -> None:
    """Given lab settings and the simulator, When wired the plugin way (client only), Then
    the adapter gets a key and blocks with the configured tag."""
    sim = PLUGIN.simulator()
    assert isinstance(sim, PanosSimulator)
    async with PLUGIN.connect(PLUGIN.lab_settings(), sim.transport()) as http:
        adapter = PLUGIN.adapters[Capability.FIREWALL](http)
        assert isinstance(adapter, Firewall)
        receipt = await adapter.block_ip("203.0.113.9", ttl_seconds=30, reason="lab")
    assert receipt.changed is True
    assert sim.registered_with("stanch-block") == ["203.0.113.9"]


async def test_tag_from_settings_reaches_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_PANOS_TAG, When the adapter is built from the client alone, Then that
    tag is registered."""
    monkeypatch.setenv("STANCH_PANOS_BASE_URL", PanosSimulator.base_url)
    monkeypatch.setenv("STANCH_PANOS_API_KEY", "LUFRPT1zdGFuY2gtbGFiLWtleQ==")
    monkeypatch.setenv("STANCH_PANOS_TAG", "soar-block")
    sim = PanosSimulator()
    async with PLUGIN.connect(PanosSettings(), sim.transport()) as http:
        await PanosFirewall(http).block_ip("203.0.113.9", ttl_seconds=30, reason="r")
    assert sim.registered_with("soar-block") == ["203.0.113.9"]
    assert sim.registered_with("stanch-block") == []


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given STANCH_PANOS_* credentials, When settings load, Then the password is secret and
    the defaults are tag stanch-block and 10 s."""
    monkeypatch.setenv("STANCH_PANOS_BASE_URL", "https://fw1.example")
    monkeypatch.setenv("STANCH_PANOS_USERNAME", "soar-api")
    monkeypatch.setenv("STANCH_PANOS_PASSWORD", "s3cret")

    loaded = PanosSettings()

    assert (loaded.base_url, loaded.username, loaded.api_key) == (
        "https://fw1.example",
        "soar-api",
        None,
    )
    assert loaded.password is not None and loaded.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded)
    assert (loaded.tag, loaded.timeout_seconds) == ("stanch-block", 10)


@pytest.mark.parametrize("extra", [{}, {"STANCH_PANOS_USERNAME": "soar-api"}])
def test_settings_need_a_key_or_both_credentials(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]
) -> None:
    """Given neither a key nor username+password, When settings load, Then they fail."""
    for name in ("API_KEY", "USERNAME", "PASSWORD", "TAG"):
        monkeypatch.delenv(f"STANCH_PANOS_{name}", raising=False)
    monkeypatch.setenv("STANCH_PANOS_BASE_URL", "https://fw1.example")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        PanosSettings()
