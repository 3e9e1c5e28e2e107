"""Choose the vendor for each capability and build its adapter, live or simulated.

In ``lab`` mode every adapter talks to an in-process simulator (one per vendor, shared
by the whole process through :func:`default_lab`) over real HTTP semantics; in ``live``
mode a tenant's own ``STANCH_<TENANT>_<VENDOR>_*`` settings say where and how to connect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import httpx
from pydantic import ValidationError

from flows.errors import ConfigurationError
from flows.settings import StanchSettings
from integrations.capabilities import EDR, Capability, Firewall, IdentityProvider, ThreatIntel
from integrations.plugin import VendorPlugin, load_plugin
from integrations.simkit import Simulator

if TYPE_CHECKING:
    from integrations.slack import SlackChat

SLACK_TIMEOUT_SECONDS = 10


class Lab:
    """The in-process simulators of one process, created on first use.

    Args:
        fleet: whether an EDR simulator starts with the lab fleet
            (:data:`integrations.simkit.LAB_FLEET`); ``stanch playbook test`` starts
            empty so each case names exactly the hosts it knows.
    """

    def __init__(self, *, fleet: bool = True) -> None:
        self.fleet = fleet
        self.simulators: dict[str, Simulator] = {}
        # (kind, vendor, name) of every entity seeded into a simulator, so seeding twice
        # (a re-run of the same incident) does not create duplicates.
        self.provisioned: set[tuple[str, str, str]] = set()

    def simulator(self, vendor: str) -> Simulator:
        """The simulator of ``vendor``, created on first use.

        An EDR simulator starts with the lab fleet and what its sensors have seen, so a
        hunt in lab mode finds the demo's ransomware beyond the host that alerted.
        """
        if vendor not in self.simulators:
            simulator = load_plugin(vendor).simulator()
            for hostname in simulator.seed_fleet() if self.fleet else ():
                self.provisioned.add(("host", vendor, hostname))
            self.simulators[vendor] = simulator
        return self.simulators[vendor]

    def reset(self) -> None:
        """Forget every simulator (and its state)."""
        self.simulators.clear()
        self.provisioned.clear()


_LAB = Lab()


def default_lab() -> Lab:
    """The process-wide lab that ``lab`` mode wires adapters to."""
    return _LAB


@dataclass
class Integrations:
    """The adapters of one flow run, one per capability, and the clients they own."""

    edr: EDR
    identity: IdentityProvider
    firewall: Firewall
    vendors: dict[Capability, str]
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    intel: list[ThreatIntel] = field(default_factory=list)
    """The threat-intelligence services indicators are looked up in (``STANCH_INTEL``)."""

    def adapter(self, capability: Capability) -> Any:
        """The adapter answering ``capability``."""
        return {
            Capability.EDR: self.edr,
            Capability.IDENTITY: self.identity,
            Capability.FIREWALL: self.firewall,
        }[capability]


def _env_prefix(plugin: VendorPlugin, settings: StanchSettings, tenant: str | None) -> str:
    # An MDR provider holds one set of vendor credentials per customer: a tenant acts only
    # with its own STANCH_<TENANT>_<VENDOR>_* settings, never silently with the provider's
    # (that would contain a host in another customer's console). The provider's own are
    # used without a tenant (``stanch lab`` checks) or where the tenant's entry opts in.
    provider = f"STANCH_{plugin.name.upper()}_"
    if tenant is None or settings.tenant_config(tenant).credentials == "provider":
        return provider
    return f"STANCH_{tenant.upper().replace('-', '_')}_{plugin.name.upper()}_"


def _vendor_settings(plugin: VendorPlugin, settings: StanchSettings, tenant: str | None) -> Any:
    if settings.mode == "lab":
        return plugin.lab_settings()
    prefix = _env_prefix(plugin, settings, tenant)
    try:
        return plugin.settings(_env_prefix=prefix)
    except ValidationError as exc:
        missing = ", ".join(
            f"{prefix}{str(err['loc'][0]).upper()} ({err['msg']})" for err in exc.errors()
        )
        if prefix.startswith(f"STANCH_{plugin.name.upper()}_"):
            raise ConfigurationError(f"{plugin.name} is not configured: {missing}") from exc
        raise ConfigurationError(
            f"tenant {tenant} has no {plugin.name} credentials of its own: {missing}; "
            f"set them, or let it use the provider's with "
            f'STANCH_TENANTS=\'{{"{tenant}": {{"credentials": "provider"}}}}\''
        ) from exc


def vendor_client(
    plugin: VendorPlugin, settings: StanchSettings, lab: Lab, *, tenant: str | None = None
) -> httpx.AsyncClient:
    """The vendor's HTTP client: to its lab simulator, or to the tenant's real API.

    Raises:
        ConfigurationError: live mode and the vendor's settings are incomplete.
    """
    transport = lab.simulator(plugin.name).transport() if settings.mode == "lab" else None
    return plugin.connect(_vendor_settings(plugin, settings, tenant), transport)


@asynccontextmanager
async def connect(
    settings: StanchSettings, lab: Lab | None = None, *, tenant: str | None = None
) -> AsyncIterator[Integrations]:
    """Build the adapters the settings choose for ``tenant``; close their clients on exit.

    Raises:
        ConfigurationError: an unknown vendor, a vendor without that capability, or
            missing vendor settings in live mode.
    """
    lab = lab or default_lab()
    choice = {
        capability: settings.vendor_for(capability.value, tenant)
        for capability in (Capability.EDR, Capability.IDENTITY, Capability.FIREWALL)
    }
    clients: dict[str, httpx.AsyncClient] = {}
    adapters: dict[Capability, Any] = {}
    try:
        for capability, vendor in choice.items():
            try:
                plugin = load_plugin(vendor)
            except (KeyError, ModuleNotFoundError) as exc:
                raise ConfigurationError(
                    f"STANCH_{capability.value.upper()}={vendor!r}: {exc}"
                ) from exc
            if capability not in plugin.adapters:
                raise ConfigurationError(
                    f"STANCH_{capability.value.upper()}={vendor!r}: {vendor} has no "
                    f"{capability.value} adapter"
                )
            if vendor not in clients:
                clients[vendor] = vendor_client(plugin, settings, lab, tenant=tenant)
            adapters[capability] = plugin.adapters[capability](clients[vendor])
        intel = [
            _intel_adapter(vendor, settings, lab, tenant, clients)
            for vendor in settings.intel_vendors(tenant)
        ]
        yield Integrations(
            edr=cast(EDR, adapters[Capability.EDR]),
            identity=cast(IdentityProvider, adapters[Capability.IDENTITY]),
            firewall=cast(Firewall, adapters[Capability.FIREWALL]),
            vendors=choice,
            clients=list(clients.values()),
            intel=intel,
        )
    finally:
        for client in clients.values():
            await client.aclose()


def _intel_adapter(
    vendor: str,
    settings: StanchSettings,
    lab: Lab,
    tenant: str | None,
    clients: dict[str, httpx.AsyncClient],
) -> ThreatIntel:
    """The threat-intelligence adapter of ``vendor``, on the tenant's own credentials."""
    try:
        plugin = load_plugin(vendor)
    except (KeyError, ModuleNotFoundError) as exc:
        raise ConfigurationError(f"STANCH_INTEL={vendor!r}: {exc}") from exc
    if Capability.INTEL not in plugin.adapters:
        raise ConfigurationError(f"STANCH_INTEL={vendor!r}: {vendor} has no intel adapter")
    if vendor not in clients:
        clients[vendor] = vendor_client(plugin, settings, lab, tenant=tenant)
    return cast(ThreatIntel, plugin.adapters[Capability.INTEL](clients[vendor]))


def slack_chat(settings: StanchSettings, tenant: str | None = None) -> SlackChat | None:
    """The bot-token Slack calls for ``tenant``'s channel, or ``None`` without Slack.

    Slack is configured when ``approval_channel`` is ``slack`` and both the bot token and
    a channel (the tenant's own ``slack_channel``, else ``STANCH_SLACK_CHANNEL``) are set:
    the client the Slack approval gate and the incident summary use.
    """
    channel = settings.slack_channel_for(tenant)
    if settings.approval_channel != "slack" or settings.slack_bot_token is None or channel is None:
        return None
    from slack_sdk import WebClient

    from integrations.slack import SlackChat

    client = WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_base_url,
        timeout=SLACK_TIMEOUT_SECONDS,
    )
    return SlackChat(client, channel=channel)
