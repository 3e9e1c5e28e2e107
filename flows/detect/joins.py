"""Alerts that joined an incident after its flow run took its snapshot of it.

The intake links an alert that shares a host, a user or an indicator with an open incident
to that incident in the store (``alerts.incident_id``); it does not start another run. The
running ``handle-incident`` flow learns of such alerts by re-reading the store before each
stage that acts, so a second host the attacker reaches mid-incident is contained by the
same run, under the same approval rules. An incident merged into another (an alert
bridged them) is told the same way: its run ends without acting further.
"""

from __future__ import annotations

from sqlalchemy import select

from flows.detect.entities import fingerprint
from flows.models import Incident
from flows.record import AlertRow, CaseLinkRow, LinkKind, Store
from integrations.ocsf import DetectionFinding


async def joined_alerts(store: Store, incident: Incident) -> list[DetectionFinding]:
    """The incident's stored alerts that ``incident`` does not carry yet, oldest first.

    An alert counts as carried when one of ``incident.alerts`` has its fingerprint (the
    intake's identity of an alert, computed with the source the alert came in through).
    """
    query = (
        select(AlertRow.source, AlertRow.fingerprint, AlertRow.finding)
        .where(AlertRow.tenant == incident.tenant, AlertRow.incident_id == incident.id)
        .order_by(AlertRow.id)
    )
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    carried: dict[str, set[str]] = {}
    joined: list[DetectionFinding] = []
    for source, stored_fingerprint, finding in rows:
        if source not in carried:
            # The fingerprint depends on the source only for alerts without a vendor uid;
            # one pass over the incident's alerts per source keeps this linear.
            carried[source] = {fingerprint(source, a) for a in incident.alerts}
        if stored_fingerprint not in carried[source]:
            joined.append(DetectionFinding.model_validate(finding))
    return joined


async def merged_into(store: Store, incident: Incident) -> str | None:
    """The incident ``incident`` was merged into since its run began, or ``None``.

    Correlation merges an incident into an older one when an alert proves they are one
    attack; the merged incident's run then acts no further (the survivor's run takes in
    its alerts, as joined ones).
    """
    query = select(CaseLinkRow.linked_id).where(
        CaseLinkRow.tenant == incident.tenant,
        CaseLinkRow.incident_id == incident.id,
        CaseLinkRow.kind == LinkKind.MERGED_INTO.value,
    )
    async with store.engine.connect() as conn:
        survivor: str | None = (await conn.scalars(query)).first()
    return survivor
