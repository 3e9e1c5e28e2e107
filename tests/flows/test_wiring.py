"""Wiring: which vendor answers each capability, per tenant, live or simulated."""

from __future__ import annotations

import pytest

from flows.errors import ConfigurationError
from flows.settings import StanchSettings
from flows.wiring import Lab, connect


async def test_lab_mode_wires_the_default_vendors() -> None:
    """Given lab mode and no vendor choice, When connected, Then the defaults answer."""
    async with connect(StanchSettings(mode="lab"), Lab()) as wired:
        assert (wired.edr.vendor, wired.identity.vendor, wired.firewall.vendor) == (
            "crowdstrike",
            "okta",
            "fortigate",
        )


async def test_a_tenant_can_use_other_vendors() -> None:
    """Given a tenant mapped to Defender and Entra,
    When connected for that tenant and for another,
    Then each gets its own vendors."""
    settings = StanchSettings(
        mode="lab", tenants={"globex": {"edr": "defender", "identity": "entra"}}
    )
    async with connect(settings, Lab(), tenant="globex") as wired:
        assert (wired.edr.vendor, wired.identity.vendor) == ("defender", "entra")
    async with connect(settings, Lab(), tenant="acme") as wired:
        assert (wired.edr.vendor, wired.identity.vendor) == ("crowdstrike", "okta")


async def test_unknown_vendor_and_wrong_capability_are_named() -> None:
    """Given STANCH_EDR naming an unknown vendor, or an identity provider as the EDR,
    When connected, Then the error names the setting and the problem."""
    with pytest.raises(ConfigurationError, match="STANCH_EDR='nope'"):
        async with connect(StanchSettings(edr="nope"), Lab()):
            pass
    with pytest.raises(ConfigurationError, match="okta has no edr adapter"):
        async with connect(StanchSettings(edr="okta"), Lab()):
            pass


async def test_live_mode_names_the_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given live mode with no CrowdStrike credentials,
    When connected, Then the error names the environment variables to set."""
    for name in ("STANCH_CROWDSTRIKE_CLIENT_ID", "STANCH_CROWDSTRIKE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="STANCH_CROWDSTRIKE_CLIENT_SECRET"):
        async with connect(StanchSettings(mode="live"), Lab()):
            pass


async def test_live_mode_prefers_a_tenants_own_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given global CrowdStrike credentials and globex's own,
    When connected live for globex,
    Then globex's base URL is used (no request is sent to build the client)."""
    monkeypatch.setenv("STANCH_CROWDSTRIKE_CLIENT_ID", "global")
    monkeypatch.setenv("STANCH_CROWDSTRIKE_CLIENT_SECRET", "global-secret")
    monkeypatch.setenv("STANCH_GLOBEX_CROWDSTRIKE_CLIENT_ID", "globex")
    monkeypatch.setenv("STANCH_GLOBEX_CROWDSTRIKE_CLIENT_SECRET", "globex-secret")
    monkeypatch.setenv("STANCH_GLOBEX_CROWDSTRIKE_BASE_URL", "https://api.eu-1.crowdstrike.com")
    for name in ("OKTA", "FORTIGATE"):
        monkeypatch.setenv(f"STANCH_{name}_BASE_URL", "https://example.invalid")
    monkeypatch.setenv("STANCH_OKTA_API_TOKEN", "t")
    monkeypatch.setenv("STANCH_FORTIGATE_API_TOKEN", "t")
    async with connect(StanchSettings(mode="live"), Lab(), tenant="globex") as wired:
        assert str(wired.clients[0].base_url).startswith("https://api.eu-1.crowdstrike.com")
    async with connect(StanchSettings(mode="live"), Lab(), tenant="acme") as wired:
        assert str(wired.clients[0].base_url).startswith("https://api.crowdstrike.com")
