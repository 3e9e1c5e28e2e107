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


def _live_env(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv(f"{prefix}CROWDSTRIKE_CLIENT_ID", "id")
    monkeypatch.setenv(f"{prefix}CROWDSTRIKE_CLIENT_SECRET", "secret")
    monkeypatch.setenv(f"{prefix}CROWDSTRIKE_BASE_URL", "https://api.eu-1.crowdstrike.com")
    for name in ("OKTA", "FORTIGATE"):
        monkeypatch.setenv(f"{prefix}{name}_BASE_URL", "https://example.invalid")
        monkeypatch.setenv(f"{prefix}{name}_API_TOKEN", "t")


async def test_live_mode_uses_a_tenants_own_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given the provider's CrowdStrike credentials and globex's own,
    When connected live for globex,
    Then globex's base URL is used (no request is sent to build the client)."""
    _live_env(monkeypatch, "STANCH_")
    _live_env(monkeypatch, "STANCH_GLOBEX_")
    monkeypatch.setenv("STANCH_CROWDSTRIKE_BASE_URL", "https://api.crowdstrike.com")
    async with connect(StanchSettings(mode="live"), Lab(), tenant="globex") as wired:
        assert str(wired.clients[0].base_url).startswith("https://api.eu-1.crowdstrike.com")


async def test_a_tenant_without_its_own_credentials_never_gets_the_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the provider's credentials for every vendor and none of acme's own,
    When connected live for acme,
    Then the connection is refused naming the tenant and the setting it lacks."""
    _live_env(monkeypatch, "STANCH_")
    with pytest.raises(ConfigurationError) as refused:
        async with connect(StanchSettings(mode="live"), Lab(), tenant="acme"):
            pass
    message = str(refused.value)
    assert "tenant acme has no crowdstrike credentials" in message
    assert "STANCH_ACME_CROWDSTRIKE_CLIENT_ID" in message
    assert '"credentials": "provider"' in message


async def test_a_tenant_that_opts_in_uses_the_providers_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given an in-house tenant configured with "credentials": "provider",
    When connected live for it, Then the provider's settings are used."""
    _live_env(monkeypatch, "STANCH_")
    settings = StanchSettings(mode="live", tenants={"inhouse": {"credentials": "provider"}})
    async with connect(settings, Lab(), tenant="inhouse") as wired:
        assert str(wired.clients[0].base_url).startswith("https://api.eu-1.crowdstrike.com")


async def test_live_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given live mode for CrowdStrike, Okta and FortiGate (certificate checks on),
    When the vendors are connected for two incidents in a row,
    Then the CA bundle is loaded once for the process, not once per client (each load
    costs about 35 ms), and each client still checks certificates."""
    import ssl

    from integrations.http import _verifying_context

    loads: list[object] = []
    load = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        load(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    _verifying_context.cache_clear()
    for name in ("CROWDSTRIKE", "OKTA", "FORTIGATE"):
        monkeypatch.setenv(f"STANCH_{name}_BASE_URL", "https://example.invalid")
    monkeypatch.setenv("STANCH_CROWDSTRIKE_CLIENT_ID", "id")
    monkeypatch.setenv("STANCH_CROWDSTRIKE_CLIENT_SECRET", "secret")
    monkeypatch.setenv("STANCH_OKTA_API_TOKEN", "t")
    monkeypatch.setenv("STANCH_FORTIGATE_API_TOKEN", "t")
    for _ in range(2):
        async with connect(StanchSettings(mode="live"), Lab()) as wired:
            assert len(wired.clients) == 3
    assert len(loads) == 1
    context = _verifying_context(None, None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
