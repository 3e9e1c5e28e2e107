"""Palo Alto Networks PAN-OS (XML API): IP blocking by Dynamic Address Group tags."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.capabilities import Capability
from integrations.panos.client import PanosClient, PanosKeyAuth, PanosSettings, connect
from integrations.panos.firewall import PanosFirewall
from integrations.panos.sim import LAB_PASSWORD, LAB_USERNAME, PanosSimulator
from integrations.plugin import VendorPlugin

__all__ = [
    "PLUGIN",
    "PanosClient",
    "PanosFirewall",
    "PanosKeyAuth",
    "PanosSettings",
    "PanosSimulator",
    "connect",
]


def lab_settings() -> PanosSettings:
    """Settings matching :class:`PanosSimulator`'s lab admin (keygen on first use)."""
    return PanosSettings(
        base_url=PanosSimulator.base_url,
        username=LAB_USERNAME,
        password=SecretStr(LAB_PASSWORD),
    )


PLUGIN = VendorPlugin(
    name="panos",
    settings=PanosSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.FIREWALL: PanosFirewall},
    simulator=PanosSimulator,
)
