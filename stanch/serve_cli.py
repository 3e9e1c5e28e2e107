"""``stanch serve``: the detection intake service under uvicorn and, on a one-host
install, the Prefect runners of stanch's deployments in the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import uvicorn
from pydantic import TypeAdapter, ValidationError

from flows.intake import Intake, StartIncident, TriagePolicy
from flows.models import Incident
from flows.store import open_store
from stanch.service import ServiceSettings, SourceAuth, create_app

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import State
    from prefect.runner import Runner

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


# Deployments served on a one-host install ----------------------------------------------------
# Named apart from prefect.yaml's (``prefect deploy --all``), so that `stanch serve` and a
# work pool's worker never overwrite each other's deployment on the same Prefect server.
SERVED_SUFFIX = "serve"
HANDLE_INCIDENT_SERVED = f"handle-incident/handle-incident-{SERVED_SUFFIX}"
EVERY_MINUTE = timedelta(seconds=60)  # prefect.yaml's interval for the sweep and the pollers
# How often the incidents' runner asks for new runs, at most: Prefect's default (10 s)
# would add up to that much to every incident's time to contain.
INCIDENT_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class ServedDeployment:
    """One deployment ``stanch serve`` runs, as prefect.yaml describes its namesake.

    Attributes:
        flow: the flow's name (``handle-incident``, ``sweep`` or ``poll-alerts``).
        name: prefect.yaml's deployment name with ``-serve`` appended.
        parameters: the default parameters of its runs.
        interval: how often a run is scheduled; ``None`` for runs started on demand.
        concurrency_limit: its runs at a time, enforced by the Prefect server.
        tags: as in prefect.yaml.
        description: as in prefect.yaml.
    """

    flow: Literal["handle-incident", "sweep", "poll-alerts"]
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    interval: timedelta | None = None
    concurrency_limit: int | None = None
    tags: tuple[str, ...] = ()
    description: str = ""


def alert_sources() -> list[str]:
    """The vendors whose alerts a poller can pull (prefect.yaml's ``poll-<source>``)."""
    from integrations.capabilities import Capability
    from integrations.plugin import available_plugins

    return [p.name for p in available_plugins() if Capability.ALERTS in p.adapters]


def parse_poll(text: str) -> list[str]:
    """The comma-separated ``--poll`` value as source names, each an alert source.

    Raises:
        ValueError: a name is not an alert source (the message lists those that are).
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    known = alert_sources()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"--poll: {', '.join(unknown)} is not an alert source; choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def served_deployments(poll: Sequence[str] = ()) -> list[ServedDeployment]:
    """``handle-incident``, the ``sweep`` and a poller per source in ``poll``.

    The sweep runs with ``approvals: false``: ``stanch serve`` sweeps Slack approvals
    itself every few seconds, so the deployment only expires containment past its TTL.
    Pollers start their incidents through the served ``handle-incident``.
    """
    served = [
        ServedDeployment(
            "handle-incident",
            f"handle-incident-{SERVED_SUFFIX}",
            tags=("stanch", "lifecycle"),
            description="One incident through detect, investigate, contain, remediate and report.",
        ),
        ServedDeployment(
            "sweep",
            f"sweep-{SERVED_SUFFIX}",
            parameters={"approvals": False},
            interval=EVERY_MINUTE,
            concurrency_limit=1,
            tags=("stanch", "sweeper"),
            description="Undo containment whose TTL has passed.",
        ),
    ]
    served.extend(
        ServedDeployment(
            "poll-alerts",
            f"poll-{source}-{SERVED_SUFFIX}",
            parameters={"source": source, "incident_deployment": HANDLE_INCIDENT_SERVED},
            interval=EVERY_MINUTE,
            concurrency_limit=1,
            tags=("stanch", "detect", "poller"),
            description=f"Pull {source} alerts into intake.",
        )
        for source in poll
    )
    return served


def _flows() -> dict[str, Flow[Any, Any]]:
    # Imported here: Prefect must read PREFECT_API_URL after serve() has set it.
    from flows.lifecycle import handle_incident
    from flows.pollers import poll_alerts
    from flows.sweeper import sweep

    return {"handle-incident": handle_incident, "sweep": sweep, "poll-alerts": poll_alerts}


class ServedRunners:
    """Prefect runners serving ``stanch serve``'s deployments in the running event loop.

    Two runners, so that neither kind of work can starve the other: one runs incidents,
    at most ``concurrent_flows`` processes (a run paused for a short approval keeps its
    process, a suspended one gives it back) and polling every ``INCIDENT_POLL_SECONDS``
    (or ``PREFECT_RUNNER_POLL_FREQUENCY`` if lower), the other the scheduled passes (sweep
    and pollers), one process each.

    Attributes:
        ended: set when a runner ends while still needed (``failure`` says why); nothing
            would run the incidents any more, so the service should stop.
        failure: the error that runner raised (a ``RuntimeError`` if it raised none).
    """

    def __init__(self, deployments: Sequence[ServedDeployment], *, concurrent_flows: int) -> None:
        on_demand = [d for d in deployments if d.interval is None]
        scheduled = [d for d in deployments if d.interval is not None]
        prefix = f"stanch-{SERVED_SUFFIX}"
        # (runner name, deployments, process limit, fastest poll in seconds)
        self._groups = [
            (f"{prefix}-incidents", on_demand, concurrent_flows, INCIDENT_POLL_SECONDS),
            (f"{prefix}-schedules", scheduled, len(scheduled), None),
        ]
        self.ended = asyncio.Event()
        self.failure: BaseException | None = None
        self._runners: list[tuple[Runner, asyncio.Task[None]]] = []
        self._stopping = False

    async def __aenter__(self) -> ServedRunners:
        from prefect.runner import Runner
        from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY

        flows = _flows()
        poll = PREFECT_RUNNER_POLL_FREQUENCY.value()
        try:
            for name, group, limit, fastest in self._groups:
                if not group:
                    continue
                runner = Runner(name=name, limit=limit, query_seconds=min(poll, fastest or poll))
                for served in group:
                    # aadd_flow (rather than to_deployment + aadd_deployment) also hands
                    # the runner the flow object: runs start from it, not from a file path.
                    await runner.aadd_flow(
                        flows[served.flow],
                        name=served.name,
                        interval=served.interval,
                        parameters=served.parameters,
                        concurrency_limit=served.concurrency_limit,
                        tags=list(served.tags),
                        description=served.description,
                    )
                self._runners.append((runner, self._start(runner)))
                log.info("%s serves %s", name, ", ".join(f"{d.flow}/{d.name}" for d in group))
        except BaseException:
            await self.__aexit__()  # a runner already started must not outlive the refusal
            raise
        await asyncio.sleep(0)  # lets the runners' first steps, and _start's repairs, run
        return self

    def _start(self, runner: Runner) -> asyncio.Task[None]:
        previous = signal.getsignal(signal.SIGTERM)
        task = asyncio.create_task(runner.start(), name=f"prefect runner {runner.name}")
        task.add_done_callback(self._ended)
        if previous is not None and threading.current_thread() is threading.main_thread():
            # Runner.start() begins by installing a SIGTERM handler that cancels every run
            # and exits on the spot; this process stops on its own terms (uvicorn, then the
            # drain). Scheduled after the task's first step, this puts the old one back.
            asyncio.get_running_loop().call_soon(signal.signal, signal.SIGTERM, previous)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        error = None if task.cancelled() else task.exception()
        log.error("%s stopped while still needed: %r", task.get_name(), error)
        self.failure = error or RuntimeError(f"{task.get_name()} stopped")
        self.ended.set()

    @property
    def runners(self) -> list[Runner]:
        """The runners started, incidents' first."""
        return [runner for runner, _ in self._runners]

    async def __aexit__(self, *_: object) -> None:
        # Cancelling start() ends the polling and pauses the schedules, then the runner
        # waits for the processes it still has (a sweep or poll pass, a run just ending).
        # Not Runner.astop(): that kills them, and forces Cancelled even over a run that
        # has just Completed while its process was exiting.
        self._stopping = True
        tasks = [task for _runner, task in self._runners]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class DeploymentStarter:
    """Start callback that starts one run of the served ``handle-incident`` per incident.

    The runner serving the deployment executes it, at most its limit at a time; further
    runs wait as ``Scheduled``. The incident's id and creation time make the run's
    idempotency key, so a start retried after an error never makes a second run.
    """

    def __init__(self, deployment: str = HANDLE_INCIDENT_SERVED, *, every: float = 1.0) -> None:
        self.deployment = deployment
        self._every = every
        self._runs: set[UUID] = set()
        self._prune_at = _PRUNE_EVERY

    async def __call__(self, incident: Incident) -> None:
        from prefect.deployments.flow_runs import arun_deployment

        run = await arun_deployment(
            self.deployment,
            parameters={"incident": incident.model_dump(mode="json")},
            timeout=0,
            # Not the id alone: ids restart with a new store, Prefect's runs do not.
            idempotency_key=f"{incident.id}@{incident.created_at.isoformat()}",
        )
        self._runs.add(run.id)
        log.info("incident %s: flow run %s scheduled on %s", incident.id, run.id, self.deployment)
        if len(self._runs) >= self._prune_at:
            try:
                self._runs = await self._in_flight(self._runs)
            except Exception:  # the run is started; forgetting old ones can wait
                log.warning("could not check which incident runs ended", exc_info=True)
            self._prune_at = len(self._runs) + _PRUNE_EVERY

    async def drain(self, abandon: asyncio.Event | None = None) -> None:
        """Wait until every run started here has ended or been suspended (process gone).

        Args:
            abandon: stop waiting once it is set (the runner executing them has stopped).
        """
        reported = 0
        while self._runs and not (abandon is not None and abandon.is_set()):
            self._runs = await self._in_flight(self._runs)
            if self._runs:
                if len(self._runs) != reported:
                    reported = len(self._runs)
                    log.info("waiting for %d incident flow run(s) to end or suspend", reported)
                await _wait(abandon, self._every)

    @staticmethod
    async def _in_flight(ids: set[UUID]) -> set[UUID]:
        """The runs of ``ids`` that still have (or wait for) a process."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        listed = list(ids)
        chunks = [listed[i : i + _PAGE] for i in range(0, len(listed), _PAGE)]
        left: set[UUID] = set()
        async with get_client() as client:
            for chunk in chunks:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=_PAGE
                )
                left.update(r.id for r in runs if not _let_go(r.state))
        return left


_PRUNE_EVERY = 100  # forget ended runs after this many starts, not to grow without bound
_PAGE = 200  # the Prefect API's largest page of flow runs


def _let_go(state: State[Any] | None) -> bool:
    # A suspended run's process has exited; whoever serves the deployment re-runs it
    # once it is resumed, so a shutdown need not wait for the analyst.
    return state is not None and (state.is_final() or state.name == "Suspended")


async def _wait(event: asyncio.Event | None, seconds: float) -> None:
    if event is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


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
) -> None:
    """Open the store and serve the intake app until SIGINT or SIGTERM (or ``stop``).

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
            server = _Server(config)
            watcher = asyncio.create_task(_exit_on(stop, server)) if stop is not None else None
            try:
                await server.serve()
            finally:
                if watcher is not None:
                    watcher.cancel()


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
        polled = parse_poll(poll)
        if polled and not (run_flows and deployments):
            raise ValueError(
                "--poll needs the served deployments (no --no-run-flows/--no-deployments)"
            )
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    store_settings = load_settings()
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
            )
        )
    finally:
        if server is not None:
            server.stop()
    return 0


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


__all__ = [
    "HANDLE_INCIDENT_SERVED",
    "DeploymentStarter",
    "FlowStarter",
    "ServedDeployment",
    "ServedRunners",
    "load_sources",
    "load_triage",
    "log_incident",
    "parse_poll",
    "run_service",
    "serve",
    "served_deployments",
]
