"""Okta: an identity provider (Users lifecycle API) and an alert source (System Log)."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.capabilities import Capability
from integrations.okta.alerts import OktaSystemLog, is_security_relevant, normalize_event
from integrations.okta.client import OktaSettings, connect
from integrations.okta.identity import OktaIdentity
from integrations.okta.sim import OktaSimulator
from integrations.plugin import VendorPlugin


def lab_settings() -> OktaSettings:
    """Settings that reach :class:`OktaSimulator` with its built-in SSWS token."""
    return OktaSettings(
        base_url=OktaSimulator.base_url,
        auth_mode="ssws",
        api_token=SecretStr(OktaSimulator.LAB_API_TOKEN),
    )


PLUGIN = VendorPlugin(
    name="okta",
    settings=OktaSettings,
    lab_settings=lab_settings,
    connect=connect,
    adapters={Capability.IDENTITY: OktaIdentity, Capability.ALERTS: OktaSystemLog},
    simulator=OktaSimulator,
)

__all__ = [
    "PLUGIN",
    "OktaIdentity",
    "OktaSettings",
    "OktaSimulator",
    "OktaSystemLog",
    "connect",
    "is_security_relevant",
    "lab_settings",
    "normalize_event",
]
