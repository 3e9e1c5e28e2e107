"""Microsoft Entra ID via Microsoft Graph: identity actions and Identity Protection alerts."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.capabilities import Capability
from integrations.entra.alerts import EntraRiskDetections, normalize_detection
from integrations.entra.client import EntraSettings, connect
from integrations.entra.identity import EntraIdentity
from integrations.entra.sim import EntraSimulator
from integrations.plugin import VendorPlugin

__all__ = [
    "PLUGIN",
    "EntraIdentity",
    "EntraRiskDetections",
    "EntraSettings",
    "EntraSimulator",
    "connect",
    "lab_settings",
    "normalize_detection",
]


def lab_settings() -> EntraSettings:
    """Settings carrying the simulator's built-in tenant and app credentials."""
    return EntraSettings(
        tenant_id=EntraSimulator.TENANT_ID,
        client_id=EntraSimulator.CLIENT_ID,
        client_secret=SecretStr(EntraSimulator.CLIENT_SECRET),
    )


PLUGIN = VendorPlugin(
    name="entra",
    settings=EntraSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={
        Capability.IDENTITY: EntraIdentity,
        Capability.ALERTS: EntraRiskDetections,
    },
    simulator=EntraSimulator,
)
