"""``stanch serve``: the detection intake service under uvicorn and, on a one-host
install, the Prefect runners of stanch's deployments in the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from pydantic import TypeAdapter, ValidationError

from flows.detect import Intake, StartIncident, TriagePolicy
from flows.record import open_store
from stanch.cases_api import ApiToken, CasesApi
from stanch.runners import (
    DeploymentStarter,
    FlowStarter,
    ServedDeployment,
    ServedRunners,
    log_incident,
    parse_poll,
    served_deployments,
)
from stanch.service import ServiceSettings, SourceAuth, check_sources, create_app

if TYPE_CHECKING:
    pass

log = logging.getLogger("stanch.serve")

_SOURCES = TypeAdapter(dict[str, SourceAuth])
_TRIAGE = TypeAdapter(dict[str, TriagePolicy])
_TOKENS = TypeAdapter(dict[str, ApiToken])


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
    check_sources(sources)
    return sources


def load_api_tokens(env: Mapping[str, str]) -> dict[str, ApiToken]:
    """The cases API's tokens from ``STANCH_API_TOKENS_FILE`` or ``STANCH_API_TOKENS``
    (empty when neither is set: the API is then not served), e.g.
    ``{"acme-portal": {"tenant": "acme", "token": "<32+ characters>"}}``.

    Raises:
        ValueError: the configuration is invalid (named by token and field, never the
            secret), a token name is not lower-case letters, digits, ``.``, ``_``, ``-``,
            or two names share one token.
    """
    path = env.get("STANCH_API_TOKENS_FILE")
    raw = Path(path).read_text(encoding="utf-8") if path else env.get("STANCH_API_TOKENS")
    if not raw:
        return {}
    try:
        tokens = _TOKENS.validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid API tokens: {_first_error(exc)}") from exc
    for name in tokens:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", name):
            raise ValueError(f"invalid API tokens: {name[:40]!r} is not a token name")
    secrets = [t.token.get_secret_value() for t in tokens.values()]
    if len(set(secrets)) != len(secrets):
        raise ValueError("invalid API tokens: two token names share one token")
    return tokens


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
    stop: asyncio.Event | None = None,
    api_tokens: Mapping[str, ApiToken] | None = None,
) -> None:
    """Open the store and serve the intake app until SIGINT or SIGTERM (or ``stop``).

    With ``STANCH_APPROVAL_CHANNEL=slack`` the same process receives Slack clicks (HTTP
    request URL when a signing secret is set, Socket Mode when an app token is set) and
    runs the approval sweeper (reminders, escalation, expiry). With ``api_tokens`` it
    serves the cases API.
    """
    async with open_store(store_url) as store:
        intake = Intake(store, start_incident=start_incident, window=window, triage=triage)
        cases = None
        if api_tokens:
            from stanch.incidents_cli import read_case_file

            cases = CasesApi(
                store,
                api_tokens,
                case_file=lambda book, incident_id, tenant: read_case_file(
                    book, incident_id, tenant=tenant
                ),
            )
        async with _slack_side(store) as slack:
            app = create_app(
                settings or ServiceSettings(), intake, sources=sources, slack=slack, cases=cases
            )
            config = uvicorn.Config(
                app, host=host, port=port, log_level=log_level, access_log=access_log
            )
            server = _Server(config)
            watcher = asyncio.create_task(_exit_on(stop, server)) if stop is not None else None
            drainer = asyncio.create_task(_drain_starts(intake))
            try:
                await server.serve()
            finally:
                drainer.cancel()
                await asyncio.gather(drainer, return_exceptions=True)
                if watcher is not None:
                    watcher.cancel()


DRAIN_SECONDS = 30.0
"""How often the outbox is checked for incidents whose run is still to be created."""


async def _drain_starts(intake: Intake) -> None:
    """Start what the outbox holds: all of it at start (this is the store's one intake, so
    a claim there is a dead process's), then every ``DRAIN_SECONDS`` the failed starts."""
    lease: timedelta | None = timedelta(0)
    while True:
        try:
            await intake.drain_starts(lease=lease)
        except Exception:  # the next pass retries; intake goes on meanwhile
            log.exception("starting pending incidents failed")
        lease = None
        await asyncio.sleep(DRAIN_SECONDS)


async def _exit_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True  # what uvicorn's own signal handler does


@contextlib.asynccontextmanager
async def _slack_side(store: Any) -> Any:
    """The Slack listener and sweeper, when approvals go through Slack; else nothing."""
    from flows.settings import load_settings

    settings = load_settings()
    if settings.approval_channel != "slack":
        yield None
        return
    from flows.approval import (
        interaction_router,
        run_sweeper,
        slack_approval_service,
        slack_case_service,
    )
    from flows.errors import ConfigurationError
    from integrations.slack import SlackRequestVerifier
    from stanch.slack_listener import SlackInteractions

    try:
        # The same builder as the sweep flow's; it names every missing bot token, channel
        # and team id (clicks are accepted from that workspace only).
        service = slack_approval_service(store, settings)
        handle = interaction_router(
            service.handle, slack_case_service(store, service.chat, settings)
        )
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
            handle,
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
            handle,
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
    deployments: bool = True,
    poll: str = "",
) -> int:
    """Receive vendor alerts over HTTP, correlate them into incidents and run their flows.

    Alerts go to ``POST /v1/alerts/<source>`` (one object or an array); ``GET /healthz``
    and ``GET /readyz`` answer probes. Sources are a JSON object read from
    ``--sources-file``, else the file named by ``STANCH_SOURCES_FILE``, else the
    ``STANCH_SOURCES`` variable::

        {"acme-falcon": {"tenant": "acme", "format": "crowdstrike", "hmac_secret": "..."},
         "acme-siem": {"tenant": "acme", "format": "ocsf", "bearer_token": "..."}}

    Optional ``STANCH_TRIAGE`` sets per-tenant triage, e.g.
    ``{"acme": {"threshold": 40, "asset_criticality": {"dc-*": 30}}}``. The store is
    ``STANCH_DATABASE_URL`` (SQLite under ``STANCH_HOME`` by default); flow runs go to
    ``PREFECT_API_URL`` or the embedded Prefect server.

    By default this process also serves, with Prefect runners in the same event loop,
    the deployments prefect.yaml defines, under names of their own so that they never
    collide with ``prefect deploy --all``'s: ``handle-incident/handle-incident-serve``
    (each new incident above its tenant's triage threshold becomes one run of it, at
    most ``--concurrent-flows`` at a time; a run that waits long for an approval is
    suspended and re-run here once decided), ``sweep/sweep-serve`` every minute (TTL
    expiry; Slack approvals are swept in-process) and, for each source named by
    ``--poll``, ``poll-alerts/poll-<source>-serve`` every minute. SIGTERM stops intake,
    waits for the incident runs started here to end or suspend, then stops the runners:
    they pause the schedules and let the runs they still execute end (none is killed).

    Args:
        host: address to listen on; keep loopback unless a proxy terminates TLS in front.
        port: TCP port.
        sources_file: JSON file of sources (overrides the environment).
        window_minutes: correlation window: alerts sharing an entity within it join.
        max_body_mb: request bodies above this get 413.
        log_level: uvicorn log level.
        run_flows: start a flow run per new incident (``--no-run-flows`` only records).
        concurrent_flows: incident flow runs at a time; further incidents wait their turn.
        deployments: serve the deployments (``--no-deployments`` runs each incident's
            flow inside this process instead, with no sweep and no pollers; approvals
            then never suspend, and a long one holds its slot).
        poll: comma-separated alert sources to poll every minute (``crowdstrike``,
            ``defender``, ``sentinelone``, ``okta``, ``entra``), each with its
            ``STANCH_<VENDOR>_*`` credentials; none by default (alerts come by webhook).
    """
    from flows.settings import load_settings

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if log_level.lower() != "debug":
        # httpx logs every Prefect API call at INFO, and the runners poll every few seconds.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        sources = load_sources(os.environ, sources_file)
        triage = load_triage(os.environ)
        api_tokens = load_api_tokens(os.environ)
        polled = parse_poll(poll)
        if polled and not (run_flows and deployments):
            raise ValueError(
                "--poll needs the served deployments (no --no-run-flows/--no-deployments)"
            )
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    store_settings = load_settings()
    if not content_is_sound(store_settings):
        return 2
    log.info("sources: %s", ", ".join(f"{n} ({s.tenant}, {s.format})" for n, s in sources.items()))
    service = ServiceSettings(max_body_bytes=int(max_body_mb * 1024 * 1024))
    start: StartIncident = log_incident
    served: list[ServedDeployment] = []
    server = None
    if run_flows:
        from stanch.prefect_server import ensure_server, use_server

        server = ensure_server(store_settings.home)
        use_server(server, store_settings.home)
        log.info("flow runs go to %s", server.api_url)
        if deployments:
            served = served_deployments(polled)
            start = DeploymentStarter()
        else:
            start = FlowStarter(concurrent_flows)
    try:
        asyncio.run(
            _serve_and_drain(
                start,
                store_settings.store_url,
                sources,
                served=served,
                concurrent_flows=concurrent_flows,
                host=host,
                port=port,
                window=timedelta(minutes=window_minutes),
                triage=triage,
                settings=service,
                log_level=log_level,
                api_tokens=api_tokens,
            )
        )
    finally:
        if server is not None:
            server.stop()
    return 0


