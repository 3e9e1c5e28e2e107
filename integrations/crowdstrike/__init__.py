"""CrowdStrike Falcon: EDR (hosts, containment, hash IOCs) and alert source (Alerts v2)."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.capabilities import Capability
from integrations.crowdstrike.alerts import CrowdStrikeAlerts, normalize_alert
from integrations.crowdstrike.client import CrowdStrikeSettings, connect
from integrations.crowdstrike.edr import CrowdStrikeEDR
from integrations.crowdstrike.sim import CrowdStrikeSimulator
from integrations.plugin import VendorPlugin


def lab_settings() -> CrowdStrikeSettings:
    """Settings that authenticate against :class:`CrowdStrikeSimulator`."""
    return CrowdStrikeSettings(
        base_url=CrowdStrikeSimulator.base_url,
        client_id=CrowdStrikeSimulator.LAB_CLIENT_ID,
        client_secret=SecretStr(CrowdStrikeSimulator.LAB_CLIENT_SECRET),
    )


PLUGIN = VendorPlugin(
    name="crowdstrike",
    settings=CrowdStrikeSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.EDR: CrowdStrikeEDR, Capability.ALERTS: CrowdStrikeAlerts},
    simulator=CrowdStrikeSimulator,
)

__all__ = [
    "PLUGIN",
    "CrowdStrikeAlerts",
    "CrowdStrikeEDR",
    "CrowdStrikeSettings",
    "CrowdStrikeSimulator",
    "connect",
    "lab_settings",
    "normalize_alert",
]
