"""Microsoft Defender for Endpoint: EDR (isolation, indicators) and alert source."""

from __future__ import annotations

from integrations.capabilities import Capability
from integrations.defender.alerts import DefenderAlerts, normalize_alert
from integrations.defender.client import DefenderClient, DefenderSettings, connect
from integrations.defender.edr import DefenderEDR
from integrations.defender.sim import DefenderSimulator
from integrations.plugin import VendorPlugin


def lab_settings() -> DefenderSettings:
    """Settings matching :class:`DefenderSimulator`'s built-in tenant and app."""
    return DefenderSettings(
        base_url=DefenderSimulator.base_url,
        login_url=DefenderSimulator.login_url,
        tenant_id=DefenderSimulator.tenant_id,
        client_id=DefenderSimulator.client_id,
        client_secret=DefenderSimulator.client_secret,
    )


PLUGIN = VendorPlugin(
    name="defender",
    settings=DefenderSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.EDR: DefenderEDR, Capability.ALERTS: DefenderAlerts},
    simulator=DefenderSimulator,
)

__all__ = [
    "PLUGIN",
    "DefenderAlerts",
    "DefenderClient",
    "DefenderEDR",
    "DefenderSettings",
    "DefenderSimulator",
    "connect",
    "lab_settings",
    "normalize_alert",
]
