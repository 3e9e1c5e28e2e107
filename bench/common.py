"""Shared harness of the playbook benchmarks (``bench.overhead``, ``bench.concurrency``).

Everything runs on loopback in one process, as ``stanch serve`` with flow runs would on a
one-host install: the crowdstrike, okta and fortigate simulators under uvicorn, live mode
pointed at them with :func:`stanch.lab.lab_environment`, the intake service
(:func:`stanch.serve_cli.run_service`) with a :class:`~stanch.runners.FlowStarter` and
a bearer-token source, and a Prefect server under a temporary ``STANCH_HOME`` (or the one
``PREFECT_API_URL`` names). Policy is ``bench/policies/default.yaml``: every action
unattended, so no run waits for a human.

Prefect must read ``PREFECT_API_URL`` before it is imported: :func:`prepare` starts the
server and sets the environment; only then are modules that import Prefect loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from stanch.prefect_server import PrefectServer, ensure_server, start_server, use_server

TENANT = "bench"
SOURCE = "bench-ocsf"
TOKEN = "bench-loopback-bearer-token-0123456789"  # noqa: S105 (loopback-only benchmark key)
VENDORS = {"edr": "crowdstrike", "identity": "okta", "firewall": "fortigate"}
POLICY_FILE = Path(__file__).resolve().parent / "policies" / "default.yaml"

# Loops are bounded: every wait below gives up after at most this long.
READY_TIMEOUT = 60.0
REPORT_TIMEOUT = 300.0


# Machine and figures -----------------------------------------------------------------------
def memory_gb() -> float | None:
    """Total memory of the machine, in GB."""
    return _proc_field("/proc/meminfo", "MemTotal:", scale=1024 * 1024)


def _proc_field(path: str, key: str, *, scale: float = 1024) -> float | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return round(int(line.split()[1]) / scale, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` now (VmRSS), in MB; ``None`` when unknown."""
    return None if pid is None else _proc_field(f"/proc/{pid}/status", "VmRSS:")


