"""CrowdStrike Falcon as an EDR: host lookup, network containment, hash blocking."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx

from integrations.capabilities import ActionReceipt, Containment, Host
from integrations.crowdstrike.client import (
    VENDOR,
    call,
    fql_string,
    raise_body_errors,
    resources,
    trace_id,
)
from integrations.errors import (
    NotFoundError,
    RejectedError,
    VendorUnavailable,
)
from integrations.hunting import HostSighting, HuntResult, Indicator

DEVICE_QUERY = "/devices/queries/devices/v1"
DEVICE_ENTITIES = "/devices/entities/devices/v2"
DEVICE_ACTIONS = "/devices/entities/devices-actions/v2"
IOC_ENTITIES = "/iocs/entities/indicators/v1"
IOC_QUERY = "/iocs/queries/indicators/v1"
DEVICES_RAN_ON = "/indicators/queries/devices/v1"
_RAN_ON_PAGE = 100
_DETAILS_BATCH = 100

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

# Device `status` values, folded into the vendor-neutral containment states.
_CONTAINMENT: dict[str, Containment] = {
    "normal": Containment.NORMAL,
    "containment_pending": Containment.CONTAINMENT_PENDING,
    "contained": Containment.CONTAINED,
    "lift_containment_pending": Containment.RELEASE_PENDING,
}

# Hash IOCs are the only kind Falcon can prevent on; "prevent" blocks with a UI notice.
_IOC_ACTION = "prevent"
_BLOCKING_ACTIONS = frozenset({"prevent", "prevent_no_ui"})
_IOC_PLATFORMS = ["windows", "mac", "linux"]
_IOC_SOURCE = "stanch"


class CrowdStrikeEDR:
    """The EDR capability over the Falcon Hosts and IOC Management APIs.

    Args:
        client: from :func:`integrations.crowdstrike.client.connect` (base URL, OAuth2
            bearer auth and timeouts already set). The adapter never retries; the flow
            layer retries :class:`~integrations.errors.TransientError`.
    """

    vendor = VENDOR

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    # Hosts -----------------------------------------------------------------------------
    async def find_host(self, hostname: str) -> Host | None:
        """The host named ``hostname``, or ``None`` if Falcon knows no such host.

        FQL's exact string match is case-sensitive, so when the name as given matches
        nothing, its upper- and lower-case forms are tried too (Windows sensors usually
        report names in upper case, analysts type them in lower case). When a name
        matches several AIDs (a reinstalled sensor), the most recently seen wins.

        Vendor API: GET /devices/queries/devices/v1?filter=hostname:'<name>'&sort=last_seen.desc,
        then GET /devices/entities/devices/v2?ids=<aid>

        Raises:
            RejectedError: the hostname is empty.
            IntegrationError: the vendor call failed.
        """
        name = hostname.strip()
        if not name:
            raise RejectedError("hostname must not be empty", vendor=VENDOR)
        candidates = list(dict.fromkeys([name, name.upper(), name.lower()]))
        for candidate in candidates:
            response, body = await call(
                self._client,
                "GET",
                DEVICE_QUERY,
                params={
                    "filter": f"hostname:{fql_string(candidate)}",
                    "sort": "last_seen.desc",
                    "limit": 1,
                },
            )
            # A 200 can still carry a failure (a missing scope) in errors[].
            raise_body_errors(response, body)
            ids = [i for i in resources(body) if isinstance(i, str)]
            if ids:
                return await self.get_host(ids[0])
        return None

    async def get_host(self, host_id: str) -> Host:
        """The host with AID ``host_id``.

        Vendor API: GET /devices/entities/devices/v2?ids=<aid>

        Raises:
            NotFoundError: no host has that AID.
            IntegrationError: the vendor call failed.
        """
        if not host_id:
            raise NotFoundError("host id must not be empty", vendor=VENDOR)
        response, body = await call(self._client, "GET", DEVICE_ENTITIES, params={"ids": [host_id]})
        for device in resources(body):
            if isinstance(device, dict) and device.get("device_id") == host_id:
                return _host(device)
        # An unknown AID comes back as a per-id 404 in errors[] (or nothing at all).
        raise_body_errors(response, body)
        raise NotFoundError(f"no host with id {host_id}", vendor=VENDOR, status_code=404)

    async def contain_host(self, host_id: str, *, reason: str) -> ActionReceipt:
        """Cut the host off the network (except from the Falcon cloud).

        Containment is asynchronous: a ``changed`` receipt reports
        ``containment_pending`` until the sensor acknowledges. A host already contained
        (or on its way) is reported by the vendor as a per-id 409, which is success
        with ``changed=False``. Falcon takes no comment on this action, so ``reason``
        is kept on the receipt only.

        Vendor API: POST /devices/entities/devices-actions/v2?action_name=contain

        Raises:
            NotFoundError: no host has that AID.
            IntegrationError: the vendor refused or the call failed.
        """
        return await self._device_action(
            "contain_host", "contain", host_id, reason, Containment.CONTAINMENT_PENDING
        )

    async def release_host(self, host_id: str, *, reason: str) -> ActionReceipt:
        """Lift network containment.

        A host that is not contained is reported by the vendor as a per-id 409, which
        is success with ``changed=False``.

        Vendor API: POST /devices/entities/devices-actions/v2?action_name=lift_containment

        Raises:
            NotFoundError: no host has that AID.
            IntegrationError: the vendor refused or the call failed.
        """
        return await self._device_action(
            "release_host", "lift_containment", host_id, reason, Containment.RELEASE_PENDING
        )

    async def _device_action(
        self,
        verb: str,
        action_name: str,
        host_id: str,
        reason: str,
        pending: Containment,
    ) -> ActionReceipt:
        if not host_id:
            raise NotFoundError("host id must not be empty", vendor=VENDOR)
        # 409 is documented for this route; accept it at HTTP level too, then judge by body.
        response, body = await call(
            self._client,
            "POST",
            DEVICE_ACTIONS,
            ok=(202, 409),
            params={"action_name": action_name},
            json={"ids": [host_id]},
        )
        # Everything else in errors[] (404 unknown AID, 403 scope) is a real failure,
        # even though the response is a 202.
        raise_body_errors(response, body, ignore=(409,))
        detail = {"action_name": action_name, "reason": reason}
        already = response.status_code == 409 or _has_code(body, 409)
        if already:
            # Report where the host really is (contained, or still pending).
            host = await self.get_host(host_id)
            return ActionReceipt(
                verb=verb,
                target=host_id,
                vendor=VENDOR,
                changed=False,
                state=host.containment.value,
                vendor_request_id=trace_id(body),
                detail=detail,
            )
        acted = [r for r in resources(body) if isinstance(r, dict) and r.get("id") == host_id]
        if not acted:
            raise VendorUnavailable(
                f"{action_name} accepted but {host_id} is neither in resources nor errors",
                vendor=VENDOR,
                status_code=response.status_code,
            )
        return ActionReceipt(
            verb=verb,
            target=host_id,
            vendor=VENDOR,
            changed=True,
            state=pending.value,
            vendor_request_id=trace_id(body),
            detail=detail,
        )

    # Hashes ----------------------------------------------------------------------------
    async def block_hash(self, sha256: str, *, reason: str) -> ActionReceipt:
        """Prevent execution of the file with this SHA-256 on every host.

        Creates a custom IOC (type ``sha256``, action ``prevent``, all platforms,
        applied globally). Falcon rejects a second IOC for the same type and value;
        when creation fails, the hash is looked up, and an existing IOC counts as
        already blocked (``changed=False``).

        Vendor API: POST /iocs/entities/indicators/v1 (on failure
        GET /iocs/queries/indicators/v1?filter=type:'sha256'+value:'<hash>' and
        GET /iocs/entities/indicators/v1?ids=<ioc id>)

        Raises:
            RejectedError: ``sha256`` is not 64 hex digits, the vendor refused, or an
                existing IOC for the hash allows or only detects it.
            IntegrationError: the vendor call failed.
        """
        value = _check_sha256(sha256)
        indicator = {
            "type": "sha256",
            "value": value,
            "action": _IOC_ACTION,
            "platforms": _IOC_PLATFORMS,
            "severity": "high",
            "applied_globally": True,
            "description": reason,
            "source": _IOC_SOURCE,
        }
        try:
            response, body = await call(
                self._client,
                "POST",
                IOC_ENTITIES,
                ok=(201,),
                json={"comment": reason, "indicators": [indicator]},
            )
            raise_body_errors(response, body)
        except RejectedError as exc:
            # The duplicate error's text is undocumented, so look instead of parsing it.
            existing = await self._ioc_ids(value)
            if not existing:
                raise
            actions = await self._ioc_actions(existing)
            if not actions & _BLOCKING_ACTIONS:
                # An allow/detect IOC for this hash would make "already blocked" a lie.
                raise RejectedError(
                    f"an IOC for this hash exists with action {', '.join(sorted(actions))};"
                    " not overriding it",
                    vendor=VENDOR,
                    vendor_code=exc.vendor_code,
                ) from exc
            return ActionReceipt(
                verb="block_hash",
                target=value,
                vendor=VENDOR,
                changed=False,
                state="blocked",
                vendor_request_id=existing[0],
                detail={"reason": reason, "vendor_error": str(exc.args[0])},
            )
        created = [r for r in resources(body) if isinstance(r, dict)]
        ioc_id = created[0].get("id") if created else None
        return ActionReceipt(
            verb="block_hash",
            target=value,
            vendor=VENDOR,
            changed=True,
            state="blocked",
            vendor_request_id=str(ioc_id) if ioc_id else trace_id(body),
            detail={"reason": reason, "action": _IOC_ACTION},
        )

    async def unblock_hash(self, sha256: str) -> ActionReceipt:
        """Remove every custom IOC for this SHA-256.

        A hash with no IOC is already unblocked (``changed=False``); so is one whose
        IOC disappears between the lookup and the delete (a per-id 404).

        Vendor API: GET /iocs/queries/indicators/v1?filter=type:'sha256'+value:'<hash>',
        then DELETE /iocs/entities/indicators/v1?ids=<ioc id>

        Raises:
            RejectedError: ``sha256`` is not 64 hex digits.
            IntegrationError: the vendor call failed.
        """
        value = _check_sha256(sha256)
        ids = await self._ioc_ids(value)
        if not ids:
            return ActionReceipt(
                verb="unblock_hash", target=value, vendor=VENDOR, changed=False, state="unblocked"
            )
        try:
            response, body = await call(
                self._client,
                "DELETE",
                IOC_ENTITIES,
                params={"ids": ids, "comment": "stanch: unblock_hash"},
            )
        except NotFoundError:
            return ActionReceipt(
                verb="unblock_hash", target=value, vendor=VENDOR, changed=False, state="unblocked"
            )
        raise_body_errors(response, body, ignore=(404,))
        deleted = [i for i in resources(body) if isinstance(i, str)]
        return ActionReceipt(
            verb="unblock_hash",
            target=value,
            vendor=VENDOR,
            changed=bool(deleted),
            state="unblocked",
            vendor_request_id=trace_id(body),
            detail={"ioc_ids": ",".join(ids)},
        )

    # Hunting ---------------------------------------------------------------------------
    async def hunt(self, indicator: Indicator, *, since: datetime) -> HuntResult:
        """The hosts on which Falcon observed ``indicator``.

        DevicesRanOn answers device ids only, with no time window and no per-host
        times: ``since`` cannot narrow it, and the sightings carry no first/last seen
        (the result's note says so). Details come from the device entities, 100 ids a
        call.

        Vendor API: GET /indicators/queries/devices/v1?type=<kind>&value=<value>
        (offset-paginated), then GET /devices/entities/devices/v2?ids=<aid>...

        Raises:
            IntegrationError: a vendor call failed.
        """
        aids: list[str] = []
        offset = 0
        while True:
            response, body = await call(
                self._client,
                "GET",
                DEVICES_RAN_ON,
                params={
                    "type": indicator.kind.value,
                    "value": indicator.value,
                    "limit": _RAN_ON_PAGE,
                    "offset": offset,
                },
            )
            raise_body_errors(response, body)
            page = [i for i in resources(body) if isinstance(i, str)]
            aids.extend(i for i in page if i not in aids)
            total = _total(body)
            offset += len(page)
            if not page or total is None or offset >= total:
                break
        hosts: list[HostSighting] = []
        for start in range(0, len(aids), _DETAILS_BATCH):
            batch = aids[start : start + _DETAILS_BATCH]
            response, body = await call(self._client, "GET", DEVICE_ENTITIES, params={"ids": batch})
            # A device removed since it ran the indicator is a per-id 404: keep the id.
            raise_body_errors(response, body, ignore=(404,))
            names = {
                str(d.get("device_id")): str(d.get("hostname") or "")
                for d in resources(body)
                if isinstance(d, dict)
            }
            hosts.extend(HostSighting(host_id=a, hostname=names.get(a) or a) for a in batch)
        return HuntResult(
            indicator=indicator,
            vendor=VENDOR,
            since=since,
            hosts=hosts,
            note="Falcon's DevicesRanOn reports no time window or per-host times",
        )

    async def _ioc_actions(self, ids: list[str]) -> set[str]:
        """Vendor API: GET /iocs/entities/indicators/v1?ids=<ioc id>."""
        response, body = await call(self._client, "GET", IOC_ENTITIES, params={"ids": ids})
        raise_body_errors(response, body, ignore=(404,))
        return {str(r.get("action")) for r in resources(body) if isinstance(r, dict)}

    async def _ioc_ids(self, sha256: str) -> list[str]:
        """Vendor API: GET /iocs/queries/indicators/v1?filter=type:'sha256'+value:'<hash>'."""
        response, body = await call(
            self._client,
            "GET",
            IOC_QUERY,
            params={"filter": f"type:'sha256'+value:{fql_string(sha256)}", "limit": 100},
        )
        raise_body_errors(response, body)
        return [i for i in resources(body) if isinstance(i, str)]


def _check_sha256(sha256: str) -> str:
    value = sha256.strip()
    if not _SHA256.fullmatch(value):
        raise RejectedError("sha256 must be 64 hexadecimal digits", vendor=VENDOR)
    # Falcon stores hash IOC values in lower case; comparing them needs one form.
    return value.lower()


def _total(body: dict[str, Any]) -> int | None:
    meta = body.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    total = pagination.get("total") if isinstance(pagination, dict) else None
    return total if isinstance(total, int) else None


def _has_code(body: dict[str, Any], code: int) -> bool:
    errors = body.get("errors")
    if not isinstance(errors, list):
        return False
    return any(isinstance(e, dict) and str(e.get("code")) == str(code) for e in errors)


def _host(device: dict[str, Any]) -> Host:
    status = str(device.get("status") or "normal")
    # An unknown status is not evidence of containment; report the host as normal.
    containment = _CONTAINMENT.get(status, Containment.NORMAL)
    return Host(
        id=str(device["device_id"]),
        hostname=str(device.get("hostname") or ""),
        vendor=VENDOR,
        platform=_opt(device.get("platform_name")),
        os_version=_opt(device.get("os_version")),
        local_ip=_opt(device.get("local_ip")),
        external_ip=_opt(device.get("external_ip")),
        last_seen=_when(device.get("last_seen")),
        containment=containment,
    )


def _opt(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
