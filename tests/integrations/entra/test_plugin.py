"""The Entra plugin as the wiring sees it, and the lab settings against the simulator."""

from __future__ import annotations

from integrations.capabilities import AlertSource, Capability, IdentityProvider
from integrations.entra import (
    PLUGIN,
    EntraIdentity,
    EntraRiskDetections,
    EntraSettings,
    EntraSimulator,
)
from integrations.plugin import load_plugin


def test_plugin_fields() -> None:
    """Given the entra package, When loaded by name, Then its plugin names its pieces."""
    plugin = load_plugin("entra")

    assert plugin is PLUGIN
    assert plugin.name == "entra"
    assert plugin.settings is EntraSettings
    assert plugin.simulator is EntraSimulator
    assert dict(plugin.adapters) == {
        Capability.IDENTITY: EntraIdentity,
        Capability.ALERTS: EntraRiskDetections,
    }


async def test_lab_settings_work_against_the_simulator() -> None:
    """Given the plugin's lab settings and simulator, When wired together, Then both adapters
    answer and satisfy their capability protocols."""
    sim = PLUGIN.simulator()
    assert isinstance(sim, EntraSimulator)
    user_id = sim.add_user("lab@contoso.com")
    async with PLUGIN.connect(PLUGIN.lab_settings(), sim.transport()) as client:
        identity = PLUGIN.adapters[Capability.IDENTITY](client)
        alerts = PLUGIN.adapters[Capability.ALERTS](client)
        assert isinstance(identity, IdentityProvider)
        assert isinstance(alerts, AlertSource)
        assert (await identity.get_user(user_id)).login == "lab@contoso.com"
