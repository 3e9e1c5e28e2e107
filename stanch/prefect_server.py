"""Start, find and stop the embedded Prefect server (SQLite under the stanch home).

Prefect's ephemeral mode loses most task-run history when the process exits, so the
embedded default runs a real ``prefect server start`` in a subprocess (through
:mod:`stanch.prefect_sqlite`, which makes its SQLite writes wait for the lock instead of
failing), keeps its database under ``<home>/prefect``, and records its address in
``<home>/prefect/server.json`` so that another stanch command can reuse it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from integrations.http import tls_verify

HEALTH_TIMEOUT_SECONDS = 180.0


@dataclass
class PrefectServer:
    """A Prefect server this process can talk to.

    Attributes:
        api_url: the ``PREFECT_API_URL`` (ends in ``/api``).
        pid: the server's process id, when stanch started it.
        owned: ``True`` when this process started it and should stop it.
    """

    api_url: str
    pid: int | None
    owned: bool
    process: subprocess.Popen[bytes] | None = None
    home: Path | None = None

    @property
    def ui_url(self) -> str:
        """The Prefect UI address."""
        return self.api_url.removesuffix("/api")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server if this process started it (SIGTERM, then SIGKILL)."""
        if not self.owned or self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        if self.home is not None:
            _state_file(self.home).unlink(missing_ok=True)


def prefect_home(stanch_home: Path) -> Path:
    """Where the embedded Prefect server keeps its database and settings."""
    return (stanch_home / "prefect").resolve()


def _state_file(home: Path) -> Path:
    return home / "server.json"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """``True`` when ``<api_url>/health`` answers 200."""
    try:
        # The shared TLS context: httpx would load the CA bundle again for every check
        # (about 35 ms of CPU, five times a second while the server starts on 2 cores).
        response = httpx.get(f"{api_url}/health", timeout=timeout, verify=tls_verify())
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _free_port(preferred: int) -> int:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment(home: Path) -> dict[str, str]:
    """Environment for the server process and for clients of the embedded server."""
    from stanch.cli_support import telemetry_off

    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_ENABLED": "false"})
    # Off unless the operator turned it on: the server's telemetry job also logs an error
    # on every run without internet access.
    telemetry_off(env)
    return env


def running_server(home: Path) -> PrefectServer | None:
    """The server another stanch process started on this home, if it is still healthy."""
    state = _state_file(home)
    if not state.exists():
        return None
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    if healthy(data["api_url"]):
        return PrefectServer(api_url=data["api_url"], pid=data.get("pid"), owned=False)
    state.unlink(missing_ok=True)
    return None


def start_server(stanch_home: Path, *, port: int = 4200) -> PrefectServer:
    """Start ``prefect server start`` on loopback and wait until it is healthy.

    Raises:
        RuntimeError: the server exited or did not become healthy in time; the message
            carries the end of its log.
    """
    home = prefect_home(stanch_home)
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port(port)
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = home / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                sys.executable,
                "-m",
                # `prefect`, with SQLite write transactions begun IMMEDIATE (see there).
                "stanch.prefect_sqlite",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # The UI asks PREFECT_SERVER_API_HOST/PORT where its API is (4200 unless
            # told): on any other port it would show another server's runs, or none.
            env={
                **server_environment(home),
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(port),
            },
            start_new_session=True,
        )
    server = PrefectServer(api_url=api_url, pid=process.pid, owned=True, process=process, home=home)
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while not healthy(api_url, timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Prefect server did not start (log {log_path}):\n{tail}")
        time.sleep(0.2)
    if process.poll() is not None:
        # Healthy, but not ours: another server took the port between the check and the
        # bind, and ours exited. Using it would mix two installs' histories.
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"port {port} was taken by another server (log {log_path}):\n{tail}")
    _state_file(home).write_text(json.dumps({"api_url": api_url, "pid": process.pid}))
    return server


def ensure_server(stanch_home: Path) -> PrefectServer:
    """``PREFECT_API_URL`` if set, else a running embedded server, else a new one."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return PrefectServer(api_url=configured.rstrip("/"), pid=None, owned=False)
    home = prefect_home(stanch_home)
    return running_server(home) or start_server(stanch_home)


def use_server(server: PrefectServer, stanch_home: Path) -> None:
    """Point this process's Prefect client at ``server``, even if Prefect is imported."""
    from stanch.cli_support import telemetry_off

    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ.setdefault("PREFECT_HOME", str(prefect_home(stanch_home)))
    telemetry_off()
    context = sys.modules.get("prefect.context")
    if context is not None:
        # Prefect read the environment once, when first imported (``stanch serve``
        # imports it with the store): without a second reading it would start an
        # ephemeral server of its own, on which nothing scheduled ever runs.
        context.refresh_global_settings_context()


async def drain_prefect_clients() -> None:
    """Send the logs and events Prefect still has queued, before the server goes away.

    Prefect ships logs and events from background workers; at interpreter exit they try
    to flush and, with the embedded server already stopped, retry for about a minute.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    drained = EventsWorker.drain_all(timeout=10)
    if inspect.isawaitable(drained):
        await drained
