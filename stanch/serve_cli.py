"""``stanch serve``: the detection intake service under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import TypeAdapter, ValidationError

from flows.intake import Intake, StartIncident, TriagePolicy
from flows.models import Incident
from flows.store import open_store
from stanch.service import ServiceSettings, SourceAuth, create_app

log = logging.getLogger("stanch.serve")

_SOURCES = TypeAdapter(dict[str, SourceAuth])
_TRIAGE = TypeAdapter(dict[str, TriagePolicy])


def load_sources(env: Mapping[str, str], sources_file: Path | None = None) -> dict[str, SourceAuth]:
    """Sources from ``sources_file``, else ``STANCH_SOURCES_FILE``, else ``STANCH_SOURCES``.

    Raises:
        ValueError: nothing is configured, or the configuration is invalid (the message
            names the source and field, never a secret).
    """
    path = sources_file or (
        Path(env["STANCH_SOURCES_FILE"]) if env.get("STANCH_SOURCES_FILE") else None
    )
    raw = path.read_text(encoding="utf-8") if path is not None else env.get("STANCH_SOURCES")
    if not raw:
        raise ValueError("no sources: set STANCH_SOURCES, STANCH_SOURCES_FILE or --sources-file")
    try:
        sources = _SOURCES.validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid source configuration: {_first_error(exc)}") from exc
    if not sources:
        raise ValueError("the source configuration names no source")
    return sources


def load_triage(env: Mapping[str, str]) -> dict[str, TriagePolicy]:
    """Per-tenant triage policies from ``STANCH_TRIAGE`` (empty when unset)."""
    raw = env.get("STANCH_TRIAGE")
    if not raw:
        return {}
    try:
        return _TRIAGE.validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid STANCH_TRIAGE: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    # input values are left out: they may be secrets
    first = exc.errors(include_input=False, include_url=False)[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


async def log_incident(incident: Incident) -> None:
    """The default start callback: log the incident until flow runs are wired in."""
    log.info("incident %s ready to start: %s", incident.id, incident.title)


class FlowStarter:
    """Start callback that runs ``handle-incident`` for each new incident in this process.

    The one-host install: the service is a Prefect client, and each incident the intake
    opens becomes one flow run (never one per alert), at most ``limit`` at a time so an
    incident storm queues here instead of flooding the Prefect server.
    """

    def __init__(self, limit: int = 4) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, incident: Incident) -> None:
        task = asyncio.create_task(self._run(incident), name=f"handle-incident {incident.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, incident: Incident) -> None:
        # Imported here: Prefect must read PREFECT_API_URL after serve() has set it.
        from flows.lifecycle import handle_incident

        async with self._slots:
            state = await handle_incident(incident, return_state=True)
        log.info("incident %s: flow run ended %s", incident.id, state.name)

    async def drain(self) -> None:
        """Wait for the flow runs already started."""
        await asyncio.gather(*self._running, return_exceptions=True)


class _Server(uvicorn.Server):
    """uvicorn's server, but a stop signal ends ``serve()`` with a plain return.

    uvicorn re-raises the signal it caught once it has shut down, which would interrupt
    the closing of the store that wraps it.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


async def run_service(
    store_url: str,
    sources: dict[str, SourceAuth],
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    start_incident: StartIncident = log_incident,
    window: timedelta = timedelta(hours=1),
    triage: Mapping[str, TriagePolicy] | None = None,
    settings: ServiceSettings | None = None,
    log_level: str = "info",
    access_log: bool = True,
) -> None:
    """Open the store and serve the intake app until SIGINT or SIGTERM.

    With ``STANCH_APPROVAL_CHANNEL=slack`` the same process receives Slack clicks (HTTP
    request URL when a signing secret is set, Socket Mode when an app token is set) and
    runs the approval sweeper (reminders, escalation, expiry).
    """
    async with open_store(store_url) as store:
        intake = Intake(store, start_incident=start_incident, window=window, triage=triage)
        async with _slack_side(store) as slack:
            app = create_app(settings or ServiceSettings(), intake, sources=sources, slack=slack)
            config = uvicorn.Config(
                app, host=host, port=port, log_level=log_level, access_log=access_log
            )
            await _Server(config).serve()


