"""Builders shared by the playbook tests: inline playbooks, incidents, a fake lookup."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.models import Incident
from flows.playbook import LoadedPlaybook, parse_playbook
from integrations.ocsf import DetectionFinding

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
INVALID = Path(__file__).resolve().parent / "invalid"

HEAD = """\
id: inline
version: 1
title: Inline test playbook
owner: soc-leads
trigger:
  min_severity: low
"""


def playbook(steps: str, *, head: str = HEAD) -> LoadedPlaybook:
    """A playbook from a ``steps:`` block written at column 0."""
    return parse_playbook(head + textwrap.dedent(steps))


def alert(
    *,
    uid: str = "a1",
    severity: int = 4,
    title: str = "Test alert",
    hostname: str | None = "WS-0001",
    user: str | None = "jdoe@acme.example",
    ips: tuple[str, ...] = (),
    vendor: str = "CrowdStrike",
    product: str = "Falcon Insight",
    types: tuple[str, ...] = (),
    attacks: tuple[tuple[str, str], ...] = (),
) -> DetectionFinding:
    """One OCSF finding with the entities named."""
    data: dict[str, Any] = {
        "class_uid": 2004,
        "category_uid": 2,
        "activity_id": 1,
        "type_uid": 200401,
        "severity_id": severity,
        "time": int(datetime(2025, 3, 14, 9, 0, tzinfo=UTC).timestamp() * 1000),
        "metadata": {"version": "1.8.0", "product": {"name": product, "vendor_name": vendor}},
        "finding_info": {
            "uid": uid,
            "title": title,
            "types": list(types),
            "attacks": [
                {"tactic": {"uid": tactic}, "technique": {"uid": technique}}
                for tactic, technique in attacks
            ],
        },
        "evidences": [{"dst_endpoint": {"ip": ip}} for ip in ips],
    }
    if hostname:
        data["device"] = {"type_id": 2, "hostname": hostname}
    if user:
        data["actor"] = {"user": {"name": user}}
    return DetectionFinding.model_validate(data)


def incident(*alerts: DetectionFinding, tenant: str = "demo") -> Incident:
    """An incident of ``alerts`` (one default alert if none)."""
    return Incident(
        id="INC-20250314-0001",
        tenant=tenant,
        title="test incident",
        alerts=list(alerts) or [alert()],
    )


class FakeLookup:
    """Answers lookups from a table and records every call."""

    def __init__(self, table: Mapping[tuple[str, str], Any] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, action: str, args: Mapping[str, Any]) -> Any:
        self.calls.append((action, dict(args)))
        key = next(iter(args.values()), "")
        return self.table.get((action, str(key)))


def host(name: str) -> dict[str, Any]:
    """An EDR host record as find_host returns it."""
    return {"id": f"id-{name}", "hostname": name, "vendor": "fake", "platform": "Windows"}


def user(login: str) -> dict[str, Any]:
    """An identity record as find_user returns it."""
    return {"id": f"uid-{login}", "login": login, "vendor": "fake", "status": "active"}
