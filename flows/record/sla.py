"""Service levels: each clock's deadline from the tenant's targets, and how it stands.

A clock with a target is ``met`` when it was reached in time, ``breached`` when it was
reached late, is still unreached past its deadline, or the sweep recorded its breach,
``pending`` before its deadline, and ``n/a`` when the case was closed in time without it
(a false positive needs no containment).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from flows.models import CaseStatus
from flows.policy import Sla
from flows.record.metrics import IncidentClocks

SLA_CLOCKS: tuple[str, ...] = ("acknowledge", "contain", "resolve")
"""The clocks a tenant can set targets for, in the order they are reached."""

SlaState = Literal["met", "breached", "pending", "n/a"]


class SlaClock(BaseModel):
    """Where one clock of one incident stands against its target.

    Attributes:
        clock: ``acknowledge``, ``contain`` or ``resolve``.
        target_seconds: the target, from the first alert.
        deadline: first alert + target.
        warn_at: when the sweep warns (``deadline - warn_before``).
        state: ``met``, ``breached``, ``pending`` or ``n/a``.
        elapsed: the clock's value when it was reached, else ``None``.
    """

    model_config = ConfigDict(frozen=True)

    clock: str
    target_seconds: float
    deadline: datetime
    warn_at: datetime
    state: SlaState
    elapsed: float | None = None


def sla_clocks(
    clocks: IncidentClocks,
    sla: Sla,
    *,
    now: datetime,
    recorded_breaches: Collection[str] = (),
) -> list[SlaClock]:
    """How each clock with a target stands for one incident at ``now``.

    Args:
        clocks: the incident's clocks (from :func:`flows.record.clocks_of`).
        sla: the tenant's service levels.
        now: the time to judge pending clocks against.
        recorded_breaches: clocks whose breach the sweep already recorded.
    """
    targets = next(
        (t for severity, t in sla.targets.items() if severity.name.lower() == clocks.severity),
        None,
    )
    if targets is None or clocks.first_seen is None:
        return []
    origin = clocks.first_seen
    resolved = clocks.clocks.get("resolve")
    closed_at = (
        origin + timedelta(seconds=resolved)
        if clocks.status == CaseStatus.CLOSED and resolved is not None
        else None
    )
    found: list[SlaClock] = []
    for name in SLA_CLOCKS:
        target: timedelta | None = getattr(targets, name)
        if target is None:
            continue
        deadline = origin + target
        reached = clocks.clocks.get(name)
        state: SlaState
        if name in recorded_breaches:
            # The sweep saw the deadline pass unmet: whatever happened after is late.
            state = "breached"
        elif reached is not None:
            state = "met" if reached <= target.total_seconds() else "breached"
        elif closed_at is not None:
            state = "n/a" if closed_at <= deadline else "breached"
        else:
            state = "breached" if now >= deadline else "pending"
        found.append(
            SlaClock(
                clock=name,
                target_seconds=target.total_seconds(),
                deadline=deadline,
                warn_at=deadline - sla.warn_before,
                state=state,
                elapsed=reached,
            )
        )
    return found


def sla_attainment(
    clocks: Iterable[IncidentClocks],
    sla_for: Callable[[str], Sla],
    *,
    now: datetime,
    breaches: Mapping[str, Collection[str]] | None = None,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Per tenant, severity and clock: how many incidents met, breached, are pending or
    did not need the target, and the attainment (met / (met + breached), ``None`` when
    nothing was judged yet).

    Args:
        clocks: the incidents' clocks.
        sla_for: each tenant's service levels.
        now: the time to judge pending clocks against.
        breaches: per incident, the clocks whose breach the sweep recorded.
    """
    counts: dict[str, dict[str, dict[str, dict[str, int]]]] = defaultdict(lambda: defaultdict(dict))
    recorded = breaches or {}
    for item in clocks:
        for state in sla_clocks(
            item,
            sla_for(item.tenant),
            now=now,
            recorded_breaches=recorded.get(item.incident_id, ()),
        ):
            tally = counts[item.tenant][item.severity].setdefault(
                state.clock, {"met": 0, "breached": 0, "pending": 0, "n/a": 0}
            )
            tally[state.state] += 1
    result: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for tenant, severities in sorted(counts.items()):
        result[tenant] = {}
        for severity, per_clock in sorted(severities.items()):
            result[tenant][severity] = {}
            for name in SLA_CLOCKS:
                if name not in per_clock:
                    continue
                tally = per_clock[name]
                judged = tally["met"] + tally["breached"]
                result[tenant][severity][name] = {
                    **tally,
                    "attainment": round(tally["met"] / judged, 3) if judged else None,
                }
    return result