def content_is_sound(settings: Any) -> bool:
    """Check the policies and playbooks before serving; ``False`` means do not start.

    An invalid policy file stops the start (each issue logged with its file and line):
    its tenant's actions would otherwise all fall back to approval. An invalid playbook
    is logged and skipped, as every incident run skips it.
    """
    from flows.playbook import load_library
    from flows.policy import PolicyError, load_policy
    from flows.settings import playbook_directory, policy_directory

    try:
        policies = sorted(policy_directory(settings.policies_dir).glob("*.yaml"))
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return False
    sound = True
    for path in policies:
        try:
            load_policy(path)
        except PolicyError as exc:
            sound = False
            for issue in exc.issues:
                log.error("invalid policy, not starting: %s", issue)
    try:
        library = load_library(playbook_directory(settings.playbooks_dir))
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return False
    for broken in library.broken:
        for problem in broken.issues:
            log.warning("invalid playbook, skipped by every incident: %s", problem)
    log.info(
        "%d policy file(s) valid, %d playbook(s) loaded, %d skipped",
        len(policies),
        len(library.playbooks),
        len(library.broken),
    )
    return sound


async def _serve_and_drain(
    start: StartIncident,
    store_url: str,
    sources: dict[str, SourceAuth],
    *,
    served: Sequence[ServedDeployment] = (),
    concurrent_flows: int = 4,
    **options: Any,
) -> None:
    if not served:
        await run_service(store_url, sources, start_incident=start, **options)
        if isinstance(start, FlowStarter):
            await start.drain()
        return
    async with ServedRunners(served, concurrent_flows=concurrent_flows) as runners:
        await run_service(store_url, sources, start_incident=start, stop=runners.ended, **options)
        if isinstance(start, DeploymentStarter):
            await start.drain(abandon=runners.ended)
        if runners.failure is not None:
            raise RuntimeError("a Prefect runner stopped: no flow runs") from runners.failure
