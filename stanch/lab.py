"""``stanch lab``: the vendor simulators served on loopback ports, for live-mode dry runs.

Each simulator gets its own port. The command prints, per vendor, the
``STANCH_<VENDOR>_<FIELD>`` settings that point live mode at it (the lab's credentials
are not secrets), so ``STANCH_MODE=live`` runs the same adapters over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import uvicorn
from pydantic import SecretStr

from integrations.plugin import load_plugin
from integrations.simkit import Simulator
from stanch.prefect_server import _free_port

DEMO_HOSTS = ("WS-0042",)
DEMO_USERS = ("jdoe@acme.example",)


def _on_loopback(value: str, origin: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return value
    local = urlsplit(origin)
    return urlunsplit((local.scheme, local.netloc, parts.path, parts.query, parts.fragment))


def lab_environment(vendor: str, origin: str) -> dict[str, str]:
    """The settings that make live mode talk to ``vendor``'s simulator at ``origin``."""
    plugin = load_plugin(vendor)
    settings = plugin.lab_settings()
    env: dict[str, str] = {}
    for field, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        text = value if isinstance(value, str) else str(value)
        if isinstance(value, list):
            text = " ".join(str(v) for v in value)
        env[f"STANCH_{vendor.upper()}_{field.upper()}"] = _on_loopback(text, origin)
    return env


def seed_demo(vendor: str, simulator: Simulator) -> None:
    """Give a simulator the demo's host or user, so a live-mode run finds them."""
    capabilities = {c.value for c in load_plugin(vendor).adapters}
    if "edr" in capabilities:
        for hostname in DEMO_HOSTS:
            simulator.add_host(hostname)  # type: ignore[attr-defined]
    if "identity" in capabilities:
        for login in DEMO_USERS:
            simulator.add_user(login)  # type: ignore[attr-defined]


async def serve_lab(
    vendors: Iterable[str], *, host: str = "127.0.0.1", first_port: int = 8801, seed: bool = False
) -> None:
    """Serve each vendor's simulator on its own port until cancelled."""
    servers: list[uvicorn.Server] = []
    for offset, vendor in enumerate(vendors):
        simulator = load_plugin(vendor).simulator()
        if seed:
            seed_demo(vendor, simulator)
        port = _free_port(first_port + offset)
        config = uvicorn.Config(
            simulator.app, host=host, port=port, log_level="warning", lifespan="off"
        )
        servers.append(uvicorn.Server(config))
        print(f"# {vendor}: http://{host}:{port}")
        for name, value in lab_environment(vendor, f"http://{host}:{port}").items():
            print(f"export {name}='{value}'")
    print("# lab ready", flush=True)
    await asyncio.gather(*(server.serve() for server in servers))
