"""Fortinet FortiGate (FortiOS REST API): IP quarantine through the banned-users table."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.capabilities import Capability
from integrations.fortigate.client import FortiGateSettings, connect
from integrations.fortigate.firewall import FortiGateFirewall
from integrations.fortigate.sim import LAB_API_TOKEN, FortiGateSimulator
from integrations.plugin import VendorPlugin

__all__ = ["PLUGIN", "FortiGateFirewall", "FortiGateSettings", "FortiGateSimulator", "connect"]


def lab_settings() -> FortiGateSettings:
    """Settings matching :class:`FortiGateSimulator`'s built-in token and host."""
    return FortiGateSettings(
        base_url=FortiGateSimulator.base_url, api_token=SecretStr(LAB_API_TOKEN)
    )


PLUGIN = VendorPlugin(
    name="fortigate",
    settings=FortiGateSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.FIREWALL: FortiGateFirewall},
    simulator=FortiGateSimulator,
)
