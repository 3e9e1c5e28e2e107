"""Defender for Endpoint as an EDR: machines, isolation via machine actions, indicators."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from integrations.capabilities import ActionReceipt, Containment, Host
from integrations.defender.client import VENDOR, DefenderClient, describe, retry_after
from integrations.defender.hunting import hunt_query
from integrations.errors import (
    NotFoundError,
    RejectedError,
    UnsupportedError,
    VendorUnavailable,
)
from integrations.http import send
from integrations.hunting import HostSighting, HuntResult, Indicator

IsolationType = Literal["Full", "Selective", "UnManagedDevice"]
Sleep = Callable[[float], Awaitable[None]]

IN_FLIGHT = frozenset({"Pending", "InProgress"})
"""Machine action statuses that are not final."""

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
_PAGE = 100
_DEFAULT_POLL_SECONDS = 2.0
_DEFAULT_ACTION_TIMEOUT = 120.0


def odata_string(value: str) -> str:
    """``value`` as an OData string literal: quoted, with embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _action_time(action: dict[str, Any]) -> datetime:
    return _parse_time(action.get("creationDateTimeUtc")) or _EPOCH


class DefenderEDR:
    """The EDR capability on Microsoft Defender for Endpoint.

    Isolation is asynchronous: MDE answers with a machine action that this adapter polls
    until it is final or ``action_timeout_seconds`` pass. MDE has no isolation flag on the
    machine, so containment is read from the latest Isolate/Unisolate action.

    Args:
        client: from :func:`integrations.defender.client.connect`.
        isolation_type: ``Full``, ``Selective`` (Outlook/Teams keep working) or
            ``UnManagedDevice``.
        poll_seconds: pause between polls; defaults to the client's settings.
        action_timeout_seconds: polling budget; defaults to the client's settings.
        sleep: awaited between polls (injectable for tests).
    """

    vendor = VENDOR

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        isolation_type: IsolationType = "Full",
        poll_seconds: float | None = None,
        action_timeout_seconds: float | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._client = client
        self._isolation_type = isolation_type
        if isinstance(client, DefenderClient):
            default_poll, default_timeout = (
                client.action_poll_seconds,
                client.action_timeout_seconds,
            )
        else:
            default_poll, default_timeout = _DEFAULT_POLL_SECONDS, _DEFAULT_ACTION_TIMEOUT
        self._poll_seconds = default_poll if poll_seconds is None else poll_seconds
        self._action_timeout = (
            default_timeout if action_timeout_seconds is None else action_timeout_seconds
        )
        self._sleep = sleep

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await send(
            self._client,
            method,
            url,
            vendor=VENDOR,
            retry_after=retry_after,
            describe=describe,
            # "Action is already in progress": a refusal in the machine's current state.
            conflict_codes=("ActiveRequestAlreadyExists",),
            **kwargs,
        )

    # Reads ------------------------------------------------------------------------------
    async def find_host(self, hostname: str) -> Host | None:
        """The machine whose DNS name is ``hostname``, or ``None``.

        Vendor API: GET /api/machines?$filter=computerDnsName eq '<name>'

        MDE keeps one record per onboarding, so a re-imaged host can appear twice; the
        most recently seen record wins.
        """
        # MDE reports computerDnsName in lower case; the documented example filters so.
        literal = odata_string(hostname.strip().lower())
        try:
            response = await self._send(
                "GET", "/api/machines", params={"$filter": f"computerDnsName eq {literal}"}
            )
        except NotFoundError:
            # Documented: 404 when the tenant has no recent machines at all.
            return None
        machines = _values(response)
        if not machines:
            return None
        best = max(machines, key=lambda m: _parse_time(m.get("lastSeen")) or _EPOCH)
        return await self._host(best)

    async def get_host(self, host_id: str) -> Host:
        """The machine ``host_id`` with its containment state.

        Vendor API: GET /api/machines/{id}, GET /api/machineactions?$filter=machineId eq ...

        Raises:
            NotFoundError: no such machine.
        """
        response = await self._send("GET", f"/api/machines/{host_id}")
        return await self._host(_object(response))

    async def hunt(self, indicator: Indicator, *, since: datetime) -> HuntResult:
        """The machines on which ``indicator`` was seen since ``since``, with times.

        One advanced-hunting query (file events for a hash, network events for an
        address or domain), built by :func:`integrations.defender.hunting.hunt_query`
        from the validated indicator. MDE keeps 30 days: an older ``since`` is
        answered from what it has.

        Vendor API: POST /api/advancedqueries/run

        Raises:
            IntegrationError: the vendor call failed.
        """
        response = await self._send(
            "POST", "/api/advancedqueries/run", json={"Query": hunt_query(indicator, since)}
        )
        rows = _object(response).get("Results")
        if not isinstance(rows, list):
            raise VendorUnavailable("advanced query answer lacks Results[]", vendor=VENDOR)
        hosts = [
            HostSighting(
                host_id=str(row["DeviceId"]),
                hostname=str(row.get("DeviceName") or row["DeviceId"]),
                first_seen=_parse_time(row.get("FirstSeen")),
                last_seen=_parse_time(row.get("LastSeen")),
            )
            for row in rows
            if isinstance(row, dict) and row.get("DeviceId")
        ]
        return HuntResult(indicator=indicator, vendor=VENDOR, since=since, hosts=hosts)

    async def _host(self, machine: dict[str, Any]) -> Host:
        machine_id = str(machine["id"])
        containment, _ = await self._containment(machine_id)
        return Host(
            id=machine_id,
            hostname=str(machine.get("computerDnsName") or machine_id),
            vendor=VENDOR,
            platform=machine.get("osPlatform"),
            os_version=machine.get("version") or machine.get("osBuild"),
            local_ip=machine.get("lastIpAddress"),
            external_ip=machine.get("lastExternalIpAddress"),
            last_seen=_parse_time(machine.get("lastSeen")),
            containment=containment,
        )

    async def _actions(self, machine_id: str, action_type: str) -> list[dict[str, Any]]:
        """Every machine action of one type for a machine, oldest first.

        Vendor API: GET /api/machineactions?$filter=machineId eq '<id>' and type eq '<type>'
        """
        flt = f"machineId eq {odata_string(machine_id)} and type eq {odata_string(action_type)}"
        found: list[dict[str, Any]] = []
        skip = 0
        while True:
            response = await self._send(
                "GET",
                "/api/machineactions",
                params={"$filter": flt, "$top": str(_PAGE), "$skip": str(skip)},
            )
            page = _values(response)
            found.extend(page)
            if len(page) < _PAGE:
                break
            skip += _PAGE
        return sorted(found, key=_action_time)

    async def _containment(self, machine_id: str) -> tuple[Containment, dict[str, Any] | None]:
        """Containment from the latest Isolate/Unisolate action, and that action.

        A Failed, TimeOut or Cancelled action changed nothing, so the state comes from the
        latest action that is in flight or succeeded.
        """
        actions = await self._actions(machine_id, "Isolate")
        actions += await self._actions(machine_id, "Unisolate")
        for action in sorted(actions, key=_action_time, reverse=True):
            status, kind = action.get("status"), action.get("type")
            if status in IN_FLIGHT:
                pending = kind == "Isolate"
                return (
                    Containment.CONTAINMENT_PENDING if pending else Containment.RELEASE_PENDING,
                    action,
                )
            if status == "Succeeded":
                return (
                    Containment.CONTAINED if kind == "Isolate" else Containment.NORMAL,
                    action,
                )
        return Containment.NORMAL, None

    # Isolation --------------------------------------------------------------------------
    async def contain_host(self, host_id: str, *, reason: str) -> ActionReceipt:
        """Isolate a machine from the network and wait for the action to finish.

        Vendor API: POST /api/machines/{id}/isolate (then GET /api/machineactions/{id})

        Idempotent: a machine already isolated gives ``changed=False``; an isolation
        already in flight (ours or another analyst's) is polled rather than repeated,
        because a second isolate can complete out of order.

        Returns:
            The receipt; ``state`` is ``contained`` on success, ``containment_pending`` if
            the action did not finish within the polling budget, or the action's final
            status in lower case (``failed``, ``cancelled``, ``timeout``).
        """
        return await self._isolation(
            host_id,
            verb="contain_host",
            action_type="Isolate",
            path=f"/api/machines/{host_id}/isolate",
            body={"Comment": reason, "IsolationType": self._isolation_type},
        )

    async def release_host(self, host_id: str, *, reason: str) -> ActionReceipt:
        """Release a machine from isolation and wait for the action to finish.

        Vendor API: POST /api/machines/{id}/unisolate (then GET /api/machineactions/{id})

        Returns:
            The receipt; ``state`` is ``normal`` on success, ``release_pending`` if still
            running, or the action's final status in lower case.
        """
        return await self._isolation(
            host_id,
            verb="release_host",
            action_type="Unisolate",
            path=f"/api/machines/{host_id}/unisolate",
            body={"Comment": reason},
        )

    async def _isolation(
        self, host_id: str, *, verb: str, action_type: str, path: str, body: dict[str, str]
    ) -> ActionReceipt:
        done = Containment.CONTAINED if action_type == "Isolate" else Containment.NORMAL
        state, latest = await self._containment(host_id)
        if state is done:
            return self._receipt(verb, host_id, latest, changed=False)
        if latest is not None and latest.get("status") in IN_FLIGHT:
            action = await self._poll(latest)
            if latest.get("type") == action_type:
                return self._receipt(verb, host_id, action, changed=False)
            # The opposite action was in flight; wait it out so the two cannot finish in
            # the wrong order, then decide afresh.
            state, latest = await self._containment(host_id)
            if state is done:
                return self._receipt(verb, host_id, latest, changed=False)
        try:
            response = await self._send("POST", path, json=body, ok=(200, 201))
        except RejectedError as exc:
            if exc.vendor_code != "ActiveRequestAlreadyExists":
                raise
            # Someone requested the same action between our read and our write: adopt it.
            _, latest = await self._containment(host_id)
            if latest is None or latest.get("status") not in IN_FLIGHT:
                raise
            action = await self._poll(latest)
            return self._receipt(verb, host_id, action, changed=False)
        created = _object(response)
        # MDE may answer a duplicate with the pending action instead of a 400: one whose
        # comment is not ours is someone else's request, adopted rather than claimed.
        ours = created.get("requestorComment") in (None, body.get("Comment"))
        action = await self._poll(created)
        return self._receipt(verb, host_id, action, changed=ours)

    async def _poll(self, action: dict[str, Any]) -> dict[str, Any]:
        """Re-read a machine action until it is final or the polling budget is spent.

        Vendor API: GET /api/machineactions/{id}
        """
        deadline = time.monotonic() + self._action_timeout
        while action.get("status") in IN_FLIGHT and time.monotonic() < deadline:
            await self._sleep(self._poll_seconds)
            response = await self._send("GET", f"/api/machineactions/{action['id']}")
            action = _object(response)
        return action

    def _receipt(
        self, verb: str, target: str, action: dict[str, Any] | None, *, changed: bool
    ) -> ActionReceipt:
        if action is None:
            # Only reached for release of a never-isolated machine.
            return ActionReceipt(
                verb=verb, target=target, vendor=VENDOR, changed=False, state=Containment.NORMAL
            )
        status = str(action.get("status"))
        kind = action.get("type")
        if status == "Succeeded":
            state = {
                "Isolate": Containment.CONTAINED.value,
                "Unisolate": Containment.NORMAL.value,
            }.get(str(kind), "succeeded")
        elif status in IN_FLIGHT:
            state = {
                "Isolate": Containment.CONTAINMENT_PENDING.value,
                "Unisolate": Containment.RELEASE_PENDING.value,
            }.get(str(kind), "pending")
        else:
            state = status.lower()
            changed = False
        return ActionReceipt(
            verb=verb,
            target=target,
            vendor=VENDOR,
            changed=changed,
            state=state,
            vendor_request_id=str(action.get("id")),
            detail={"action_type": str(kind), "action_status": status},
        )

    # Indicators -------------------------------------------------------------------------
    async def _indicators(self, sha256: str) -> list[dict[str, Any]]:
        """Vendor API: GET /api/indicators?$filter=indicatorValue eq '<hash>' and ..."""
        flt = f"indicatorValue eq {odata_string(sha256)} and indicatorType eq 'FileSha256'"
        response = await self._send("GET", "/api/indicators", params={"$filter": flt})
        return _values(response)

    async def block_hash(self, sha256: str, *, reason: str) -> ActionReceipt:
        """Block a file by SHA-256 tenant-wide and remediate it where found.

        Vendor API: POST /api/indicators (``indicatorType: FileSha256``,
        ``action: BlockAndRemediate``)

        Idempotent: an existing BlockAndRemediate indicator gives ``changed=False``.
        """
        value = _sha256(sha256)
        for indicator in await self._indicators(value):
            if indicator.get("action") == "BlockAndRemediate":
                return ActionReceipt(
                    verb="block_hash",
                    target=value,
                    vendor=VENDOR,
                    changed=False,
                    state="blocked",
                    vendor_request_id=str(indicator.get("id")),
                )
        body = {
            "indicatorValue": value,
            "indicatorType": "FileSha256",
            "action": "BlockAndRemediate",
            "title": f"stanch: block {value[:12]}",
            "description": reason,
            "severity": "High",
            "generateAlert": True,
        }
        response = await self._send("POST", "/api/indicators", json=body, ok=(200, 201))
        created = _object(response)
        return ActionReceipt(
            verb="block_hash",
            target=value,
            vendor=VENDOR,
            changed=True,
            state="blocked",
            vendor_request_id=str(created.get("id")),
        )

    async def unblock_hash(self, sha256: str) -> ActionReceipt:
        """Remove every SHA-256 indicator for the hash.

        Vendor API: DELETE /api/indicators/{id}

        Idempotent: no indicator gives ``changed=False``.
        """
        value = _sha256(sha256)
        deleted: list[str] = []
        for indicator in await self._indicators(value):
            indicator_id = str(indicator.get("id"))
            try:
                await self._send("DELETE", f"/api/indicators/{indicator_id}", ok=(200, 204))
            except NotFoundError:
                continue  # removed by someone else meanwhile: the goal is met
            deleted.append(indicator_id)
        return ActionReceipt(
            verb="unblock_hash",
            target=value,
            vendor=VENDOR,
            changed=bool(deleted),
            state="unblocked",
            vendor_request_id=deleted[0] if deleted else None,
            detail={"deleted": ",".join(deleted)} if deleted else {},
        )

    # Optional response actions ----------------------------------------------------------
    async def quarantine_file(self, host_id: str, sha1: str, *, reason: str) -> ActionReceipt:
        """Stop running instances of a file on one machine and quarantine it.

        Vendor API: POST /api/machines/{id}/StopAndQuarantineFile

        Args:
            host_id: the machine id.
            sha1: the file's SHA-1; the API accepts no other hash type.
            reason: the action comment.

        Raises:
            UnsupportedError: a SHA-256 was given (MDE quarantines by SHA-1 only).
        """
        if _SHA256.match(sha1):
            raise UnsupportedError(
                "StopAndQuarantineFile accepts SHA-1 only, not SHA-256", vendor=VENDOR
            )
        if not _SHA1.match(sha1):
            raise RejectedError(f"not a SHA-1: {sha1!r}", vendor=VENDOR)
        path = f"/api/machines/{host_id}/StopAndQuarantineFile"
        body = {"Comment": reason, "Sha1": sha1.lower()}
        try:
            response = await self._send("POST", path, json=body, ok=(200, 201))
        except RejectedError as exc:
            if exc.vendor_code != "ActiveRequestAlreadyExists":
                raise
            pending = [
                a
                for a in await self._actions(host_id, "StopAndQuarantineFile")
                if a.get("status") in IN_FLIGHT
            ]
            if not pending:
                raise
            action = await self._poll(pending[-1])
            return self._receipt("quarantine_file", host_id, action, changed=False)
        action = await self._poll(_object(response))
        return self._receipt("quarantine_file", host_id, action, changed=True)

    async def run_scan(
        self, host_id: str, *, full: bool = False, reason: str = "stanch: antivirus scan"
    ) -> ActionReceipt:
        """Start a Defender Antivirus scan; does not wait for it (findings arrive as alerts).

        Vendor API: POST /api/machines/{id}/runAntiVirusScan
        """
        body = {"Comment": reason, "ScanType": "Full" if full else "Quick"}
        path = f"/api/machines/{host_id}/runAntiVirusScan"
        changed = True
        try:
            response = await self._send("POST", path, json=body, ok=(200, 201))
            action = _object(response)
        except RejectedError as exc:
            if exc.vendor_code != "ActiveRequestAlreadyExists":
                raise
            pending = [
                a
                for a in await self._actions(host_id, "RunAntiVirusScan")
                if a.get("status") in IN_FLIGHT
            ]
            if not pending:
                raise
            action, changed = pending[-1], False
        status = str(action.get("status"))
        return ActionReceipt(
            verb="run_scan",
            target=host_id,
            vendor=VENDOR,
            changed=changed,
            state=status.lower(),
            vendor_request_id=str(action.get("id")),
            detail={"action_type": "RunAntiVirusScan", "action_status": status},
        )


def _sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise RejectedError(f"not a SHA-256: {value!r}", vendor=VENDOR)
    return value.lower()


def _object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise VendorUnavailable(
            "response is not JSON", vendor=VENDOR, status_code=response.status_code
        ) from exc
    if not isinstance(body, dict):
        raise VendorUnavailable(
            "response is not a JSON object", vendor=VENDOR, status_code=response.status_code
        )
    return body


def _values(response: httpx.Response) -> list[dict[str, Any]]:
    values = _object(response).get("value")
    if not isinstance(values, list):
        raise VendorUnavailable(
            "list response lacks value[]", vendor=VENDOR, status_code=response.status_code
        )
    return [v for v in values if isinstance(v, dict)]
