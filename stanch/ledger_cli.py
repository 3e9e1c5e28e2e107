"""``stanch ledger``: check the hash chain of the action ledger and read an incident's entries.

The flows modules are imported inside the commands so that ``stanch --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from flows.record import LedgerEntry, LedgerHead, VerifyReport

app = App(name="ledger", help="The tamper-evident record of executed actions and decisions.")

# soft_wrap: a 64-digit hash must stay on one line to be copied or compared by a script.
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def _store_url() -> str:
    from flows.settings import load_settings

    return load_settings().store_url


async def _verify(url: str, anchor: LedgerHead | None) -> VerifyReport:
    from flows.record import Ledger, open_store

    async with open_store(url) as store:
        return await Ledger(store).verify(anchor=anchor)


async def _entries(url: str, incident_id: str) -> list[LedgerEntry]:
    from flows.record import Ledger, open_store

    async with open_store(url) as store:
        return await Ledger(store).entries(incident_id)


@app.command
def verify(
    *,
    anchor: str | None = None,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """Walk the whole hash chain; exit 1 naming the first entry edited, deleted, moved
    or forged (chained on without the ledger key).

    Exit status: 0 intact; 1 broken (the first bad entry is named); 2 a bad --anchor.

    Args:
        anchor: SEQ:HASH from `stanch ledger anchor` or a report, kept outside
            the database, so that entries cut off the end are caught too, and entries
            written before entries carried MACs are vouched for.
        json_output: print the verification as JSON (ok, entries, head, where it broke).
    """
    from flows.record import LedgerHead

    expected = None
    if anchor is not None:
        try:
            expected = LedgerHead.parse(anchor)
        except ValueError as exc:
            err.print(f"--anchor: {exc}", markup=False)
            return 2
    report = asyncio.run(_verify(_store_url(), expected))
    if json_output:
        print(json.dumps({**report.model_dump(mode="json"), "message": report.message}, indent=2))
        return 0 if report.ok else 1
    if report.ok:
        out.print(report.message, markup=False)
        return 0
    err.print(report.message, markup=False)
    return 1


def _what(entry: LedgerEntry) -> str:
    """``edr.contain_host``, ``decision APR-…`` or ``case close``."""
    from flows.record import EntryKind

    if entry.kind == EntryKind.CASE:
        return f"case {entry.verb}"
    return entry.action or f"decision {entry.approval_id}"


async def _head(url: str) -> LedgerHead:
    from flows.record import Ledger, open_store

    async with open_store(url) as store:
        return await Ledger(store).head()


@app.command
def anchor() -> int:
    """Print the ledger's head, ``<seq>:<sha256>``, to keep outside the database.

    Keep it where whoever can write to the store cannot (a ticket, a WORM bucket, a
    signed email); ``stanch ledger verify --anchor <it>`` later proves that nothing up to
    it was rewritten and nothing was cut off the end. Each incident report carries one.
    """
    out.print(str(asyncio.run(_head(_store_url()))), markup=False)
    return 0


@app.command
def show(
    incident: str,
    /,
    *,
    json_output: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """List an incident's ledger entries, oldest first.

    Exit status: 0 listed; 2 no entries for that incident id.

    Args:
        incident: the incident id (``INC-…``).
        json_output: print the entries as JSON, exactly as they are hashed.
    """
    entries = asyncio.run(_entries(_store_url(), incident))
    if not entries:
        err.print(f"no ledger entries for {incident}", markup=False)
        return 2
    if json_output:
        print(json.dumps([e.to_json() for e in entries], indent=2, ensure_ascii=False))
        return 0
    table = Table(
        "seq",
        "recorded (UTC)",
        "action / decision / case",
        "target",
        "status",
        "by",
        "vendor request",
        "undo with",
        "entry hash",
        title=f"Ledger of {incident}",
    )
    for e in entries:
        table.add_row(
            str(e.seq),
            e.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            _what(e),
            e.target_label or e.target or "",
            e.status,
            ", ".join(e.approvers),
            e.vendor_request_id or "",
            e.inverse_action or "",
            e.entry_hash[:16],
        )
    # Piped output has no terminal width: Rich would squeeze the table into 80 columns and
    # cut ids short, so a pipe or a file gets full rows.
    console = out if out.is_terminal else Console(width=240, highlight=False)
    console.print(table)
    return 0
