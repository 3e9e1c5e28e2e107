"""How ``stanch serve`` starts incident runs, and serves stanch's deployments in its own process.

A new incident starts one ``handle-incident`` run: in process (:class:`FlowStarter`, with
``--no-deployments``) or through the served deployment (:class:`DeploymentStarter`), whose
Prefect runners (:class:`ServedRunners`) also serve the ``sweep`` and the pollers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from flows.models import Incident

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.runner import Runner

log = logging.getLogger("stanch.serve")


async def log_incident(incident: Incident) -> None:
    """The default start callback: log the incident until flow runs are wired in."""
    log.info("incident %s ready to start: %s", incident.id, incident.title)


class FlowStarter:
    """Start callback that runs ``handle-incident`` for each new incident in this process.

    The one-host install: the service is a Prefect client, and each incident the intake
    opens becomes one flow run (never one per alert), at most ``limit`` at a time so an
    incident storm queues here instead of flooding the Prefect server.
    """

    confirms_start = True
    """The intake records a start once this says the run begins, not when a call returns:
    an incident queued here for a slot is still pending in the store's outbox, and a
    restart after a crash executes the run it had created (found by its tag)."""

    def __init__(self, limit: int = 4) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._running: set[asyncio.Task[None]] = set()
        self._confirm: Callable[[str], Awaitable[None]] | None = None

    def bind_confirm(self, confirm: Callable[[str], Awaitable[None]]) -> None:
        """Called by the intake: how to record that an incident's run begins."""
        self._confirm = confirm

    async def __call__(self, incident: Incident) -> None:
        run = await self._flow_run_of(incident)
        task = asyncio.create_task(self._run(incident, run), name=f"handle-incident {incident.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _flow_run_of(incident: Incident) -> FlowRun:
        """The incident's run: the one a crashed process created, else a new one.

        Tagged with the incident's id and creation time (ids restart with a new store),
        so that a start retried after a crash finds it instead of making a second.
        """
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        from flows.lifecycle import handle_incident

        tag = f"stanch-start:{incident.id}@{incident.created_at.isoformat()}"
        async with get_client() as client:
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])), limit=1
            )
            if found:
                return found[0]
            return await client.create_flow_run(
                handle_incident,
                name=f"{incident.id} {incident.title}",
                parameters={"incident": incident.model_dump(mode="json")},
                tags=[tag],
            )

    async def _run(self, incident: Incident, run: FlowRun) -> None:
        # Imported here: Prefect must read PREFECT_API_URL after serve() has set it.
        from prefect.flow_engine import run_flow_async

        from flows.lifecycle import handle_incident

        async with self._slots:
            if self._confirm is not None:
                await self._confirm(incident.id)
            if run.state is not None and not (run.state.is_scheduled() or run.state.is_pending()):
                # It began before a crash: it exists once and is not run a second time.
                log.warning("incident %s: run %s was %s", incident.id, run.id, run.state.name)
                return
            state = await run_flow_async(
                handle_incident,
                flow_run=run,
                parameters={"incident": incident},
                return_type="state",
            )
        log.info("incident %s: flow run ended %s", incident.id, getattr(state, "name", state))

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
    from flows.detect import poll_alerts
    from flows.lifecycle import handle_incident
    from flows.sweep import sweep

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
