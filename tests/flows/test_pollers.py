"""The detection poller: a durable cursor, nothing missed, nothing ingested twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.detect import poll_alerts
from flows.wiring import default_lab

pytestmark = pytest.mark.usefixtures("prefect_server")

SAMPLES = Path(__file__).resolve().parents[1] / "vendor_specs" / "samples" / "crowdstrike"


def crowdstrike_alert(n: int, minutes_ago: float) -> dict[str, Any]:
    """The documented sample alert, renamed and moved to a recent time."""
    sample = json.loads((SAMPLES / "alerts_v2_entities_response.json").read_text())
    alert: dict[str, Any] = sample["resources"][0]
    when = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
    alert["composite_id"] = f"{alert['composite_id']}-poll-{n}"
    alert["created_timestamp"] = alert["timestamp"] = when
    return alert


async def test_polls_resume_from_the_cursor_without_double_ingest() -> None:
    """Given CrowdStrike holding two recent alerts,
    When the poller runs, runs again, and runs once more after a third alert arrives,
    Then the first run ingests both, the second (re-reading its overlap window) ingests
    none twice, and the third ingests only the new one."""
    default_lab().reset()
    sim = default_lab().simulator("crowdstrike")
    sim.add_alert(crowdstrike_alert(1, minutes_ago=10))  # type: ignore[attr-defined]
    sim.add_alert(crowdstrike_alert(2, minutes_ago=3))  # type: ignore[attr-defined]

    first = await poll_alerts("crowdstrike", "poll-test", start="none")
    second = await poll_alerts("crowdstrike", "poll-test", start="none")
    sim.add_alert(crowdstrike_alert(3, minutes_ago=0))  # type: ignore[attr-defined]
    third = await poll_alerts("crowdstrike", "poll-test", start="none")

    assert (first["fetched"], first["accepted"], first["duplicates"]) == (2, 2, 0)
    assert first["new_incidents"] == 1  # same host: one incident, not two
    assert second["accepted"] == 0 and second["duplicates"] == second["fetched"]
    assert datetime.fromisoformat(second["since"]) < datetime.fromisoformat(first["cursor"])
    assert third["accepted"] == 1
    assert third["new_incidents"] == 0  # joined the open incident on the same host


async def test_a_source_without_alerts_is_refused() -> None:
    """Given a firewall (no AlertSource), When polled, Then the run fails naming it."""
    from flows.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="fortigate is not an alert source"):
        await poll_alerts("fortigate", "poll-test", start="none")
