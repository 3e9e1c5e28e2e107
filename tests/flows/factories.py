"""Builders shared by the flow tests: the demo's alerts and incidents made of them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flows.models import ActionPlan, Incident, Stage
from integrations.capabilities import Capability
from stanch.demo import scenario_alerts


def incident(number: int = 1, *, tenant: str = "demo", **overrides: Any) -> Incident:
    """The demo incident: a ransomware alert and an impossible-travel sign-in."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": f"INC-{now:%Y%m%d}-{number:04d}",
        "tenant": tenant,
        "title": "ransomware on WS-0042",
        "created_at": now,
        "alerts": scenario_alerts(now, edr="crowdstrike", identity="okta"),
    }
    fields.update(overrides)
    return Incident(**fields)


def plan(**overrides: Any) -> ActionPlan:
    """A containment plan for one host."""
    fields: dict[str, Any] = {
        "tenant": "demo",
        "incident_id": "INC-20261121-0007",
        "capability": Capability.EDR,
        "verb": "contain_host",
        "target": "aid-123",
        "target_label": "WS-0042",
        "parameters": {"reason": "stanch INC-20261121-0007"},
        "stage": Stage.CONTAIN,
    }
    fields.update(overrides)
    return ActionPlan(**fields)
