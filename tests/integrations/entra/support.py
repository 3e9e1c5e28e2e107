"""Helpers shared by the Entra tests."""

from __future__ import annotations

from pydantic import SecretStr

from integrations.entra import EntraSettings
from integrations.entra.sim import EntraSimulator


def lab(**overrides: object) -> EntraSettings:
    """Settings matching the simulator's lab credentials, with overrides."""
    values: dict[str, object] = {
        "tenant_id": EntraSimulator.TENANT_ID,
        "client_id": EntraSimulator.CLIENT_ID,
        "client_secret": SecretStr(EntraSimulator.CLIENT_SECRET),
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return EntraSettings.model_validate(values)
