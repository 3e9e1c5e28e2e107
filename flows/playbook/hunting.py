"""``edr.hunt`` in playbooks: typed arguments in, the ``hunt`` template variable out.

A step names the indicator by kind and value (``kind: sha256``, ``value: "{{ item }}"``)
and how far back to look (``since_days``); :func:`hunt_call` turns them into the
adapter's :class:`~integrations.hunting.Indicator` and start time, refusing a value that
is not of its kind's strict form. :func:`hunt_facts` gathers every hunt result so far
into ``hunt.hosts`` (each host once) and ``hunt.results``, so a later step can act on
what the hunts found (``for_each: "{{ hunt.hosts }}"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from integrations.hunting import Indicator, IndicatorError

HUNT_ACTION = "edr.hunt"
DEFAULT_SINCE_DAYS = 7
MAX_SINCE_DAYS = 90


class HuntArgumentError(ValueError):
    """An ``edr.hunt`` argument that is missing or not of its form; names the argument."""


def hunt_call(args: Mapping[str, Any], now: datetime | None = None) -> tuple[Indicator, datetime]:
    """The adapter's ``(indicator, since)`` from a step's ``kind``, ``value``, ``since_days``.

    Raises:
        HuntArgumentError: an argument is missing, of the wrong kind, or out of range.
    """
    kind, value = args.get("kind"), args.get("value")
    if not isinstance(kind, str) or not isinstance(value, str):
        raise HuntArgumentError("args.kind and args.value must be strings")
    try:
        indicator = Indicator.of(kind, value)
    except IndicatorError as exc:
        raise HuntArgumentError(f"args.value: {exc}") from exc
    days = args.get("since_days", DEFAULT_SINCE_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_SINCE_DAYS:
        raise HuntArgumentError(f"args.since_days must be a whole number 1..{MAX_SINCE_DAYS}")
    return indicator, (now or datetime.now(UTC)) - timedelta(days=days)


def _is_hunt(value: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and {"indicator", "hosts", "vendor"} <= value.keys()


def hunt_facts(steps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"hosts": [...], "results": [...]}`` from every hunt result in ``steps``.

    A host found by several hunts appears once, with every indicator it was seen with;
    each host reads like a found host (``id``, ``hostname``) so the containment steps
    written for ``steps.hosts.result`` take it as it is.
    """
    results: list[dict[str, Any]] = []
    for record in steps.values():
        found = record.get("result")
        for value in found if isinstance(found, list) else [found]:
            if _is_hunt(value):
                results.append(value)
    hosts: dict[str, dict[str, Any]] = {}
    for result in results:
        indicator = result["indicator"]
        label = f"{indicator.get('kind')}:{indicator.get('value')}"
        for host in result.get("hosts") or []:
            entry = hosts.setdefault(
                str(host["host_id"]),
                {
                    "id": str(host["host_id"]),
                    "hostname": host.get("hostname") or str(host["host_id"]),
                    "vendor": result.get("vendor"),
                    "first_seen": host.get("first_seen"),
                    "last_seen": host.get("last_seen"),
                    "indicators": [],
                },
            )
            if label not in entry["indicators"]:
                entry["indicators"].append(label)
    return {"hosts": list(hosts.values()), "results": results}


def hunt_summary(results: list[Any]) -> str:
    """One line per hunt step: each indicator, on how many hosts, and any incompleteness."""
    parts = []
    for result in results:
        if not _is_hunt(result):
            continue
        indicator = result["indicator"]
        value = str(indicator.get("value"))
        shown = f"{value[:16]}…" if len(value) > 16 else value
        text = f"{indicator.get('kind')} {shown} on {len(result['hosts'])} host(s)"
        if not result.get("complete", True):
            text += f" (incomplete: {result.get('note')})"
        parts.append(text)
    return "hunted " + "; ".join(parts) if parts else "hunted nothing"