@contextlib.asynccontextmanager
async def _slack_side(store: Any) -> Any:
    """The Slack listener and sweeper, when approvals go through Slack; else nothing."""
    from flows.settings import load_settings

    settings = load_settings()
    if settings.approval_channel != "slack":
        yield None
        return
    from flows.approval_service import run_sweeper
    from flows.errors import ConfigurationError
    from flows.sweeper import slack_approval_service
    from integrations.slack import SlackRequestVerifier
    from stanch.slack_listener import SlackInteractions

    try:
        # The same builder as the sweep flow's; it names every missing bot token, channel
        # and team id (clicks are accepted from that workspace only).
        service = slack_approval_service(store, settings)
    except ConfigurationError as exc:
        raise SystemExit(str(exc)) from exc
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        raise SystemExit(
            "Slack approvals need STANCH_SLACK_APP_TOKEN (Socket Mode) or "
            "STANCH_SLACK_SIGNING_SECRET (HTTP request URL)"
        )
    listener = None
    if settings.slack_signing_secret is not None:
        listener = SlackInteractions(
            service.handle,
            SlackRequestVerifier(settings.slack_signing_secret),
            team_id=service.team_id,
        )
    socket = None
    if settings.slack_app_token is not None:
        from slack_sdk.socket_mode import SocketModeClient

        from stanch.slack_listener import SocketModeRunner

        socket = SocketModeRunner(
            SocketModeClient(
                app_token=settings.slack_app_token.get_secret_value(),
                web_client=service.chat.client,
            ),
            service.handle,
            asyncio.get_running_loop(),
            team_id=service.team_id,
        )
        await asyncio.to_thread(socket.connect)
    log.info("Slack approvals: %s", "socket mode" if socket else "HTTP /slack/interactions")
    # Started only once the configuration is known good: a refused start must not leave
    # a sweeper running against a store that is about to close.
    stop = asyncio.Event()
    sweeper = asyncio.create_task(run_sweeper(service, stop=stop))
    try:
        yield listener
    finally:
        stop.set()
        await sweeper
        if socket is not None:
            socket.close()


def serve(
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    sources_file: Path | None = None,
    window_minutes: float = 60.0,
    max_body_mb: float = 5.0,
    log_level: str = "info",
    run_flows: bool = True,
    concurrent_flows: int = 4,
) -> int:
    """Receive vendor alerts over HTTP and correlate them into incidents.

    Alerts go to ``POST /v1/alerts/<source>`` (one object or an array); ``GET /healthz``
    and ``GET /readyz`` answer probes. Sources are a JSON object read from
    ``--sources-file``, else the file named by ``STANCH_SOURCES_FILE``, else the
    ``STANCH_SOURCES`` variable::

        {"acme-falcon": {"tenant": "acme", "format": "crowdstrike", "hmac_secret": "..."},
         "acme-siem": {"tenant": "acme", "format": "ocsf", "bearer_token": "..."}}

    Optional ``STANCH_TRIAGE`` sets per-tenant triage, e.g.
    ``{"acme": {"threshold": 40, "asset_criticality": {"dc-*": 30}}}``. The store is
    ``STANCH_DATABASE_URL`` (SQLite under ``STANCH_HOME`` by default). Each new incident
    above its tenant's triage threshold starts one ``handle-incident`` flow run in this
    process, on ``PREFECT_API_URL`` or the embedded Prefect server.

    Args:
        host: address to listen on; keep loopback unless a proxy terminates TLS in front.
        port: TCP port.
        sources_file: JSON file of sources (overrides the environment).
        window_minutes: correlation window: alerts sharing an entity within it join.
        max_body_mb: request bodies above this get 413.
        log_level: uvicorn log level.
        run_flows: start a flow run per new incident (``--no-run-flows`` only records).
        concurrent_flows: flow runs at a time; further incidents wait their turn.
    """
    from flows.settings import load_settings

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        sources = load_sources(os.environ, sources_file)
        triage = load_triage(os.environ)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    store_settings = load_settings()
    log.info("sources: %s", ", ".join(f"{n} ({s.tenant}, {s.format})" for n, s in sources.items()))
    service = ServiceSettings(max_body_bytes=int(max_body_mb * 1024 * 1024))
    start: StartIncident = log_incident
    server = None
    if run_flows:
        from stanch.prefect_server import ensure_server, use_server

        server = ensure_server(store_settings.home)
        use_server(server, store_settings.home)
        log.info("flow runs go to %s", server.api_url)
        start = FlowStarter(concurrent_flows)
    try:
        asyncio.run(
            _serve_and_drain(
                start,
                store_settings.store_url,
                sources,
                host=host,
                port=port,
                window=timedelta(minutes=window_minutes),
                triage=triage,
                settings=service,
                log_level=log_level,
            )
        )
    finally:
        if server is not None:
            server.stop()
    return 0


async def _serve_and_drain(
    start: StartIncident, store_url: str, sources: dict[str, SourceAuth], **options: Any
) -> None:
    await run_service(store_url, sources, start_incident=start, **options)
    if isinstance(start, FlowStarter):
        await start.drain()


__all__ = ["FlowStarter", "load_sources", "load_triage", "log_incident", "run_service", "serve"]
