"""The incident clocks, computed from recorded stage transitions and decisions.

Seconds from the first alert to each milestone: detection (the incident exists),
acknowledgement (the first human decision), containment (the contain stage finished)
and resolution (the remediate stage finished).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flows.models import Incident, Stage
from flows.store import StageEventRow


def _aware(at: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything the store writes is UTC.
    from datetime import UTC

    return at if at.tzinfo else at.replace(tzinfo=UTC)


def compute_clocks(
    incident: Incident, events: Sequence[StageEventRow], decisions: Sequence[dict[str, Any]]
) -> dict[str, float | None]:
    """Seconds from the first alert to detect, acknowledge, contain and resolve."""
    origin = incident.first_seen

    def since(at: datetime | None) -> float | None:
        return None if at is None else round((_aware(at) - origin).total_seconds(), 3)

    def finished(stage: Stage) -> datetime | None:
        done = [e.at for e in events if e.stage == stage.value and e.event == "completed"]
        return done[-1] if done else None

    human = [
        datetime.fromisoformat(d["decided_at"])
        for d in decisions
        if d.get("status") in ("approved", "denied", "partial")
    ]
    return {
        "detect": since(incident.created_at),
        "acknowledge": since(min(human)) if human else None,
        "contain": since(finished(Stage.CONTAIN)),
        "resolve": since(finished(Stage.REMEDIATE)),
    }