def peak_rss_mb(pid: int | None) -> float | None:
    """Peak resident memory of ``pid`` over its life (VmHWM), in MB."""
    return None if pid is None else _proc_field(f"/proc/{pid}/status", "VmHWM:")


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) ``pid`` has used so far, from ``/proc/<pid>/stat``."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    try:
        from importlib.metadata import version

        prefect_version: str | None = version("prefect")
    except Exception:  # the version is informative only
        prefect_version = None
    return {
        "cores": os.cpu_count(),
        "memory_gb": memory_gb(),
        "python": platform.python_version(),
        "prefect": prefect_version,
        "load_average_at_start": load,
    }


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) with linear interpolation; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float | None:
    """The median, ``None`` when empty."""
    return statistics.median(values) if values else None


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``value`` rounded, ``None`` kept."""
    return None if value is None else round(value, digits)


def emit(figures: dict[str, Any], summary: str) -> None:
    """Print the one JSON object, then the one-line human summary."""
    print(json.dumps(figures), flush=True)
    print(summary, flush=True)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Policy ------------------------------------------------------------------------------------
def write_policy_dir(root: Path) -> Path:
    """Copy the all-unattended benchmark policy into ``root/policies`` and validate it."""
    from flows.policy import load_policy

    directory = root / "policies"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "default.yaml"
    shutil.copyfile(POLICY_FILE, target)
    load_policy(target)  # raises PolicyError if the file is not valid
    return directory


# Scenario ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entities:
    """What one benchmark incident names: its own host, user, hash and two public IPs."""

    host: str
    user: str
    sha256: str
    c2_ip: str
    signin_ip: str
    tag: str


class EntityFactory:
    """Distinct entities per incident, also across invocations (a random prefix).

    Alerts sharing an entity within the correlation window join one incident, so every
    benchmark incident gets entities no other incident has.
    """

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(3)
        self.base = secrets.randbelow(1 << 20) << 2
        self.count = 0

    def next(self) -> Entities:
        """The entities of a new incident."""
        n = self.count
        self.count += 1
        offset = (self.base + n) % (1 << 22)
        tag = f"{self.prefix}{n:05d}"
        return Entities(
            host=f"WS-{tag.upper()}",
            user=f"u{tag}@acme.example",
            sha256=hashlib.sha256(f"bench-malware-{tag}".encode()).hexdigest(),
            # 45.0.0.0/8 and 46.0.0.0/8 are ordinary global space; nothing leaves loopback.
            c2_ip=str(ipaddress.ip_address("45.0.0.0") + offset),
            signin_ip=str(ipaddress.ip_address("46.0.0.0") + offset),
            tag=tag,
        )


def scenario_payloads(entities: Entities, now: datetime | None = None) -> list[dict[str, Any]]:
    """The demo incident's two alerts (``stanch.demo.scenario_alerts``), about ``entities``.

    The demo names one fixed host, user, hash and two IPs; each is replaced here so that
    every benchmark incident is a separate incident with the same shape.
    """
    from stanch import demo

    findings = demo.scenario_alerts(
        now or datetime.now(UTC), edr=VENDORS["edr"], identity=VENDORS["identity"]
    )
    text = json.dumps([f.model_dump(mode="json", exclude_none=True) for f in findings])
    for old, new in (
        (demo.HOSTNAME, entities.host),
        (demo.USER, entities.user),
        (demo.RANSOMWARE_SHA256, entities.sha256),
        (demo.C2_IP, entities.c2_ip),
        (demo.SIGNIN_IP, entities.signin_ip),
        (":demo:", f":bench-{entities.tag}:"),
    ):
        text = text.replace(old, new)
    payloads: list[dict[str, Any]] = json.loads(text)
    return payloads


# Lab ---------------------------------------------------------------------------------------
class _QuietServer(uvicorn.Server):
    """uvicorn, without signal handlers: several run in one loop and the harness stops them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class Lab:
    """The simulators served on loopback, by vendor, and the settings pointing at them."""

    simulators: dict[str, Any]
    environment: dict[str, str]
    servers: list[_QuietServer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def seed(self, entities: Entities) -> None:
        """Give the EDR the host and the identity provider the user."""
        self.simulators[VENDORS["edr"]].add_host(entities.host)
        self.simulators[VENDORS["identity"]].add_user(entities.user)

    def marks(self) -> dict[str, int]:
        """How many requests each simulator has logged so far."""
        return {vendor: len(sim.requests) for vendor, sim in self.simulators.items()}

    def calls_since(self, marks: dict[str, int]) -> Counter[str]:
        """Vendor requests logged after ``marks``, by ``vendor METHOD route``; no token calls."""
        calls: Counter[str] = Counter()
        for vendor, sim in self.simulators.items():
            for request in sim.requests[marks[vendor] :]:
                route = request.route or request.path
                if "token" in route or "oauth" in route:
                    continue
                calls[f"{vendor} {request.method} {route}"] += 1
        return calls


@contextlib.asynccontextmanager
async def serve_lab() -> AsyncIterator[Lab]:
    """Serve each vendor's simulator on its own loopback port until the block ends."""
    from integrations.plugin import load_plugin
    from stanch.lab import lab_environment

    lab = Lab(simulators={}, environment={})
    try:
        for vendor in VENDORS.values():
            simulator = load_plugin(vendor).simulator()
            port = free_port()
            config = uvicorn.Config(
                simulator.app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
            server = _QuietServer(config)
            lab.simulators[vendor] = simulator
            lab.servers.append(server)
            lab.tasks.append(asyncio.create_task(server.serve(), name=f"sim {vendor}"))
            lab.environment.update(lab_environment(vendor, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(s.started for s in lab.servers):
            if time.monotonic() > deadline or any(t.done() for t in lab.tasks):
                raise RuntimeError("a simulator did not start")
            await asyncio.sleep(0.02)
        yield lab
    finally:
        for server in lab.servers:
            server.should_exit = True
        await asyncio.wait_for(asyncio.gather(*lab.tasks, return_exceptions=True), timeout=15)


# Prefect and the environment ---------------------------------------------------------------
@dataclass
class Prepared:
    """The temporary home, the Prefect server and the environment the harness set."""

    root: Path
    home: Path
    reports_dir: Path
    server: PrefectServer
    store_url: str


def prepare(root: Path, *, database_url: str | None = None) -> Prepared:
    """Start (or reuse) the Prefect server under ``root`` and set the ``STANCH_*`` settings.

    Call before anything imports Prefect. ``database_url`` puts the incident store there
    (``STANCH_DATABASE_URL``); otherwise it is SQLite under the temporary home.
    """
    home = root / "home"
    reports = root / "reports"
    home.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "STANCH_HOME": str(home),
            "STANCH_MODE": "live",
            "STANCH_TENANT": TENANT,
            # The loopback simulators' settings are the provider's; the bench tenant opts in.
            "STANCH_TENANTS": json.dumps({TENANT: {"credentials": "provider"}}),
            "STANCH_EDR": VENDORS["edr"],
            "STANCH_IDENTITY": VENDORS["identity"],
            "STANCH_FIREWALL": VENDORS["firewall"],
            "STANCH_APPROVAL_CHANNEL": "cli",
            "STANCH_REPORTS_DIR": str(reports),
            "STANCH_POLICIES_DIR": str(write_policy_dir(root)),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    if database_url:
        os.environ["STANCH_DATABASE_URL"] = database_url
    else:
        os.environ.pop("STANCH_DATABASE_URL", None)
    server = prefect_server_for(home)
    from flows.settings import load_settings

    return Prepared(root, home, reports, server, load_settings().store_url)


def prefect_server_for(home: Path) -> PrefectServer:
    """The server ``PREFECT_API_URL`` names, else a new one under ``home``; Prefect set to it.

    Call before anything imports Prefect.
    """
    if os.environ.get("PREFECT_API_URL"):
        server = ensure_server(home)  # reuse the configured server
    else:
        # A random free port, not start_server's preferred 4200: two benchmarks starting
        # at once could otherwise both aim at 4200, and the loser's health check would
        # find the winner's server healthy and use it.
        server = start_server(home, port=free_port())
    use_server(server, home)
    return server


def stop_server(prepared: Prepared) -> None:
    """Stop the Prefect server if the harness started it."""
    prepared.server.stop()


# Prefect client back-off -------------------------------------------------------------------
_BACKOFF = re.compile(r"retryable .*Another attempt will be made in ([0-9.]+)s")


@dataclass
class Backoffs:
    """How often the Prefect client slept before retrying a request, and for how long."""

    sleeps: int = 0
    seconds: float = 0.0

    def __add__(self, other: Backoffs) -> Backoffs:
        return Backoffs(self.sleeps + other.sleeps, self.seconds + other.seconds)

    def __sub__(self, other: Backoffs) -> Backoffs:
        return Backoffs(self.sleeps - other.sleeps, self.seconds - other.seconds)

    def as_dict(self) -> dict[str, Any]:
        """As the JSON figures show it."""
        return {"sleeps": self.sleeps, "seconds": round(self.seconds, 2)}


class _BackoffCounter:
    """Counts the Prefect client's "retryable status code … attempt will be made" lines."""

    def __init__(self) -> None:
        self.total = Backoffs()

    def saw(self, message: str) -> None:
        """Count ``message`` if it is a back-off line."""
        match = _BACKOFF.search(message)
        if match:
            self.total = self.total + Backoffs(1, float(match.group(1)))

    def snapshot(self) -> Backoffs:
        """The totals so far."""
        return Backoffs(self.total.sleeps, self.total.seconds)


@contextlib.contextmanager
def count_client_backoffs() -> Iterator[_BackoffCounter]:
    """Count the Prefect client's back-off sleeps (a 503 from its server, then a retry).

    The client says each in a DEBUG line on its module logger before it sleeps. The
    logger's level and handlers are reset whenever logging is configured again (uvicorn,
    Prefect's own setup), so the count wraps that logger object's ``debug`` method for
    the block instead: it sees every such line whatever the level, and passes it on.
    """
    from prefect.client import base

    logger = base.logger
    counter = _BackoffCounter()
    debug = logger.debug

    def counting(msg: object, *args: Any, **kwargs: Any) -> None:
        counter.saw(str(msg))
        debug(msg, *args, **kwargs)

    logger.debug = counting  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        del logger.debug  # the instance attribute; the class's method shows again


# The intake service with flow runs ---------------------------------------------------------
@dataclass
class Report:
    """One incident's report, as ``reports/<incident>.json`` has it."""

    incident_id: str
    hosts: list[str]
    seen_at: float
    document: dict[str, Any]

    def stage(self, name: str) -> dict[str, Any] | None:
        """The stage record ``name`` (``contain``, ``report``…), if the report has it."""
        for record in self.document.get("stages", []):
            if record.get("stage") == name:
                found: dict[str, Any] = record
                return found
        return None

    def executed(self) -> int:
        """Actions that ran (executed, or already in effect)."""
        return sum(
            a.get("status") in ("executed", "already_done") for a in self.document["actions"]
        )


@dataclass
class Service:
    """The intake service with a flow starter, served on loopback in this process."""

    base_url: str
    reports_dir: Path
    starter: Any
    task: asyncio.Task[None]
    client: httpx.AsyncClient
    seen: set[str] = field(default_factory=set)

    async def post(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        """POST one batch of alerts to ``/v1/alerts/<source>``; the intake's counts."""
        response = await self.client.post(f"/v1/alerts/{SOURCE}", json=payloads)
        if response.status_code != 202:
            raise RuntimeError(f"intake answered {response.status_code}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        return body

    async def wait_reports(self, count: int, *, within: float = REPORT_TIMEOUT) -> list[Report]:
        """Poll the reports dir until ``count`` reports not seen before are complete."""
        found: dict[str, Report] = {}
        deadline = time.monotonic() + within
        while len(found) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} reports after {within:.0f} s")
            if self.task.done():
                raise RuntimeError("the intake service stopped")
            for path in self.reports_dir.glob("*.json"):
                incident_id = path.stem
                if incident_id in self.seen or incident_id in found:
                    continue
                now = time.perf_counter()
                try:
                    document = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # still being written: the next poll reads it whole
                hosts = sorted(
                    {
                        a["device"]["hostname"]
                        for a in document.get("alerts", [])
                        if a.get("device", {}).get("hostname")
                    }
                )
                found[incident_id] = Report(incident_id, hosts, now, document)
            await asyncio.sleep(0.01)
        self.seen.update(found)
        return list(found.values())


@contextlib.asynccontextmanager
async def serve_intake(prepared: Prepared, *, flow_limit: int) -> AsyncIterator[Service]:
    """Run ``run_service`` with a ``FlowStarter`` on a loopback port until the block ends."""
    from stanch.runners import FlowStarter
    from stanch.serve_cli import run_service
    from stanch.service import SourceAuth

    starter = FlowStarter(flow_limit)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    task = asyncio.create_task(
        run_service(
            prepared.store_url,
            {SOURCE: SourceAuth(tenant=TENANT, format="ocsf", bearer_token=TOKEN)},
            host="127.0.0.1",
            port=port,
            start_incident=starter,
            log_level="warning",
            access_log=False,
        ),
        name="intake service",
    )
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                if task.done():
                    task.result()  # raises the service's error
                    raise RuntimeError("the intake service exited")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the intake service did not become ready")
                await asyncio.sleep(0.05)
            yield Service(base, prepared.reports_dir, starter, task, client)
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(starter.drain(), timeout=REPORT_TIMEOUT)
            await _stop_service(task)
            from stanch.prefect_server import drain_prefect_clients

            with contextlib.suppress(Exception):
                await drain_prefect_clients()


async def _stop_service(task: asyncio.Task[None]) -> None:
    """Stop ``run_service`` gracefully: its uvicorn server holds SIGINT while it serves.

    ``run_service`` keeps its server to itself; the SIGINT handler it installed is a
    bound method of that server, so setting ``should_exit`` on it is what a Ctrl-C does.
    Cancelling is the fallback (uvicorn then logs the cancelled lifespan as an error).
    """
    server = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
    if isinstance(server, uvicorn.Server) and not task.done():
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=15)
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# Memory sampling ---------------------------------------------------------------------------
class MemorySampler:
    """Samples the RSS of some processes every ``interval`` seconds; keeps the maxima."""

    def __init__(self, pids: dict[str, int | None], interval: float = 0.2) -> None:
        self.pids = pids
        self.interval = interval
        self.peaks: dict[str, float | None] = dict.fromkeys(pids)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample now."""
        for name, pid in self.pids.items():
            value = rss_mb(pid)
            if value is not None:
                old = self.peaks[name]
                self.peaks[name] = value if old is None else max(old, value)

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> MemorySampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()


def counts(counters: Iterable[Counter[str]]) -> dict[str, int]:
    """Several request counters summed, as a sorted plain dict."""
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return dict(sorted(total.items()))
