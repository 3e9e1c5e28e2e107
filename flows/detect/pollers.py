"""Detection pollers: one ``poll-alerts`` flow run per source and schedule tick.

Each run reads the source's alerts since its durable cursor (less an overlap, because
vendors index alerts some time after they are created), feeds them to the same intake
as the webhooks (normalised, de-duplicated by fingerprint, correlated into incidents)
and only then moves the cursor. A crash before the cursor moves means the next run reads
the same window again, which de-duplication absorbs: nothing is missed and nothing is
ingested twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from prefect import flow, task
from prefect.deployments.flow_runs import arun_deployment
from prefect.logging import get_run_logger

from flows import wiring
from flows.detect.intake import Intake, StartIncident
from flows.errors import ConfigurationError
from flows.models import Incident, utcnow
from flows.record import open_store
from flows.settings import load_settings
from flows.tasks import RETRYING
from integrations.capabilities import AlertSource, Capability
from integrations.ocsf import DetectionFinding
from integrations.plugin import load_plugin

OVERLAP = timedelta(minutes=5)
HANDLE_INCIDENT_DEPLOYMENT = "handle-incident/handle-incident"


@task(name="alerts.fetch", task_run_name="{source}.fetch_alerts", **RETRYING)
async def fetch_alerts(
    adapter: AlertSource, source: str, since: datetime
) -> list[DetectionFinding]:
    """Pull the source's alerts created since ``since`` (one coarse task per poll)."""
    return await adapter.fetch_alerts(since)


async def _start_by_deployment(incident: Incident, deployment: str) -> None:
    # The poller runs on a worker; each incident becomes its own deployment run so a
    # long approval wait never holds up the next poll.
    await arun_deployment(
        deployment,
        parameters={"incident": incident.model_dump(mode="json")},
        timeout=0,
    )


async def _record_only(incident: Incident) -> None:
    get_run_logger().info("incident %s recorded (start=none)", incident.id)


@flow(name="poll-alerts", flow_run_name="poll {source}", log_prints=False)
async def poll_alerts(
    source: str,
    tenant: str | None = None,
    *,
    start: Literal["deployment", "none"] = "deployment",
    first_lookback_minutes: int = 60,
    incident_deployment: str = HANDLE_INCIDENT_DEPLOYMENT,
) -> dict[str, Any]:
    """Pull one source's new alerts into the intake pipeline.

    Args:
        source: the vendor whose alerts to pull (``crowdstrike``, ``okta`` ...).
        tenant: whose alerts they are (default: ``STANCH_TENANT``).
        start: ``deployment`` starts a ``handle-incident`` deployment run per new
            incident; ``none`` only records incidents.
        first_lookback_minutes: how far back the very first poll of a source reaches.
        incident_deployment: the ``handle-incident`` deployment new incidents start
            (``stanch serve`` names the one it serves).

    Returns:
        The intake's counts and the new cursor.
    """
    settings = load_settings()
    tenant = tenant or settings.tenant
    plugin = load_plugin(source)
    if Capability.ALERTS not in plugin.adapters:
        raise ConfigurationError(f"{source} is not an alert source")
    starter: StartIncident = (
        partial(_start_by_deployment, deployment=incident_deployment)
        if start == "deployment"
        else _record_only
    )
    polled_at = utcnow()
    async with open_store(settings.store_url) as store:
        intake = Intake(store, start_incident=starter)
        cursor = await intake.cursor(tenant, source)
        since = (
            datetime.fromisoformat(cursor) - OVERLAP
            if cursor
            else polled_at - timedelta(minutes=first_lookback_minutes)
        )
        async with wiring.vendor_client(
            plugin, settings, wiring.default_lab(), tenant=tenant
        ) as client:
            adapter: AlertSource = plugin.adapters[Capability.ALERTS](client)
            findings = await fetch_alerts(adapter, source, since)
        result = await intake.ingest(
            tenant, "ocsf", [f.model_dump(mode="json", exclude_none=True) for f in findings]
        )
        # Only after the batch is committed: a crash before this line re-reads the window.
        await intake.save_cursor(tenant, source, polled_at.isoformat())
    return {
        "source": source,
        "tenant": tenant,
        "since": since.isoformat(),
        "fetched": len(findings),
        **result.model_dump(
            mode="json", include={"accepted", "duplicates", "rejected", "new_incidents"}
        ),
        "cursor": polled_at.isoformat(),
    }
