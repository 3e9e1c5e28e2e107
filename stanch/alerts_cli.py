"""``stanch alerts rejected``: the alerts intake refused, with the field and the reason."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Table

from stanch.cli_support import OK, print_json

app = App(name="alerts", help="Alerts that reached stanch.")

# Payloads and reasons quote attacker-controlled alerts: no markup.
out = Console(soft_wrap=True, highlight=False, markup=False)


async def _rejected() -> list[dict[str, Any]]:
    from flows.record import open_store
    from flows.settings import load_settings

    async with open_store(load_settings().store_url) as store:
        return [
            {
                "id": row.id,
                "received_at": row.received_at.isoformat(),
                "source": row.source,
                "field": row.field,
                "reason": row.reason,
                "payload": row.payload,
            }
            for row in await store.dead_letters()
        ]


@app.command
def rejected(
    *,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """List the alerts that were rejected (kept for inspection), with the field and reason.

    Args:
        json_output: print JSON, payloads included, instead of a table.
    """
    rows = asyncio.run(_rejected())
    if json_output:
        print_json(rows)
        return OK
    if not rows:
        out.print("No alert was rejected.")
        return OK
    table = Table("id", "received (UTC)", "source", "field", "reason", "payload")
    for row in rows:
        payload = " ".join(row["payload"].split())
        table.add_row(
            str(row["id"]),
            row["received_at"][:19].replace("T", " "),
            row["source"],
            row["field"],
            row["reason"],
            payload if len(payload) <= 60 else payload[:59] + "…",
        )
    console = out if out.is_terminal else Console(width=240, highlight=False, markup=False)
    console.print(table)
    return OK
