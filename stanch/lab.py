"""``stanch lab``: the vendor simulators served on loopback ports, for live-mode dry runs.

Each simulator gets its own port. The command prints, per vendor, the
``STANCH_<VENDOR>_<FIELD>`` settings that point live mode at it (the lab's credentials
are not secrets), so ``STANCH_MODE=live`` runs the same adapters over real sockets.
``--faults VENDOR:KIND:N[:PATH]`` makes a vendor misbehave, so a SOC lead can watch what a
playbook does then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import uvicorn
from pydantic import SecretStr

from integrations.plugin import load_plugin
from integrations.simkit import LAB_FLEET, Simulator
from stanch.prefect_server import _free_port

DEMO_HOSTS = ("WS-0042",)
DEMO_USERS = ("jdoe@acme.example",)

FaultKind = Literal["5xx", "429", "timeout", "lost"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
HANG_SECONDS = 120.0
"""How long a ``timeout`` fault keeps a request unanswered (past every adapter timeout)."""


class FaultSpecError(ValueError):
    """A ``--faults`` value that is not ``VENDOR:KIND:N[:PATH]``."""


@dataclass(frozen=True)
class FaultSpec:
    """One ``--faults`` value: the next ``count`` matching requests to ``vendor`` misbehave.

    Attributes:
        vendor: the simulator it applies to.
        kind: ``5xx`` (503), ``429`` (with the vendor's own retry header), ``timeout`` (no
            answer), ``lost`` (a state-changing request is carried out, then answered 503:
            a lost acknowledgement).
        count: how many requests.
        path_prefix: only requests whose path starts with it (all when empty).
    """

    vendor: str
    kind: FaultKind
    count: int
    path_prefix: str = ""

    @classmethod
    def parse(cls, text: str, vendors: Iterable[str]) -> FaultSpec:
        """Read ``VENDOR:KIND:N[:PATH]``.

        Raises:
            FaultSpecError: naming what is wrong with ``text``.
        """
        parts = text.split(":", 3)
        if len(parts) < 3:
            raise FaultSpecError(f"{text!r}: expected VENDOR:KIND:N[:PATH]")
        vendor, kind, count = parts[0], parts[1], parts[2]
        known = sorted(vendors)
        if vendor not in known:
            raise FaultSpecError(f"{text!r}: unknown vendor {vendor!r} (one of {', '.join(known)})")
        if kind not in FAULT_KINDS:
            kinds = ", ".join(FAULT_KINDS)
            raise FaultSpecError(f"{text!r}: unknown kind {kind!r} (one of {kinds})")
        if not count.isdigit() or int(count) < 1:
            raise FaultSpecError(f"{text!r}: N must be a whole number of requests, 1 or more")
        path = parts[3] if len(parts) == 4 else ""
        if path and not path.startswith("/"):
            raise FaultSpecError(f"{text!r}: PATH must start with /")
        return cls(vendor, kind, int(count), path)  # type: ignore[arg-type]

    def apply(self, simulator: Simulator) -> None:
        """Arm the fault on ``simulator``."""
        if self.kind == "5xx":
            simulator.fail_next(self.count, status=503, path_prefix=self.path_prefix)
        elif self.kind == "429":
            simulator.throttle_next(self.count, path_prefix=self.path_prefix)
        elif self.kind == "timeout":
            simulator.hang_next(self.count, seconds=HANG_SECONDS, path_prefix=self.path_prefix)
        else:
            simulator.lose_next(self.count, path_prefix=self.path_prefix)

    def describe(self) -> str:
        """One line for the lab's output."""
        what = {
            "5xx": "answered 503",
            "429": "answered 429 with the vendor's retry header",
            "timeout": "never answered",
            "lost": "state-changing requests carried out, then answered 503",
        }[self.kind]
        where = f" under {self.path_prefix}" if self.path_prefix else ""
        return f"# fault {self.vendor}: next {self.count} request(s){where} {what}"


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
        # The lab fleet, which every EDR simulator starts with, may hold them already.
        for hostname in (h for h in DEMO_HOSTS if h not in LAB_FLEET):
            simulator.add_host(hostname)
    if "identity" in capabilities:
        for login in DEMO_USERS:
            simulator.add_user(login)  # type: ignore[attr-defined]


async def serve_lab(
    vendors: Iterable[str],
    *,
    host: str = "127.0.0.1",
    first_port: int = 8801,
    seed: bool = False,
    faults: Sequence[FaultSpec] = (),
) -> None:
    """Serve each vendor's simulator on its own port until cancelled."""
    servers: list[uvicorn.Server] = []
    for offset, vendor in enumerate(vendors):
        simulator = load_plugin(vendor).simulator()
        simulator.seed_fleet()
        if seed:
            seed_demo(vendor, simulator)
        for fault in faults:
            if fault.vendor == vendor:
                fault.apply(simulator)
                print(fault.describe())
        port = _free_port(first_port + offset)
        config = uvicorn.Config(
            simulator.app, host=host, port=port, log_level="warning", lifespan="off"
        )
        servers.append(uvicorn.Server(config))
        print(f"# {vendor}: http://{host}:{port}")
        for name, value in lab_environment(vendor, f"http://{host}:{port}").items():
            print(f"export {name}='{value}'")
    serving = [asyncio.create_task(server.serve()) for server in servers]
    # "ready" only once every simulator listens: a caller that connects at once (a test,
    # a script reading this output) must not race the sockets being bound.
    while not all(server.started for server in servers):
        if any(task.done() for task in serving):
            break  # a server failed to start; gather below raises its error
        await asyncio.sleep(0.02)
    else:
        print("# lab ready", flush=True)
    await asyncio.gather(*serving)
