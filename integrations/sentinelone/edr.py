"""SentinelOne as an EDR: agents, network quarantine, the hash blocklist, threat mitigation."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from integrations.capabilities import ActionReceipt, Containment, Host
from integrations.errors import (
    IntegrationError,
    NotFoundError,
    RejectedError,
    VendorUnavailable,
)
from integrations.http import send
from integrations.hunting import HostSighting, HuntResult, Indicator, IndicatorKind
from integrations.sentinelone.client import (
    API,
    VENDOR,
    SentinelOneClient,
    describe,
    retry_after,
)

OsType = Literal["windows", "macos", "linux", "windows_legacy"]
MitigationAction = Literal[
    "kill", "quarantine", "remediate", "rollback-remediation", "un-quarantine"
]

NETWORK_STATUS: dict[str, Containment] = {
    "connected": Containment.NORMAL,
    "disconnecting": Containment.CONTAINMENT_PENDING,
    "disconnected": Containment.CONTAINED,
    "connecting": Containment.RELEASE_PENDING,
}
"""Agent ``networkStatus`` to containment."""

_ID = re.compile(r"^[^,\s]+$")
_HASH = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_EPOCH = datetime.min.replace(tzinfo=UTC)
Sleep = Callable[[float], Awaitable[None]]

# [U] S1QL field names per indicator kind (Deep Visibility's classic query language).
_DV_FIELDS: dict[IndicatorKind, str] = {
    IndicatorKind.SHA256: "SHA256",
    IndicatorKind.MD5: "MD5",
    IndicatorKind.IPV4: "DstIP",
    IndicatorKind.DOMAIN: "DNSRequest",
}
_DV_SAFE = re.compile(r"^[0-9A-Za-z.\-]+$")
_DV_ENDED = frozenset({"FAILED", "FAILED_CLIENT", "QUERY_CANCELLED", "TIMED_OUT", "QUERY_EXPIRED"})
_DV_PAGE = 1000


def id_filter(ids: Sequence[str]) -> dict[str, list[str]]:
    """The ``filter`` of a dangerous bulk action, naming exactly ``ids``.

    S1 action filters select agents or threats: an empty filter selects every one in
    scope, and an id with a comma is read as several ids (array filters are CSV). Both
    are refused here, before anything is sent.

    Raises:
        RejectedError: ``ids`` is empty or holds a blank or comma-separated id.
    """
    if not ids:
        raise RejectedError(
            "refusing an empty id filter: it would act on every agent", vendor=VENDOR
        )
    for value in ids:
        if not isinstance(value, str) or not _ID.match(value):
            raise RejectedError(f"refusing id {value!r}: not a single S1 id", vendor=VENDOR)
    return {"ids": list(ids)}


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _dv_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hash(value: str) -> str:
    if not _HASH.match(value):
        raise RejectedError(f"not a SHA-1 or SHA-256: {value!r}", vendor=VENDOR)
    return value.lower()


class SentinelOneEDR:
    """The EDR capability on SentinelOne (API 2.1).

    Containment is S1 network quarantine (``disconnect``); the agent keeps talking to the
    console. It is asynchronous: ``disconnecting`` becomes ``disconnected`` when the agent
    acknowledges, so receipts report the pending state.

    Args:
        client: from :func:`integrations.sentinelone.client.connect`.
        blocklist_os_types: S1 blocklist items are per OS; a hash is blocked on each.
        hunt_poll_seconds: pause between polls of a Deep Visibility query; defaults to
            the client's settings.
        hunt_timeout_seconds: the bounded wait for a query; defaults to the client's.
        sleep: awaited between polls (injectable for tests).
    """

    vendor = VENDOR

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        blocklist_os_types: Sequence[OsType] = ("windows", "macos", "linux"),
        hunt_poll_seconds: float | None = None,
        hunt_timeout_seconds: float | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._client = client
        self._os_types = tuple(blocklist_os_types)
        poll, timeout = (
            (client.hunt_poll_seconds, client.hunt_timeout_seconds)
            if isinstance(client, SentinelOneClient)
            else (1.0, 60.0)
        )
        self._hunt_poll = poll if hunt_poll_seconds is None else hunt_poll_seconds
        self._hunt_timeout = timeout if hunt_timeout_seconds is None else hunt_timeout_seconds
        self._sleep = sleep

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await send(
            self._client,
            method,
            f"{API}{path}",
            vendor=VENDOR,
            retry_after=retry_after,
            describe=describe,
            **kwargs,
        )

    async def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise VendorUnavailable("response is not JSON", vendor=VENDOR) from exc
        if not isinstance(body, dict) or "data" not in body:
            raise VendorUnavailable("response lacks data", vendor=VENDOR)
        return body["data"]

    async def _affected(self, path: str, ids: Sequence[str], data: dict[str, Any]) -> int:
        body = {"filter": id_filter(ids), "data": data}
        result = await self._data("POST", path, json=body)
        if not isinstance(result, dict) or not isinstance(result.get("affected"), int):
            raise VendorUnavailable(f"{path} answer lacks data.affected", vendor=VENDOR)
        affected: int = result["affected"]
        return affected

    # Reads ------------------------------------------------------------------------------
    async def find_host(self, hostname: str) -> Host | None:
        """The agent whose computer name is ``hostname``, or ``None``.

        Vendor API: GET /web/api/v2.1/agents?computerName=<name>

        A reinstalled machine leaves decommissioned agents behind under the same name; an
        active, not decommissioned agent seen most recently wins.
        """
        wanted = hostname.strip()
        if not wanted:
            return None
        agents = await self._data("GET", "/agents", params={"computerName": wanted, "limit": "100"})
        # computerName is an exact filter, but Windows names compare case-insensitively.
        matches = [
            a
            for a in agents
            if isinstance(a, dict) and str(a.get("computerName", "")).lower() == wanted.lower()
        ]
        if not matches:
            return None
        best = max(
            matches,
            key=lambda a: (
                not a.get("isDecommissioned", False),
                bool(a.get("isActive")),
                _parse_time(a.get("lastActiveDate")) or _EPOCH,
            ),
        )
        return _host(best)

    async def _agent(self, host_id: str) -> dict[str, Any]:
        # Validate first: ids= with nothing in it is no filter at all and lists every agent.
        flt = id_filter([host_id])
        agents = await self._data("GET", "/agents", params={"ids": flt["ids"][0]})
        for agent in agents:
            if isinstance(agent, dict) and str(agent.get("id")) == host_id:
                return agent
        raise NotFoundError(f"agent {host_id} not found", vendor=VENDOR)

    async def get_host(self, host_id: str) -> Host:
        """The agent ``host_id`` with its containment state.

        Vendor API: GET /web/api/v2.1/agents?ids=<id>

        Raises:
            NotFoundError: no such agent.
        """
        return _host(await self._agent(host_id))

    # Hunting ----------------------------------------------------------------------------
    async def hunt(self, indicator: Indicator, *, since: datetime) -> HuntResult:
        """The agents on which ``indicator`` was seen since ``since``, with times.

        Deep Visibility is asynchronous: the query is created, its status polled every
        ``hunt_poll_seconds`` until ``FINISHED``, and its events read page by page
        (cursor). A query still running after ``hunt_timeout_seconds`` is cancelled and
        the result is incomplete, with a note; so is one the console ends otherwise.

        Vendor API: POST /web/api/v2.1/dv/init-query,
        GET /web/api/v2.1/dv/query-status?queryId=..., GET /web/api/v2.1/dv/events?queryId=...
        (POST /web/api/v2.1/dv/cancel-query on timeout)

        Raises:
            IntegrationError: a vendor call failed.
        """
        value = indicator.value
        if not _DV_SAFE.fullmatch(value):
            raise RejectedError("indicator value has characters S1QL cannot take", vendor=VENDOR)
        query = f'{_DV_FIELDS[indicator.kind]} = "{value}"'
        now = datetime.now(UTC)
        created = await self._data(
            "POST",
            "/dv/init-query",
            json={"query": query, "fromDate": _dv_iso(since), "toDate": _dv_iso(now)},
        )
        query_id = created.get("queryId") if isinstance(created, dict) else None
        if not isinstance(query_id, str) or not query_id:
            raise VendorUnavailable("init-query answer lacks data.queryId", vendor=VENDOR)
        state = await self._await_query(query_id)
        if state != "FINISHED":
            note = (
                f"Deep Visibility query did not finish within {self._hunt_timeout:g} s"
                if state == "RUNNING"
                else f"Deep Visibility query ended {state}"
            )
            return HuntResult(
                indicator=indicator, vendor=VENDOR, since=since, complete=False, note=note
            )
        return HuntResult(
            indicator=indicator,
            vendor=VENDOR,
            since=since,
            hosts=await self._dv_hosts(query_id),
        )

    async def _await_query(self, query_id: str) -> str:
        """Poll until the query leaves RUNNING or the bounded wait is over (then cancel)."""
        deadline = time.monotonic() + self._hunt_timeout
        while True:
            status = await self._data("GET", "/dv/query-status", params={"queryId": query_id})
            state = str(status.get("responseState")) if isinstance(status, dict) else ""
            if state == "FINISHED" or state in _DV_ENDED:
                return state
            if time.monotonic() >= deadline:
                # Free the console's query slot; a failed cancel changes nothing here.
                with contextlib.suppress(IntegrationError):
                    await self._data("POST", "/dv/cancel-query", json={"queryId": query_id})
                return "RUNNING"
            await self._sleep(self._hunt_poll)

    async def _dv_hosts(self, query_id: str) -> list[HostSighting]:
        times: dict[str, tuple[str, list[datetime]]] = {}
        cursor: str | None = None
        while True:
            params = {"queryId": query_id, "limit": str(_DV_PAGE)}
            if cursor:
                params["cursor"] = cursor
            response = await self._send("GET", "/dv/events", params=params)
            body = response.json()
            events = body.get("data") if isinstance(body, dict) else None
            if not isinstance(events, list):
                raise VendorUnavailable("dv/events answer lacks data[]", vendor=VENDOR)
            for event in events:
                if not isinstance(event, dict) or not event.get("agentId"):
                    continue
                agent = str(event["agentId"])
                _, seen = times.setdefault(agent, (str(event.get("agentName") or agent), []))
                moment = _parse_time(event.get("createdAt"))
                if moment is not None:
                    seen.append(moment)
            pagination = body.get("pagination")
            cursor = pagination.get("nextCursor") if isinstance(pagination, dict) else None
            if not cursor:
                break
        return [
            HostSighting(
                host_id=agent,
                hostname=name,
                first_seen=min(seen) if seen else None,
                last_seen=max(seen) if seen else None,
            )
            for agent, (name, seen) in times.items()
        ]

    # Containment ------------------------------------------------------------------------
    async def contain_host(self, host_id: str, *, reason: str) -> ActionReceipt:
        """Network-quarantine one agent.

        Vendor API: POST /web/api/v2.1/agents/actions/disconnect

        S1 does not fail on an agent already disconnected, so ``networkStatus`` is read
        first: ``disconnected`` or ``disconnecting`` gives ``changed=False``. ``reason`` is
        not sent; the API has no comment field.
        """
        return await self._network(host_id, "contain_host", "/agents/actions/disconnect")

    async def release_host(self, host_id: str, *, reason: str) -> ActionReceipt:
        """Reconnect one agent to the network.

        Vendor API: POST /web/api/v2.1/agents/actions/connect
        """
        return await self._network(host_id, "release_host", "/agents/actions/connect")

    async def _network(self, host_id: str, verb: str, path: str) -> ActionReceipt:
        contain = verb == "contain_host"
        done = (
            {Containment.CONTAINED, Containment.CONTAINMENT_PENDING}
            if contain
            else {Containment.NORMAL, Containment.RELEASE_PENDING}
        )
        agent = await self._agent(host_id)
        status = str(agent.get("networkStatus"))
        current = NETWORK_STATUS.get(status)
        if current in done:
            assert current is not None
            return self._receipt(verb, host_id, False, current, status)
        affected = await self._affected(path, [host_id], {})
        if affected == 0:
            raise NotFoundError(f"{path} matched no agent {host_id}", vendor=VENDOR)
        state = Containment.CONTAINMENT_PENDING if contain else Containment.RELEASE_PENDING
        return self._receipt(verb, host_id, True, state, status)

    @staticmethod
    def _receipt(
        verb: str, host_id: str, changed: bool, state: Containment, before: str
    ) -> ActionReceipt:
        return ActionReceipt(
            verb=verb,
            target=host_id,
            vendor=VENDOR,
            changed=changed,
            state=state,
            detail={"network_status_before": before},
        )

    # Blocklist --------------------------------------------------------------------------
    async def _blocklist(self, value: str) -> list[dict[str, Any]]:
        """Vendor API: GET /web/api/v2.1/restrictions?type=black_hash&value=<hash>&tenant=true"""
        items = await self._data(
            "GET",
            "/restrictions",
            params={"type": "black_hash", "value": value, "tenant": "true", "limit": "100"},
        )
        return [
            i for i in items if isinstance(i, dict) and str(i.get("value", "")).lower() == value
        ]

    async def block_hash(self, sha256: str, *, reason: str) -> ActionReceipt:
        """Add the hash to the tenant-wide blocklist for each configured OS.

        Vendor API: POST /web/api/v2.1/restrictions (``type: black_hash``)

        The S1 2.1 schema describes blocklist values as SHA-1; a SHA-1 is accepted here
        too, since S1 threats carry SHA-1. Idempotent: OS types already blocked are skipped.
        """
        value = _hash(sha256)
        existing = await self._blocklist(value)
        have = {str(i.get("osType")) for i in existing}
        created: list[str] = []
        for os_type in self._os_types:
            if os_type in have:
                continue
            body = {
                "data": {
                    "type": "black_hash",
                    "value": value,
                    "osType": os_type,
                    "description": reason,
                },
                "filter": {"tenant": True},
            }
            try:
                items = await self._data("POST", "/restrictions", json=body)
            except RejectedError as exc:
                if exc.status_code == 409:
                    continue  # added by someone else since our read: the goal is met
                raise
            created.extend(str(i.get("id")) for i in items if isinstance(i, dict))
        ids = created or [str(i.get("id")) for i in existing]
        return ActionReceipt(
            verb="block_hash",
            target=value,
            vendor=VENDOR,
            changed=bool(created),
            state="blocked",
            vendor_request_id=ids[0] if ids else None,
            detail={"ids": ",".join(ids)},
        )

    async def unblock_hash(self, sha256: str) -> ActionReceipt:
        """Remove every tenant-wide blocklist item for the hash.

        Vendor API: DELETE /web/api/v2.1/restrictions
        """
        value = _hash(sha256)
        ids = [str(i.get("id")) for i in await self._blocklist(value)]
        affected = 0
        if ids:
            body = {"data": {"ids": id_filter(ids)["ids"], "type": "black_hash"}}
            result = await self._data("DELETE", "/restrictions", json=body)
            affected = int(result.get("affected", 0)) if isinstance(result, dict) else 0
        return ActionReceipt(
            verb="unblock_hash",
            target=value,
            vendor=VENDOR,
            changed=affected > 0,
            state="unblocked",
            vendor_request_id=ids[0] if ids else None,
            detail={"ids": ",".join(ids)} if ids else {},
        )

    # Threat mitigation ------------------------------------------------------------------
    async def _threat_ids(self, host_id: str, file_hash: str) -> list[str]:
        """Vendor API: GET /web/api/v2.1/threats?agentIds=<id>&contentHashes=<hash>"""
        agent = id_filter([host_id])["ids"][0]
        threats = await self._data(
            "GET",
            "/threats",
            params={"agentIds": agent, "contentHashes": _hash(file_hash), "limit": "100"},
        )
        return [str(t["id"]) for t in threats if isinstance(t, dict) and t.get("id")]

    async def mitigate(
        self, host_id: str, file_hash: str, action: MitigationAction
    ) -> ActionReceipt:
        """Apply one mitigation to the threats S1 recorded for a file on one agent.

        Vendor API: POST /web/api/v2.1/threats/mitigate/{action}

        Raises:
            NotFoundError: S1 has no threat for that file on that agent.
        """
        ids = await self._threat_ids(host_id, file_hash)
        if not ids:
            raise NotFoundError(f"no threat for {file_hash} on agent {host_id}", vendor=VENDOR)
        affected = await self._affected(f"/threats/mitigate/{action}", ids, {})
        return ActionReceipt(
            verb=action,
            target=host_id,
            vendor=VENDOR,
            changed=affected > 0,
            state=action,
            vendor_request_id=ids[0],
            detail={"threat_ids": ",".join(ids), "affected": str(affected)},
        )

    async def quarantine_file(self, host_id: str, sha256: str, *, reason: str) -> ActionReceipt:
        """Quarantine a detected file on one agent (S1 acts on its threat record).

        Vendor API: POST /web/api/v2.1/threats/mitigate/quarantine
        """
        receipt = await self.mitigate(host_id, sha256, "quarantine")
        return receipt.model_copy(update={"verb": "quarantine_file", "state": "quarantined"})

    async def kill_process(self, host_id: str, sha256: str, *, reason: str) -> ActionReceipt:
        """Kill the processes of a detected file on one agent.

        Vendor API: POST /web/api/v2.1/threats/mitigate/kill
        """
        receipt = await self.mitigate(host_id, sha256, "kill")
        return receipt.model_copy(update={"verb": "kill_process", "state": "killed"})


def _host(agent: dict[str, Any]) -> Host:
    local_ip = None
    for interface in agent.get("networkInterfaces") or []:
        inet = interface.get("inet") if isinstance(interface, dict) else None
        if isinstance(inet, list) and inet:
            local_ip = str(inet[0])
            break
    os_name, revision = agent.get("osName"), agent.get("osRevision")
    return Host(
        id=str(agent["id"]),
        hostname=str(agent.get("computerName") or agent["id"]),
        vendor=VENDOR,
        platform=agent.get("osType"),
        os_version=" ".join(str(p) for p in (os_name, revision) if p) or None,
        local_ip=local_ip,
        external_ip=agent.get("externalIp"),
        last_seen=_parse_time(agent.get("lastActiveDate")),
        containment=NETWORK_STATUS.get(str(agent.get("networkStatus")), Containment.NORMAL),
    )
