"""VirusTotal (API v3): what the engines and the community say of a hash, an address, a domain."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.capabilities import Capability
from integrations.plugin import VendorPlugin
from integrations.virustotal.client import QUOTA_EXCEEDED, VirusTotalSettings, connect
from integrations.virustotal.intel import VirusTotalIntel, verdict_of
from integrations.virustotal.sim import (
    DEMO_C2_IP,
    DEMO_RANSOMWARE_SHA256,
    LAB_API_KEY,
    VirusTotalSimulator,
)

__all__ = [
    "DEMO_C2_IP",
    "DEMO_RANSOMWARE_SHA256",
    "PLUGIN",
    "QUOTA_EXCEEDED",
    "VirusTotalIntel",
    "VirusTotalSettings",
    "VirusTotalSimulator",
    "connect",
    "lab_settings",
    "verdict_of",
]


def lab_settings() -> VirusTotalSettings:
    """Settings matching :class:`VirusTotalSimulator`'s built-in key and host."""
    return VirusTotalSettings(base_url=VirusTotalSimulator.base_url, api_key=SecretStr(LAB_API_KEY))


PLUGIN = VendorPlugin(
    name="virustotal",
    settings=VirusTotalSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.INTEL: VirusTotalIntel},
    simulator=VirusTotalSimulator,
)
