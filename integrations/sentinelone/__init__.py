"""SentinelOne: EDR (network quarantine, blocklist, threat mitigation) and alert source."""

from __future__ import annotations

from integrations.capabilities import Capability
from integrations.plugin import VendorPlugin
from integrations.sentinelone.alerts import SentinelOneAlerts, normalize_threat
from integrations.sentinelone.client import SentinelOneSettings, connect
from integrations.sentinelone.edr import SentinelOneEDR, id_filter
from integrations.sentinelone.sim import SentinelOneSimulator


def lab_settings() -> SentinelOneSettings:
    """Settings matching :class:`SentinelOneSimulator`'s built-in console and token."""
    return SentinelOneSettings(
        base_url=SentinelOneSimulator.base_url,
        api_token=SentinelOneSimulator.api_token,
    )


PLUGIN = VendorPlugin(
    name="sentinelone",
    settings=SentinelOneSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.EDR: SentinelOneEDR, Capability.ALERTS: SentinelOneAlerts},
    simulator=SentinelOneSimulator,
)

__all__ = [
    "PLUGIN",
    "SentinelOneAlerts",
    "SentinelOneEDR",
    "SentinelOneSettings",
    "SentinelOneSimulator",
    "connect",
    "id_filter",
    "lab_settings",
    "normalize_threat",
]
