"""AbuseIPDB (API v2): how confident its reporters are that an address is abusive."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.abuseipdb.client import AbuseIPDBSettings, connect
from integrations.abuseipdb.intel import AbuseIPDBIntel, verdict_of
from integrations.abuseipdb.sim import DEMO_C2_IP, LAB_API_KEY, AbuseIPDBSimulator
from integrations.capabilities import Capability
from integrations.plugin import VendorPlugin

__all__ = [
    "DEMO_C2_IP",
    "PLUGIN",
    "AbuseIPDBIntel",
    "AbuseIPDBSettings",
    "AbuseIPDBSimulator",
    "connect",
    "lab_settings",
    "verdict_of",
]


def lab_settings() -> AbuseIPDBSettings:
    """Settings matching :class:`AbuseIPDBSimulator`'s built-in key and host."""
    return AbuseIPDBSettings(base_url=AbuseIPDBSimulator.base_url, api_key=SecretStr(LAB_API_KEY))


PLUGIN = VendorPlugin(
    name="abuseipdb",
    settings=AbuseIPDBSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.INTEL: AbuseIPDBIntel},
    simulator=AbuseIPDBSimulator,
)
