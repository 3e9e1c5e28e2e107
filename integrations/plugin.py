"""How a vendor package presents itself to the wiring: settings, client, adapters, simulator.

Each ``integrations/<vendor>/__init__.py`` exports ``PLUGIN``, a :class:`VendorPlugin`.
``flows/wiring.py`` looks plugins up by name and never imports a vendor module directly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic_settings import BaseSettings

from integrations.capabilities import Capability
from integrations.simkit import Simulator

VENDORS: tuple[str, ...] = (
    "crowdstrike",
    "defender",
    "sentinelone",
    "okta",
    "entra",
    "panos",
    "fortigate",
    "virustotal",
    "abuseipdb",
)
"""Every vendor stanch integrates with, by package name."""


@dataclass(frozen=True)
class VendorPlugin:
    """One vendor's pieces.

    Attributes:
        name: the package name (``"crowdstrike"``), also the ``vendor:`` tag on tasks.
        settings: the ``BaseSettings`` class read from ``STANCH_<VENDOR>_<FIELD>``.
        lab_settings: settings that match the simulator's built-in credentials.
        connect: builds the ``httpx.AsyncClient`` (base URL, auth, timeouts) from
            settings; ``transport`` replaces the network, e.g. with a simulator.
        adapters: the adapter class for each capability this vendor serves; each takes
            the client as its only positional argument.
        simulator: the vendor's simulator class (no-argument constructor).
    """

    name: str
    settings: type[BaseSettings]
    lab_settings: Callable[[], BaseSettings]
    connect: Callable[[Any, httpx.AsyncBaseTransport | None], httpx.AsyncClient]
    adapters: Mapping[Capability, type[Any]]
    simulator: type[Simulator]


def load_plugin(name: str) -> VendorPlugin:
    """The plugin of vendor ``name``.

    Raises:
        KeyError: no vendor of that name is integrated.
    """
    if name not in VENDORS:
        raise KeyError(f"unknown vendor {name!r}; known: {', '.join(VENDORS)}")
    module = importlib.import_module(f"integrations.{name}")
    plugin: VendorPlugin = module.PLUGIN
    return plugin


def available_plugins() -> list[VendorPlugin]:
    """Every vendor package present in this installation."""
    found = []
    for name in VENDORS:
        try:
            found.append(load_plugin(name))
        except ModuleNotFoundError:
            continue
    return found
